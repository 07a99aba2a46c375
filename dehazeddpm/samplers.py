"""Samplers for the conditional SR3 denoiser: plain functions over (model, x, schedule).

All tensors here live in diffusion space, [-1, 1]: ``x`` (B, 3, H, W) is the noisy image and
``condition`` (B, C, H, W) is [J, T] mapped to [-1, 1]. The model is called as
``model(torch.cat([condition, x], 1), noise_level)`` with noise_level = sqrt(alpha_bar), shape (B,).

Every sampler takes ``callback(step, t, x_t, x0)``, called once per step with the step number
(0 = first), the original-grid timestep, the input x_t of that step and the predicted clean
image x0 (both [-1, 1]); return value ignored. That is how notebooks draw the trajectory.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple, Union

import torch
from tqdm.auto import tqdm

from .schedule import NoiseSchedule

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]
SAMPLERS = ("ddpm", "ddim")


def _at(buf: torch.Tensor, i: "int | torch.Tensor", x: torch.Tensor) -> torch.Tensor:
    """Schedule value(s) at step index i, shaped to broadcast against x."""
    if isinstance(i, int):
        # A 0-dim CPU tensor broadcasts against tensors on any device: no per-step copy of the
        # whole buffer onto the accelerator inside the sampling loop.
        return buf[i]
    return buf[i.cpu()].to(x.device).reshape(-1, *([1] * (x.dim() - 1)))


def _noise_level(schedule: NoiseSchedule, i: "int | torch.Tensor", x: torch.Tensor) -> torch.Tensor:
    if isinstance(i, int):
        return schedule.noise_levels[i].to(x.device).expand(x.shape[0])
    return schedule.noise_levels[i.cpu()].to(x.device)


def predict_noise(model: torch.nn.Module, x: torch.Tensor, noise_level: torch.Tensor,
                  condition: Optional[torch.Tensor]) -> torch.Tensor:
    """eps = model(cat([condition, x]), gamma), returned in float32 (autocast may run the model in fp16)."""
    inp = x if condition is None else torch.cat([condition.to(x.dtype), x], dim=1)
    return model(inp, noise_level).float()


def predict_x0(schedule: NoiseSchedule, x: torch.Tensor, i: "int | torch.Tensor", eps: torch.Tensor) -> torch.Tensor:
    """x0 = x_t / sqrt(alpha_bar) - sqrt(1 / alpha_bar - 1) * eps (DDPM eq. 15 rearranged)."""
    return _at(schedule.sqrt_recip_alphas_cumprod, i, x) * x - _at(schedule.sqrt_recipm1_alphas_cumprod, i, x) * eps


def p_mean_variance(model: torch.nn.Module, schedule: NoiseSchedule, x_t: torch.Tensor,
                    t: "int | torch.Tensor", condition: Optional[torch.Tensor] = None,
                    clip_denoised: bool = True, return_x0: bool = False):
    """Mean and log-variance of p(x_{t-1} | x_t): the posterior q(x_{t-1} | x_t, x0_hat).

    ``t`` is a step index of ``schedule`` (an int, or a (B,) tensor for per-sample steps).
    Returns ``(mean, log_var)``; ``log_var`` is a 0-dim tensor for an int t, else (B, 1, 1, 1).
    With ``return_x0`` also returns the (clipped) predicted x0.
    """
    eps = predict_noise(model, x_t, _noise_level(schedule, t, x_t), condition)
    x0 = predict_x0(schedule, x_t, t, eps)
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
    mean = _at(schedule.posterior_mean_coef1, t, x_t) * x0 + _at(schedule.posterior_mean_coef2, t, x_t) * x_t
    log_var = _at(schedule.posterior_log_variance_clipped, t, x_t)
    return (mean, log_var, x0) if return_x0 else (mean, log_var)


def zero_mean(noise: torch.Tensor) -> torch.Tensor:
    """``noise`` (B, C, H, W) minus each sample's per-channel spatial mean.

    Why: the SR3 UNet normalises its features with GroupNorm, which removes their spatial mean,
    so the network barely sees the mean of x_t. At the top of the chain x_t is almost all noise,
    and the noise's per-channel mean (std 1/sqrt(H*W), e.g. 0.016 at 64x64) cannot be told apart
    from image content: the predicted x0 = (x_t - sqrt(1 - g^2) eps) / g turns it into a colour
    offset of about mean / g (g = 0.0067 at the top of the released schedule: an offset larger
    than the whole [-1, 1] range). Deterministic DDIM keeps that offset to the end; ancestral
    sampling washes it out with fresh noise. Drawing the start noise without its mean removes
    the cast and changes one of H*W degrees of freedom per channel.
    """
    return noise - noise.mean(dim=(-2, -1), keepdim=True)


def _iterate(n: int, progress: bool, desc: str):
    return tqdm(reversed(range(n)), total=n, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def ddpm_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule,
                condition: Optional[torch.Tensor] = None, *, generator: Optional[torch.Generator] = None,
                callback: Optional[Callback] = None, clip_denoised: bool = True,
                progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (the reference ``p_sample_loop``), from x = x_T down to x_0.

    On the full schedule and with the same random draws this reproduces the reference bit for
    bit: one ``randn_like(x)`` per step for every step but the last.
    """
    for step, i in enumerate(_iterate(len(schedule), progress, "ddpm")):
        mean, log_var, x0 = p_mean_variance(model, schedule, x, i, condition, clip_denoised, return_x0=True)
        if callback is not None:
            callback(step, int(schedule.timesteps[i]), x, x0)
        if i > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = mean + noise * (0.5 * log_var).exp()
        else:
            x = mean
    return x


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule,
                condition: Optional[torch.Tensor] = None, *, eta: float = 0.0,
                generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None,
                clip_denoised: bool = True, progress: bool = False,
                zero_mean_noise: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over every step of ``schedule`` (respace it for fewer steps).

    ``eta = 0`` is deterministic; ``eta = 1`` matches the ancestral sampler's variance.
    After clipping x0 the noise estimate is recomputed from it, so x stays consistent with x0.
    ``zero_mean_noise``: the noise added when ``eta > 0`` goes through :func:`zero_mean`.
    """
    for step, i in enumerate(_iterate(len(schedule), progress, "ddim")):
        ab = _at(schedule.alphas_cumprod, i, x)
        ab_prev = _at(schedule.alphas_cumprod_prev, i, x)
        eps = predict_noise(model, x, _noise_level(schedule, i, x), condition)
        x0 = predict_x0(schedule, x, i, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        if callback is not None:
            callback(step, int(schedule.timesteps[i]), x, x0)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and i > 0:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + sigma * (zero_mean(z) if zero_mean_noise else z)
    return x


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
    if gamma.dim() > 0:
        gamma = gamma.reshape(-1, *([1] * (x0.dim() - 1)))
    return gamma * x0 + (1 - gamma ** 2).sqrt() * noise


@torch.no_grad()
def sample(model: torch.nn.Module, condition: torch.Tensor, schedule: NoiseSchedule, sampler: str = "ddpm",
           steps: Optional[int] = None, eta: float = 0.0, generator: Optional[torch.Generator] = None,
           callback: Optional[Callback] = None, *, x_T: Optional[torch.Tensor] = None,
           clip_denoised: bool = True, progress: bool = False, zero_mean_noise: bool = False) -> torch.Tensor:
    """Draw x0 ([-1, 1], (B, 3, H, W)) given the condition ([-1, 1], (B, C, H, W)).

    ``steps=None`` uses every step of ``schedule``; otherwise it is respaced to ``steps`` evenly
    spaced noise levels (valid without retraining: SR3 sees continuous noise levels).
    The starting noise is ``randn(B, 3, H, W)`` drawn from ``generator`` (or the global RNG),
    unless ``x_T`` is given. ``sampler="ddpm"`` with ``steps=None`` is the reference test path.
    ``zero_mean_noise`` (DDIM only) draws the start noise, and the noise of ``eta > 0``, through
    :func:`zero_mean`: what lets deterministic DDIM start from noise without a colour cast.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")
    if zero_mean_noise and sampler == "ddpm":
        raise ValueError("zero_mean_noise is a DDIM option; the ancestral sampler stays the reference")
    sched = schedule if steps is None else schedule.respace(int(steps))
    if x_T is None:
        b, _, h, w = condition.shape
        x_T = torch.randn((b, 3, h, w), generator=generator, device=condition.device, dtype=torch.float32)
        if zero_mean_noise:
            x_T = zero_mean(x_T)
    if sampler == "ddpm":
        return ddpm_sample(model, x_T, sched, condition, generator=generator, callback=callback,
                           clip_denoised=clip_denoised, progress=progress)
    return ddim_sample(model, x_T, sched, condition, eta=eta, generator=generator, callback=callback,
                       clip_denoised=clip_denoised, progress=progress, zero_mean_noise=zero_mean_noise)
