"""Noise-level embedding of the SR3 denoiser.

SR3 conditions the UNet on the *continuous* noise level gamma = sqrt(alpha_bar) in (0, 1]
rather than on an integer timestep. Because the network only ever sees gamma, any subsequence
of the training grid is a valid sampling schedule: step skipping needs no retraining.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def _as_batch_vector(noise_level: torch.Tensor) -> torch.Tensor:
    """Accept a scalar, (B,) or (B, 1) noise level and return it as (B,)."""
    if noise_level.dim() == 0:
        return noise_level.reshape(1)
    if noise_level.dim() == 2 and noise_level.shape[1] == 1:
        return noise_level[:, 0]
    if noise_level.dim() != 1:
        raise ValueError(f"noise_level must have shape (B,) or (B, 1), got {tuple(noise_level.shape)}")
    return noise_level


class NoiseLevelEncoding(nn.Module):
    """Sinusoidal features of the noise level (reference name: ``PositionalEncoding``).

    Input: gamma of shape (B,) or (B, 1). Output: (B, dim), first half sines, second half cosines,
    with frequencies 1e4 ** (-k / (dim // 2)) for k = 0 .. dim // 2 - 1 (as in WaveGrad).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, noise_level: torch.Tensor) -> torch.Tensor:
        gamma = _as_batch_vector(noise_level)
        half = self.dim // 2
        exponents = torch.arange(half, dtype=gamma.dtype, device=gamma.device) / half
        angles = gamma[:, None] * torch.exp(-math.log(1e4) * exponents[None, :])
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class FeatureWiseAffine(nn.Module):
    """Inject the noise embedding into a feature map: ``x + W e`` (or ``(1 + g) x + b``).

    ``noise_func`` keeps the reference parameter name (``noise_func.0.weight``) so released
    checkpoints load as they are.
    """

    def __init__(self, in_channels: int, out_channels: int, use_affine_level: bool = False):
        super().__init__()
        self.use_affine_level = use_affine_level
        self.noise_func = nn.Sequential(nn.Linear(in_channels, out_channels * (1 + use_affine_level)))

    def forward(self, x: torch.Tensor, noise_embed: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W); noise_embed: (B, E), or (1, E) for one noise level shared by the batch."""
        params = self.noise_func(noise_embed).reshape(noise_embed.shape[0], -1, 1, 1)
        if self.use_affine_level:
            gamma, beta = params.chunk(2, dim=1)
            return (1 + gamma) * x + beta
        return x + params


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution (same parameters and state-dict keys as ``nn.Conv2d(c_in, c_out, 1)``)
    computed in fp32 on a CPU as one matrix product per image. oneDNN picks its 1x1 kernel by
    batch size, so a batch of tiles or samples would round differently from each alone; the
    product gives every image of a batch bit for bit the numbers it gets by itself. Under autocast
    and on GPUs it is the ordinary convolution (oneDNN's is about 20% faster there)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu"):
            return super().forward(x)  # reduced precision is not compared bit for bit: the faster kernel
        n, _, h, w = x.shape
        y = torch.matmul(self.weight.flatten(1), x.flatten(2)).view(n, -1, h, w)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)
