"""Thin wrappers that give every denoiser the samplers' calling convention.

Samplers call ``model(x_t, noise_level) -> eps``: x_t (B, 3, H, W) in diffusion space [-1, 1],
noise_level gamma = sqrt(alpha_bar) of shape (B,), eps in float32. The SR3 UNet instead takes
``cat([condition, x_t], 1)``; :class:`ConditionedDenoiser` binds the condition once, so no sampler
threads it through its signature (k-diffusion's ``external.py`` idea).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["ConditionedDenoiser", "CountingDenoiser"]


class ConditionedDenoiser(nn.Module):
    """``model(cat([condition, x_t], 1), gamma)`` as ``(x_t, gamma) -> eps`` (float32).

    condition: (B, C, H, W) in [-1, 1] ([J, T] for the released weights), or None for an
    unconditional model. ``model`` may be the UNet or anything with its signature (a tiled or
    reduced-precision wrapper).
    """

    def __init__(self, model: nn.Module, condition: "torch.Tensor | None"):
        super().__init__()
        self.model = model
        self.condition = condition

    def forward(self, x_t: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        inp = x_t if self.condition is None else torch.cat([self.condition.to(x_t.dtype), x_t], dim=1)
        return self.model(inp, noise_level).float()


class CountingDenoiser(nn.Module):
    """Wrap a denoiser and count its evaluations (``.calls``); same call signature and ``config``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls = 0

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, noise_level)
