"""Noise schedules: betas, cumulative alphas and the posterior coefficients derived from them.

Everything is computed in float64 (as the reference does with numpy) and stored as float32
tensors, so the buffers equal those saved in the released ``*_gen.pth`` files.

Notation (DDPM): alpha_t = 1 - beta_t, alpha_bar_t = prod_{s<=t} alpha_s, and the SR3 noise level
gamma_t = sqrt(alpha_bar_t), which is what the denoiser is conditioned on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from ..utils import from_dict

BETA_SCHEDULES = ("linear", "quad", "cosine", "warmup10", "warmup50", "const", "jsd")

# The schedule every released DehazeDDPM model was trained and tested with (reference
# ``beta_schedule.train`` / ``.val``): linear betas from 1e-6 to 1e-2 over 2000 steps.
RELEASED_SCHEDULE: Dict[str, Any] = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6,
                                     "linear_end": 1e-2}

# Names of the schedule buffers the reference ``GaussianDiffusion`` stores in its state dict.
BUFFER_NAMES = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
)


def make_beta_schedule(schedule: str, n_timestep: int, linear_start: float = 1e-4,
                       linear_end: float = 2e-2, cosine_s: float = 8e-3) -> np.ndarray:
    """Return the float64 betas of a named schedule, shape (n_timestep,)."""
    if schedule == "linear":
        return np.linspace(linear_start, linear_end, n_timestep, dtype=np.float64)
    if schedule == "quad":
        return np.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=np.float64) ** 2
    if schedule in ("warmup10", "warmup50"):
        betas = np.full(n_timestep, linear_end, dtype=np.float64)
        n_warm = int(n_timestep * (0.1 if schedule == "warmup10" else 0.5))
        betas[:n_warm] = np.linspace(linear_start, linear_end, n_warm, dtype=np.float64)
        return betas
    if schedule == "const":
        return np.full(n_timestep, linear_end, dtype=np.float64)
    if schedule == "jsd":  # 1/T, 1/(T-1), ..., 1
        return 1.0 / np.linspace(n_timestep, 1, n_timestep, dtype=np.float64)
    if schedule == "cosine":
        # Nichol & Dhariwal (2021); computed in torch float64 like the reference, clipped at 0.999.
        steps = torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s
        f = torch.cos(steps / (1 + cosine_s) * math.pi / 2).pow(2)
        f = f / f[0]
        return (1 - f[1:] / f[:-1]).clamp(max=0.999).numpy()
    raise ValueError(f"unknown beta schedule {schedule!r}; choose from {BETA_SCHEDULES}")


@dataclass(frozen=True)
class ScheduleConfig:
    """The reference ``beta_schedule`` block: ``{"schedule", "n_timestep", "linear_start", "linear_end"}``.

    The defaults are :data:`RELEASED_SCHEDULE`.
    """

    schedule: str = RELEASED_SCHEDULE["schedule"]
    n_timestep: int = RELEASED_SCHEDULE["n_timestep"]
    linear_start: float = RELEASED_SCHEDULE["linear_start"]
    linear_end: float = RELEASED_SCHEDULE["linear_end"]
    cosine_s: float = 8e-3

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ScheduleConfig":
        """Build from the reference's ``beta_schedule`` object; unknown keys are an error."""
        return from_dict(cls, d, "schedule")

    def to_dict(self) -> Dict[str, Any]:
        return {"schedule": self.schedule, "n_timestep": self.n_timestep,
                "linear_start": self.linear_start, "linear_end": self.linear_end}


