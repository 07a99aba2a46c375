"""Noise sources for the samplers: plain Gaussian draws, or draws without their channel mean.

A sampler never calls ``torch.randn`` itself: it asks its noise source, so what the start noise
and the per-step noise look like is chosen in one place (k-diffusion's ``noise_sampler``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

__all__ = ["GaussianNoise", "MeanFreeNoise", "zero_mean"]


def zero_mean(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` (B, C, H, W) minus each sample's per-channel spatial mean.

    Why: the SR3 UNet normalises its features with GroupNorm, which removes their spatial mean,
    so the network barely sees the mean of x_t. At the top of the chain x_t is almost all noise,
    and the noise's per-channel mean (std 1/sqrt(H*W), e.g. 0.016 at 64x64) cannot be told apart
    from image content: the predicted x0 = (x_t - sqrt(1 - g^2) eps) / g turns it into a colour
    offset of about mean / g (g = 0.0067 at the top of the released schedule: an offset larger
    than the whole [-1, 1] range). Deterministic DDIM keeps that offset to the end; ancestral
    sampling washes it out with fresh noise. Drawing the noise without its mean removes the cast
    and changes one of H*W degrees of freedom per channel.
    """
    return noise - noise.mean(dim=(-2, -1), keepdim=True)


class GaussianNoise:
    """Standard normal draws from ``generator`` (None: the global RNG).

    ``noise(shape, device=..., dtype=...)`` or ``noise.like(x)``. One draw is exactly
    ``torch.randn(shape, generator=generator, ...)``, which keeps the ancestral sampler bit-exact
    with the reference for a seeded generator.
    """

    mean_free = False

    def __init__(self, generator: Optional[torch.Generator] = None):
        self.generator = generator

    def __call__(self, shape: Sequence[int], *, device: "torch.device | str" = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=device, dtype=dtype)

    def like(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.shape, device=x.device, dtype=x.dtype)


class MeanFreeNoise(GaussianNoise):
    """The same draws as :class:`GaussianNoise`, passed through :func:`zero_mean`."""

    mean_free = True

    def __call__(self, shape: Sequence[int], *, device: "torch.device | str" = "cpu",
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return zero_mean(super().__call__(shape, device=device, dtype=dtype))
