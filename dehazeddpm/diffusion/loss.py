"""The reference training loss of the stage-2 denoiser (``GaussianDiffusion.p_losses``)."""
from __future__ import annotations

from typing import Optional

import torch

from .forward import q_sample, x0_from_eps
from .schedule import RELEASED_SCHEDULE, NoiseSchedule

# Weight of the FFT-amplitude term of the reference loss.
FREQUENCY_WEIGHT = 0.01


def draw_noise_level(schedule: NoiseSchedule, batch: int, generator: Optional[torch.Generator] = None,
                     device: "torch.device | str" = "cpu") -> torch.Tensor:
    """Continuous gamma for a batch: one step i ~ U{1..N} for the whole batch (as the reference),
    then gamma ~ U(sqrt(alpha_bar_i), sqrt(alpha_bar_{i-1})) independently per sample. (B,)."""
    n = len(schedule)
    i = int(torch.randint(1, n + 1, (1,), generator=generator))
    lo, hi = schedule.gamma_interval(i)
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return (lo + (hi - lo) * u).to(device=device, dtype=torch.float32)


def diffusion_loss(unet: torch.nn.Module, x0: torch.Tensor, condition: torch.Tensor,
                   gamma: Optional[torch.Tensor] = None, noise: Optional[torch.Tensor] = None,
                   generator: Optional[torch.Generator] = None,
                   schedule: Optional[NoiseSchedule] = None,
                   frequency_weight: float = FREQUENCY_WEIGHT) -> torch.Tensor:
    """L1 noise loss plus 0.01 x L1 between FFT amplitudes of predicted and true x0, per element.

    x0: clean image (B, 3, H, W) in [-1, 1]; condition: (B, C, H, W) in [-1, 1].
    gamma: (B,) continuous noise level; drawn from ``schedule`` (default :data:`RELEASED_SCHEDULE`)
    when None. noise: (B, 3, H, W), drawn when None.
    Returns a scalar: (sum |eps - eps_hat| + 0.01 sum ||F x0_hat| - |F x0||) / (B*C*H*W).
    ``frequency_weight`` replaces the 0.01 (0 drops the FFT term).
    """
    b = x0.shape[0]
    if gamma is None:
        sched = schedule if schedule is not None else NoiseSchedule.from_config(RELEASED_SCHEDULE)
        gamma = draw_noise_level(sched, b, generator, x0.device)
    gamma = gamma.reshape(b).to(x0.device, torch.float32)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    x_noisy = q_sample(gamma, x0, noise)
    eps = unet(torch.cat([condition, x_noisy], dim=1), gamma).float()
    noise_term = (noise - eps).abs().sum()
    if not frequency_weight:
        return noise_term / x0.numel()
    x0_pred = x0_from_eps(x_noisy, eps, 1 / gamma, (1 - gamma ** 2).sqrt() / gamma)
    amp_pred = torch.fft.fftn(x0_pred, dim=(-2, -1)).abs()
    amp_true = torch.fft.fftn(x0, dim=(-2, -1)).abs()
    freq_term = (amp_pred - amp_true).abs().sum()
    return (noise_term + frequency_weight * freq_term) / x0.numel()
