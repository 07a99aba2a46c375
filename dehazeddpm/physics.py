"""The atmospheric scattering model ``I = J * T + A * (1 - T)`` and what follows from it.

Layer: foundation (torch only). Stage 1's re-hazed output, the working-size detail transfer, the
synthetic haze and the transmission fusion all use these functions, so the formula has one home.

All tensors are image space, [0, 1]: J (B, 3, H, W) the clear scene, T (B, 1, H, W) the
transmission (1 = no haze), A (B, 3, 1, 1) or any broadcastable airlight.
"""
from __future__ import annotations

import torch

__all__ = ["FUSION_T_HIGH", "FUSION_T_LOW", "fuse_transmission", "invert", "rehaze", "scene_detail", "smoothstep",
           "transmission"]

# fusion="transmission": the weight of J rises smoothly from 0 at T <= low to 1 at T >= high.
FUSION_T_LOW = 0.5
FUSION_T_HIGH = 0.9


def rehaze(J: torch.Tensor, T: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The hazy image the model predicts: ``T * J + (1 - T) * A`` (no clamping).

    Written in the reference's operand order, so stage 1's ``I`` stays bit-exact.
    """
    return T * J + (1 - T) * A


def invert(I: torch.Tensor, T: torch.Tensor, A: torch.Tensor, min_transmission: float = 0.05) -> torch.Tensor:
    """Solve the model for the scene: ``(I - A (1 - T)) / T``, T floored at ``min_transmission``
    (dense haze divides by almost nothing), clamped to [0, 1]."""
    return ((I - A * (1 - T)) / T.clamp(min=min_transmission)).clamp(0, 1)


def scene_detail(hazy_detail: torch.Tensor, T: torch.Tensor, min_transmission: float) -> torch.Tensor:
    """The scene's fine detail from the hazy image's: ``hazy_detail / T``, T floored at
    ``min_transmission``. Where T and A vary slowly, ``I = J T + A (1 - T)`` makes I's fine detail
    T times J's. hazy_detail: (B, 3, H, W), a high-pass of I (signed); T: (B, 1, H, W)."""
    return hazy_detail / T.clamp(min=min_transmission)


def transmission(depth: torch.Tensor, beta: float) -> torch.Tensor:
    """Beer-Lambert transmission ``exp(-beta * depth)`` for a scattering coefficient ``beta`` >= 0."""
    return torch.exp(-beta * depth)


def smoothstep(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """0 for x <= low, 1 for x >= high, 3u^2 - 2u^3 in between (C1-smooth, no banding)."""
    u = ((x - low) / (high - low)).clamp(0, 1)
    return u * u * (3 - 2 * u)


def fuse_transmission(J: torch.Tensor, T: torch.Tensor, diffusion: torch.Tensor,
                      low: float = FUSION_T_LOW, high: float = FUSION_T_HIGH) -> torch.Tensor:
    """``w * J + (1 - w) * diffusion`` with ``w = smoothstep(T)``, all in [0, 1].

    Thin haze (high T) keeps stage 1's faithful J; thick haze (low T), where J has little signal,
    takes the diffusion sample. J, diffusion: (B, 3, H, W); T: (B, 1, H, W).
    """
    w = smoothstep(T, low, high)
    return w * J + (1 - w) * diffusion