class NoiseSchedule:
    """A discrete diffusion schedule, possibly a respaced subset of a longer one.

    Attributes (float32 tensors of shape (N,) unless noted, index i = 0 .. N-1 is the step):
      ``betas``, ``alphas_cumprod``, ``alphas_cumprod_prev``, ... the reference buffers;
      ``noise_levels``: gamma_i = sqrt(alpha_bar_i), what the denoiser sees;
      ``timesteps``: (N,) int64, the index of each step in the original (training) grid, so
      callbacks can report the familiar t = 0 .. 1999 even on a 20-step respaced schedule.
    """

    def __init__(self, betas: "np.ndarray | Sequence[float] | torch.Tensor",
                 timesteps: Optional[Sequence[int]] = None,
                 config: Optional[ScheduleConfig] = None):
        betas64 = np.asarray(betas.detach().cpu().double().numpy() if isinstance(betas, torch.Tensor) else betas,
                             dtype=np.float64)
        if betas64.ndim != 1 or len(betas64) == 0:
            raise ValueError("betas must be a non-empty 1-D sequence")
        if not np.all(np.isfinite(betas64)) or np.any(betas64 <= 0) or np.any(betas64 > 1):
            raise ValueError("betas must be finite and lie in (0, 1]")
        self.config = config
        self._betas64 = betas64
        alphas = 1.0 - betas64
        ac = np.cumprod(alphas)
        ac_prev = np.append(1.0, ac[:-1])
        self._alphas_cumprod64 = ac
        posterior_variance = betas64 * (1.0 - ac_prev) / (1.0 - ac)
        with np.errstate(divide="ignore"):
            arrays = {
                "betas": betas64,
                "alphas_cumprod": ac,
                "alphas_cumprod_prev": ac_prev,
                "sqrt_alphas_cumprod": np.sqrt(ac),
                "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
                "log_one_minus_alphas_cumprod": np.log(1.0 - ac),
                "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
                "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
                "posterior_variance": posterior_variance,
                # The posterior variance is 0 at the first step; clip before the log.
                "posterior_log_variance_clipped": np.log(np.maximum(posterior_variance, 1e-20)),
                "posterior_mean_coef1": betas64 * np.sqrt(ac_prev) / (1.0 - ac),
                "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
            }
        for name, arr in arrays.items():
            setattr(self, name, torch.tensor(arr, dtype=torch.float32))
        # gamma computed in float64, then rounded once: what the reference feeds the denoiser.
        self.noise_levels = torch.tensor(np.sqrt(ac), dtype=torch.float32)
        # Boundaries of the intervals training draws gamma from: sqrt(alpha_bar) with 1 prepended.
        self._gamma_edges64 = np.sqrt(np.append(1.0, ac))
        ts = np.arange(len(betas64)) if timesteps is None else np.asarray(timesteps, dtype=np.int64)
        if ts.shape != betas64.shape:
            raise ValueError("timesteps must have one entry per beta")
        self.timesteps = torch.as_tensor(ts, dtype=torch.int64)

    # -- construction -----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: "Mapping[str, Any] | ScheduleConfig") -> "NoiseSchedule":
        """From a reference ``beta_schedule`` dict, e.g. ``{'schedule': 'linear', 'n_timestep': 2000,
        'linear_start': 1e-6, 'linear_end': 1e-2}``."""
        cfg = config if isinstance(config, ScheduleConfig) else ScheduleConfig.from_dict(config)
        betas = make_beta_schedule(cfg.schedule, cfg.n_timestep, cfg.linear_start, cfg.linear_end, cfg.cosine_s)
        return cls(betas, config=cfg)

    @classmethod
    def from_buffers(cls, buffers: Mapping[str, torch.Tensor]) -> "NoiseSchedule":
        """Rebuild from the ``betas`` buffer of a reference checkpoint (float32, so ~1e-7 relative)."""
        if "betas" not in buffers:
            raise KeyError("no 'betas' buffer")
        return cls(buffers["betas"])

    def respace(self, steps: int) -> "NoiseSchedule":
        """A schedule over ``steps`` evenly spaced steps of this one (first step = last step here).

        The new betas are chosen so that the kept alpha_bar values are unchanged: the respaced
        chain visits exactly the same noise levels (guided-diffusion's ``respace``).
        """
        n = len(self)
        if not 1 <= steps <= n:
            raise ValueError(f"steps must be in [1, {n}], got {steps}")
        if steps == n:
            return self
        # Spaced from the noisiest step down, so even steps=1 starts from (almost) pure noise.
        keep = np.unique(np.round(np.linspace(n - 1, 0, steps)).astype(np.int64))
        return self._subset(keep)

    def truncate(self, strength: float) -> "NoiseSchedule":
        """Keep the steps whose noise is at most ``strength`` (in (0, 1]) of the way up the chain.

        Used to start sampling from a noised image instead of pure noise (SDEdit-style).
        """
        if not 0 < strength <= 1:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        n_keep = max(1, int(round(strength * len(self))))
        return self if n_keep == len(self) else self._subset(np.arange(n_keep))

    def subset(self, timesteps: Sequence[int]) -> "NoiseSchedule":
        """The schedule over these original-grid ``timesteps`` of this one (each must be one of
        its steps), visiting exactly their noise levels."""
        return self._subset(np.array(sorted({self.index_of(t) for t in timesteps}), dtype=np.int64))

    def _subset(self, keep: np.ndarray) -> "NoiseSchedule":
        # The least noisy kept step leads straight to the clean image (alpha_bar_prev = 1).
        ac = self._alphas_cumprod64[keep]
        betas = 1.0 - ac / np.append(1.0, ac[:-1])
        return NoiseSchedule(betas, timesteps=self.timesteps.numpy()[keep], config=None)

    # -- queries -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._betas64)

    def __repr__(self) -> str:
        src = f", from {self.config.to_dict()}" if self.config else ""
        return (f"NoiseSchedule({len(self)} steps, t {int(self.timesteps[0])}..{int(self.timesteps[-1])}, "
                f"gamma {float(self.noise_levels[-1]):.4g}..{float(self.noise_levels[0]):.4g}{src})")

    def buffers(self) -> Dict[str, torch.Tensor]:
        """The 12 reference buffers, as ``GaussianDiffusion.state_dict()`` holds them."""
        return {name: getattr(self, name).clone() for name in BUFFER_NAMES}

    def gamma_interval(self, i: int) -> "tuple[float, float]":
        """(gamma_{i}, gamma_{i-1}) in float64: training draws the continuous noise level inside it.

        ``i`` runs from 1 to N as in the reference (``sqrt_alphas_cumprod_prev[i-1 : i+1]``).
        """
        return float(self._gamma_edges64[i - 1]), float(self._gamma_edges64[i])

    def index_of(self, t: int) -> int:
        """Position of the original timestep ``t`` in this schedule."""
        hits = (self.timesteps == int(t)).nonzero()
        if len(hits) == 0:
            raise ValueError(f"timestep {t} is not in this schedule")
        return int(hits[0, 0])
