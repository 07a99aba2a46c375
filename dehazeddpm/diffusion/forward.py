"""The forward process and the conversions between x_t, eps and x0: each equation written once.

Everything is in diffusion space, [-1, 1]. With gamma = sqrt(alpha_bar) (SR3's noise level,
what the denoiser sees) and sigma = sqrt(1 - alpha_bar):

- forward process (DDPM eq. 4; SR3 eq. 3): x_t = gamma * x0 + sigma * eps  -> :func:`q_sample`
- x0 from eps (DDPM eq. 15 rearranged):   x0 = x_t / gamma - (sigma / gamma) * eps  -> :func:`x0_from_eps`
- eps from x0 (its inverse):              eps = (x_t - gamma * x0) / sigma  -> :func:`eps_from_x0`

Samplers, the training loss and the schedule's step-indexed helper all call these, so the
paper-to-code map (docs/paper_map.md) has one function per equation.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .schedule import NoiseSchedule

__all__ = ["eps_from_x0", "predict_x0", "q_sample", "x0_from_eps"]

Coefficient = Union[float, torch.Tensor]


def _per_sample(c: Coefficient, like: torch.Tensor) -> Coefficient:
    """A (B,) coefficient shaped (B, 1, 1, 1) to broadcast against ``like``; scalars unchanged."""
    if isinstance(c, torch.Tensor) and c.dim() > 0:
        return c.to(like.device).reshape(-1, *([1] * (like.dim() - 1)))
    return c


def q_sample(schedule_or_gamma: "NoiseSchedule | torch.Tensor | float", x0: torch.Tensor,
             noise: torch.Tensor, i: Optional[int] = None) -> torch.Tensor:
    """Noise a clean x0 ([-1, 1]) to level gamma: gamma * x0 + sqrt(1 - gamma^2) * noise.

    Pass either a schedule and a step index ``i``, or gamma directly (float, or (B,) tensor).
    """
    if isinstance(schedule_or_gamma, NoiseSchedule):
        if i is None:
            raise ValueError("give the step index i with a schedule")
        gamma = schedule_or_gamma.noise_levels[i].to(x0.device)
    else:
        gamma = torch.as_tensor(schedule_or_gamma, dtype=x0.dtype, device=x0.device)
    gamma = _per_sample(gamma, x0)
    return gamma * x0 + (1 - gamma ** 2).sqrt() * noise


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, recip_gamma: Coefficient,
                sigma_over_gamma: Coefficient) -> torch.Tensor:
    """x0 = x_t / gamma - (sigma / gamma) * eps, from the two coefficients (scalars or (B,)).

    Written with the reciprocals, as the reference's ``predict_start_from_noise`` does with its
    ``sqrt_recip_alphas_cumprod`` / ``sqrt_recipm1_alphas_cumprod`` buffers, so the ancestral path
    stays bit-exact to it."""
    return _per_sample(recip_gamma, x_t) * x_t - _per_sample(sigma_over_gamma, x_t) * eps


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, gamma: Coefficient, sigma: Coefficient) -> torch.Tensor:
    """eps = (x_t - gamma * x0) / sigma: the noise that x_t holds given x0 (e.g. after clipping x0)."""
    return (x_t - _per_sample(gamma, x_t) * x0) / _per_sample(sigma, x_t)


def predict_x0(schedule: NoiseSchedule, x: torch.Tensor, i: "int | torch.Tensor", eps: torch.Tensor) -> torch.Tensor:
    """:func:`x0_from_eps` at step index ``i`` of ``schedule`` (an int, or a (B,) tensor of steps)."""
    if isinstance(i, int):
        # 0-dim CPU tensors broadcast against tensors on any device: no per-step copy of the buffers
        return x0_from_eps(x, eps, schedule.sqrt_recip_alphas_cumprod[i], schedule.sqrt_recipm1_alphas_cumprod[i])
    idx = i.cpu()
    return x0_from_eps(x, eps, schedule.sqrt_recip_alphas_cumprod[idx], schedule.sqrt_recipm1_alphas_cumprod[idx])
