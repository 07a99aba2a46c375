"""Samplers for the conditional SR3 denoiser: plain functions over (model, x, schedule).

All tensors here live in diffusion space, [-1, 1]: ``x`` (B, 3, H, W) is the noisy image and the
condition (B, C, H, W) is [J, T] mapped to [-1, 1]. A sampler function calls
``model(x_t, noise_level) -> eps`` with noise_level = sqrt(alpha_bar), shape (B,): the condition
is bound beforehand by :class:`~dehazeddpm.diffusion.wrappers.ConditionedDenoiser`. Randomness
comes from a noise source (:mod:`dehazeddpm.diffusion.noise`), never from ``torch.randn`` here.

Every sampler takes ``callback(step, t, x_t, x0)``, called once per step with the step number
(0 = first), the original-grid timestep, the input x_t of that step and the predicted clean image
x0 (both [-1, 1]); its return value is ignored. That is how notebooks draw the trajectory.

:func:`sample` is the one entry point the pipeline and training use: it respaces the schedule,
optionally truncates it for a start from a noised image, draws the start noise and dispatches.
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Dict, FrozenSet, Optional, Tuple

import torch
from tqdm.auto import tqdm

from .forward import eps_from_x0, predict_x0, q_sample, x0_from_eps
from .noise import GaussianNoise, MeanFreeNoise
from .schedule import NoiseSchedule
from .wrappers import ConditionedDenoiser

__all__ = ["ETA_SAMPLERS", "SAMPLERS", "Callback", "ddim_sample", "ddpm_sample", "dpmpp_2m_sample",
           "dpmpp_2m_sde_sample", "p_mean_variance", "predict_noise", "predict_x0", "q_sample", "sample",
           "sampler_parameters", "sampling_schedule"]

Callback = Callable[[int, int, torch.Tensor, torch.Tensor], None]


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
                  condition: Optional[torch.Tensor] = None) -> torch.Tensor:
    """eps = model(cat([condition, x]), gamma) in float32; ``condition=None`` calls a model whose
    condition is already bound (or that has none) as ``model(x, gamma)``."""
    if condition is None:
        return model(x, noise_level).float()
    return ConditionedDenoiser(model, condition)(x, noise_level)


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


def _iterate(n: int, progress: bool, desc: str):
    return tqdm(reversed(range(n)), total=n, desc=desc, disable=not progress, leave=False)


@torch.no_grad()
def ddpm_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *,
                noise: Optional[GaussianNoise] = None, callback: Optional[Callback] = None,
                clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """Ancestral sampling (the reference ``p_sample_loop``), from x = x_T down to x_0.

    On the full schedule and with the same random draws this reproduces the reference bit for
    bit: one draw of ``noise`` per step for every step but the last.
    """
    noise = noise if noise is not None else GaussianNoise()
    for step, i in enumerate(_iterate(len(schedule), progress, "ddpm")):
        mean, log_var, x0 = p_mean_variance(model, schedule, x, i, None, clip_denoised, return_x0=True)
        if callback is not None:
            callback(step, int(schedule.timesteps[i]), x, x0)
        x = mean + noise.like(x) * (0.5 * log_var).exp() if i > 0 else mean
    return x


@torch.no_grad()
def ddim_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *, eta: float = 0.0,
                noise: Optional[GaussianNoise] = None, callback: Optional[Callback] = None,
                clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) over every step of ``schedule`` (respace it for fewer steps).

    ``eta = 0`` is deterministic; ``eta = 1`` matches the ancestral sampler's variance, with the
    fresh noise drawn from ``noise``. After clipping x0 the noise estimate is recomputed from it,
    so x stays consistent with x0.
    """
    noise = noise if noise is not None else GaussianNoise()
    for step, i in enumerate(_iterate(len(schedule), progress, "ddim")):
        ab = _at(schedule.alphas_cumprod, i, x)
        ab_prev = _at(schedule.alphas_cumprod_prev, i, x)
        eps = predict_noise(model, x, _noise_level(schedule, i, x))
        x0 = predict_x0(schedule, x, i, eps)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            eps = eps_from_x0(x, x0, ab.sqrt(), (1 - ab).sqrt())
        if callback is not None:
            callback(step, int(schedule.timesteps[i]), x, x0)
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if eta > 0 and i > 0:
            x = x + sigma * noise.like(x)
    return x


def _alpha_sigma(schedule: NoiseSchedule, i: int) -> Tuple[float, float]:
    """(alpha, sigma) = (sqrt(alpha_bar), sqrt(1 - alpha_bar)) before step i, in float64; i = -1
    is the clean image at the end of the chain (alpha 1, sigma 0)."""
    ab = 1.0 if i < 0 else float(schedule.alphas_cumprod[i].double())
    return math.sqrt(ab), math.sqrt(max(1.0 - ab, 0.0))


def _dpm_solver_pp(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *, stochastic: bool,
                   noise: Optional[GaussianNoise], callback: Optional[Callback], clip_denoised: bool,
                   progress: bool) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), or its SDE variant, in lambda = log(alpha / sigma).

    Each step predicts x0 = (x - sigma eps) / alpha and moves to the next noise level with the
    exponential-integrator update; from the second step on, x0 is extrapolated from the last two
    predictions (the multistep correction, midpoint form). The last two steps are first order
    (diffusers' ``lower_order_final``): the step into the least noisy level is a jump of several
    units of lambda, where extrapolating from the much shorter step before it is unstable, and
    the step from there into the clean image takes x0 itself.
    """
    noise = noise if noise is not None else GaussianNoise()
    prev_x0: Optional[torch.Tensor] = None
    prev_h = 0.0
    desc = "dpm++2m-sde" if stochastic else "dpm++2m"
    for step, i in enumerate(_iterate(len(schedule), progress, desc)):
        alpha, sigma = _alpha_sigma(schedule, i)
        eps = predict_noise(model, x, _noise_level(schedule, i, x))
        x0 = x0_from_eps(x, eps, 1 / alpha, sigma / alpha)
        if clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        if callback is not None:
            callback(step, int(schedule.timesteps[i]), x, x0)
        if i == 0:
            return x0
        alpha_n, sigma_n = _alpha_sigma(schedule, i - 1)
        h = math.log(alpha_n / sigma_n) - math.log(alpha / sigma)
        # midpoint correction: x0 + (x0 - x0_prev) / (2 r), with r = h_prev / h the step ratio
        d = x0 if prev_x0 is None or i == 1 else x0 + (x0 - prev_x0) * (h / (2 * prev_h))
        if stochastic:
            x = (sigma_n / sigma * math.exp(-h)) * x + alpha_n * (-math.expm1(-2 * h)) * d
            x = x + sigma_n * math.sqrt(-math.expm1(-2 * h)) * noise.like(x)
        else:
            x = (sigma_n / sigma) * x + alpha_n * (-math.expm1(-h)) * d
        prev_x0, prev_h = x0, h
    return x


@torch.no_grad()
def dpmpp_2m_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *,
                    noise: Optional[GaussianNoise] = None, callback: Optional[Callback] = None,
                    clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """DPM-Solver++(2M): a deterministic second-order multistep solver of the probability-flow ODE,
    over every step of ``schedule`` (respace it for fewer). One UNet evaluation per step."""
    return _dpm_solver_pp(model, x, schedule, stochastic=False, noise=noise, callback=callback,
                          clip_denoised=clip_denoised, progress=progress)


@torch.no_grad()
def dpmpp_2m_sde_sample(model: torch.nn.Module, x: torch.Tensor, schedule: NoiseSchedule, *,
                        noise: Optional[GaussianNoise] = None, callback: Optional[Callback] = None,
                        clip_denoised: bool = True, progress: bool = False) -> torch.Tensor:
    """SDE-DPM-Solver++(2M): the same multistep data prediction with fresh noise at every step
    (the reverse SDE); like DDIM's eta 1 it forgets more of the denoiser's errors."""
    return _dpm_solver_pp(model, x, schedule, stochastic=True, noise=noise, callback=callback,
                          clip_denoised=clip_denoised, progress=progress)


def sampling_schedule(schedule: NoiseSchedule, steps: Optional[int] = None,
                      start_strength: float = 1.0) -> NoiseSchedule:
    """The steps a sampling run visits: ``schedule`` respaced to ``min(steps, N)`` (None: all N),
    then truncated to the lowest ``start_strength`` of the chain. :func:`sample` runs exactly
    these; callers use it to know the length of a run beforehand.

    A chain too short to honour the start (its kept steps would all sit at the clean end, or the
    rounding would keep only a step above the start) gets one step exactly at the start's noise
    level instead, never from pure noise nor from J itself. Otherwise the run begins at the
    chain's step at or below the start, as diffusers' img2img ``strength`` does: a 7-step chain
    asked 0.3 begins at t = 333 of 2000 (0.17); ``DehazeResult.started_at`` reports it.
    """
    if not 0 < start_strength <= 1:
        raise ValueError(f"start_strength must be in (0, 1], got {start_strength}")
    sched = schedule if steps is None else schedule.respace(min(int(steps), len(schedule)))
    if start_strength == 1:
        return sched
    run = sched.truncate(start_strength)
    grid = [int(t) for t in schedule.timesteps]
    asked = round(start_strength * (max(grid) + 1)) - 1  # the start on the training grid
    start = max((t for t in grid if t <= asked), default=min(grid))
    top = int(run.timesteps[-1])
    if top <= start and (top > 0 or start == 0):
        return run
    return schedule.subset([t for t in (int(t) for t in sched.timesteps) if t < start] + [start])


SAMPLERS: Dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm_sample, "ddim": ddim_sample,
                                                     "dpmpp_2m": dpmpp_2m_sample, "dpmpp_2m_sde": dpmpp_2m_sde_sample}
# What every sampler takes; anything else in a sampler's signature is its own option.
_COMMON_PARAMETERS = frozenset({"model", "x", "schedule", "noise", "callback", "clip_denoised", "progress"})


def sampler_parameters(sampler: str) -> FrozenSet[str]:
    """The keyword options a sampler function takes beyond the common ones (``{"eta"}`` for
    DDIM), read from its signature: how a sampler-specific option reaches the samplers that take
    it (diffusers' ``prepare_extra_step_kwargs`` idea) and is refused by the rest."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {tuple(SAMPLERS)}")
    return frozenset(inspect.signature(SAMPLERS[sampler]).parameters) - _COMMON_PARAMETERS


# Samplers whose update uses eta, from their signatures.
ETA_SAMPLERS = tuple(s for s in SAMPLERS if "eta" in sampler_parameters(s))


@torch.no_grad()
def sample(model: torch.nn.Module, condition: Optional[torch.Tensor], schedule: NoiseSchedule,
           sampler: str = "ddpm", steps: Optional[int] = None, eta: Optional[float] = None,
           generator: Optional[torch.Generator] = None, callback: Optional[Callback] = None, *,
           x_T: Optional[torch.Tensor] = None, clip_denoised: bool = True, progress: bool = False,
           zero_mean_noise: bool = False, start_strength: float = 1.0,
           start_image: Optional[torch.Tensor] = None, **sampler_options: Any) -> torch.Tensor:
    """Draw x0 ([-1, 1], (B, 3, H, W)) given the condition ([-1, 1], (B, C, H, W)).

    model: the denoiser, called as ``model(cat([condition, x_t], 1), gamma)`` (condition None:
        ``model(x_t, gamma)``, and ``x_T`` or ``start_image`` gives the sample's shape).
    steps: None uses every step of ``schedule``; otherwise it is respaced to ``min(steps, N)``
        evenly spaced noise levels (valid without retraining: SR3 sees continuous noise levels).
    start_strength: < 1 starts from ``start_image`` ([-1, 1], (B, 3, H, W)) noised to that
        fraction of the chain and runs only those steps (SDEdit-style refinement).
    zero_mean_noise: every draw (start and per-step noise) goes through
        :func:`~dehazeddpm.diffusion.noise.zero_mean`, which lets deterministic DDIM start from
        noise without a colour cast. The ancestral sampler refuses it: it stays the reference.
    The start noise is one ``randn(B, 3, H, W)`` from ``generator`` (or the global RNG), unless
    ``x_T`` is given. ``sampler="ddpm"`` with ``steps=None`` is the reference test path.
    eta, and any other sampler-specific keyword (``sampler_options``), goes to the samplers whose
    signature takes it (:func:`sampler_parameters`); given to one that does not, it is a ValueError.
    """
    extras: Dict[str, Any] = {**({"eta": eta} if eta is not None else {}), **sampler_options}
    unused = sorted(set(extras) - sampler_parameters(sampler))
    if unused:
        raise ValueError(f"{', '.join(unused)} does not apply to the {sampler} sampler")
    if zero_mean_noise and sampler == "ddpm":
        raise ValueError("zero_mean_noise is a DDIM option; the ancestral sampler stays the reference")
    sched = sampling_schedule(schedule, steps, start_strength)
    if start_strength < 1 and start_image is None and x_T is None:
        raise ValueError("start_strength < 1 needs start_image, the image to noise")
    noise = (MeanFreeNoise if zero_mean_noise else GaussianNoise)(generator)
    if x_T is None:
        ref = condition if condition is not None else start_image
        if ref is None:
            raise ValueError("give x_T or start_image for a model without a condition")
        x_T = noise((ref.shape[0], 3, *ref.shape[-2:]), device=ref.device)
        if start_strength < 1:
            x_T = q_sample(float(sched.noise_levels[-1]), start_image.to(x_T), x_T)
    denoiser = model if condition is None else ConditionedDenoiser(model, condition)
    return SAMPLERS[sampler](denoiser, x_T, sched, noise=noise, callback=callback, clip_denoised=clip_denoised,
                             progress=progress, **extras)
