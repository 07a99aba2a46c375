"""Synthetic haze with the scattering model (:mod:`dehazeddpm.physics`): ``t = exp(-beta * d)``.

DehazeDDPM's stage 1 predicts exactly these quantities (clear image J, transmission t, airlight A),
so synthetic pairs come with ground truth for all three. Depth comes from the photo (real depth)
or from :func:`depth_prior` / :func:`random_depth_field` when it has none.

All images here are image space: float ``[0, 1]``, ``3xHxW``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from ..physics import rehaze, transmission
from ..utils import resize, scaled_shape

__all__ = ["AIRLIGHT_RANGE", "AIRLIGHT_TINT", "BETA_RANGE", "HazySample", "as_clear_image", "depth_prior", "random_depth_field",
           "SCENE_TINT_RANGE", "random_haze_params", "synthesize_haze", "tint_scene"]

# Scattering coefficient range for random haze. With depth normalised to (0, 1] this gives hazy
# images mostly at 11-16 dB PSNR against the clear photo (interquartile range over the built-in
# photos; dark photos such as hubble_deep_field go lower), i.e. mid-thick haze.
BETA_RANGE: tuple[float, float] = (0.6, 2.0)
# Global airlight level range; each channel gets an extra tint of up to +-AIRLIGHT_TINT.
AIRLIGHT_RANGE: tuple[float, float] = (0.7, 1.0)
AIRLIGHT_TINT = 0.04
# Strength range of :func:`tint_scene`'s white-balance shift (0: none).
SCENE_TINT_RANGE: tuple[float, float] = (0.1, 0.5)

Airlight = Union[float, Sequence[float], torch.Tensor]


@dataclass
class HazySample:
    """One synthetic pair. Tensors are float32 image space, unbatched.

    hazy, clear: 3xHxW in [0, 1]; transmission: 1xHxW in (0, 1]; airlight: 3x1x1 in [0, 1];
    depth: HxW, the normalised depth d actually used (in [0, 1]); beta: scattering coefficient.
    airlight_map: 3xHxW when the airlight varies in space (then ``airlight`` is its mean), else None.
    """

    hazy: torch.Tensor
    clear: torch.Tensor
    transmission: torch.Tensor
    airlight: torch.Tensor
    depth: torch.Tensor
    beta: float
    airlight_map: Optional[torch.Tensor] = None


def as_clear_image(clear01: torch.Tensor) -> torch.Tensor:
    """A 3xHxW or 1x3xHxW float image in [0, 1] as float32 3xHxW; a clear error otherwise."""
    if not isinstance(clear01, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(clear01).__name__}")
    x = clear01[0] if clear01.ndim == 4 and clear01.shape[0] == 1 else clear01
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a 3xHxW or 1x3xHxW image, got shape {tuple(clear01.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a float image in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"clear image must be in [0, 1] (image space), got [{lo:.4g}, {hi:.4g}]")
    return x.float().clamp(0, 1)


def _airlight_tensor(airlight: Airlight) -> torch.Tensor:
    a = torch.as_tensor(airlight, dtype=torch.float32).flatten()
    if a.numel() == 1:
        a = a.expand(3)
    if a.numel() != 3:
        raise ValueError(f"airlight must be a float or 3 floats, got {a.numel()} values")
    if not torch.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise ValueError(f"airlight must lie in [0, 1], got {a.tolist()}")
    return a.clone().view(3, 1, 1)


def random_haze_params(generator: Optional[torch.Generator] = None) -> tuple[float, tuple[float, float, float]]:
    """Draw ``(beta, airlight)``: beta uniform in ``BETA_RANGE``; airlight a grey/white level
    uniform in ``AIRLIGHT_RANGE`` plus a per-channel tint in ``+-AIRLIGHT_TINT`` (clamped to [0, 1]).
    """
    u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
    beta = BETA_RANGE[0] + u[0] * (BETA_RANGE[1] - BETA_RANGE[0])
    level = AIRLIGHT_RANGE[0] + u[1] * (AIRLIGHT_RANGE[1] - AIRLIGHT_RANGE[0])
    rgb = tuple(min(1.0, max(0.0, level + (2 * v - 1) * AIRLIGHT_TINT)) for v in u[2:5])
    return beta, rgb  # type: ignore[return-value]


def synthesize_haze(
    clear01: torch.Tensor,
    depth: Optional[torch.Tensor] = None,
    *,
    beta: Optional[float] = None,
    airlight: Optional[Airlight] = None,
    generator: Optional[torch.Generator] = None,
    normalize_depth: bool = True,
) -> HazySample:
    """Hazy image from a clear one: ``I = clamp(J * t + A * (1 - t), 0, 1)``, ``t = exp(-beta * d)``.

    clear01: 3xHxW or 1x3xHxW in [0, 1]. depth: HxW relative depth (larger = farther, >= 0), or
    None for :func:`depth_prior`. With ``normalize_depth`` (default) ``d = depth / max(depth)``,
    so the farthest point is at unit distance and depth ratios are kept (a constant depth gives
    uniform haze ``t = exp(-beta)``); pass False when depth is already normalised over a larger
    scene (crops of one photo must share one scale). Non-finite depth counts as farthest.
    beta / airlight: when None they are drawn with :func:`random_haze_params` from ``generator``.
    Returns an unbatched :class:`HazySample`.
    """
    j = as_clear_image(clear01)
    h, w = j.shape[-2:]
    if depth is None:
        depth = depth_prior(j)
    d = torch.as_tensor(depth).to(device=j.device, dtype=torch.float32)
    d = d.squeeze(0) if d.ndim == 3 and d.shape[0] == 1 else d
    if d.shape != (h, w):
        raise ValueError(f"depth must be {h}x{w} to match the image, got {tuple(d.shape)}")
    finite = torch.isfinite(d)
    if not finite.all():
        far = float(d[finite].max()) if finite.any() else 1.0
        d = torch.where(finite, d, torch.full_like(d, far))
    if float(d.min()) < 0:
        raise ValueError("depth must be non-negative (larger = farther)")
    if normalize_depth:
        peak = float(d.max())
        d = d / peak if peak > 0 else torch.zeros_like(d)
    elif float(d.max()) > 1 + 1e-6:
        raise ValueError("normalize_depth=False needs depth already in [0, 1]")

    if beta is None or airlight is None:
        rb, ra = random_haze_params(generator)
        beta = rb if beta is None else beta
        airlight = ra if airlight is None else airlight
    beta = float(beta)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite non-negative number, got {beta}")
    a = _airlight_tensor(airlight).to(j.device)

    t = transmission(d, beta).unsqueeze(0)
    hazy = rehaze(j, t, a).clamp(0, 1)
    return HazySample(hazy=hazy, clear=j, transmission=t, airlight=a, depth=d, beta=beta)


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------
def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an HxW map, edge-replicated so borders keep their level."""
    radius = max(1, int(3 * sigma + 0.5))
    xs = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    g = torch.exp(-0.5 * (xs / sigma) ** 2)
    g = g / g.sum()
    y = x[None, None]
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), g.view(1, 1, -1, 1))
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    return y[0, 0]


_PRIOR_SIZE = 128


def depth_prior(clear01: torch.Tensor, *, vertical_weight: float = 0.6) -> torch.Tensor:
    """Plausible relative depth HxW in [0, 1] (1 = farthest) for a photo without real depth.

    A blend of two weak cues, then smoothed (Gaussian, sigma = 1/24 of the shorter side) and
    min-max normalised:

    * vertical position (weight ``vertical_weight``): outdoor scenes recede towards the top;
    * a dark-channel-like cue (min over RGB, then a local min filter): bright, unsaturated regions
      such as sky and distant walls are far more often than not.

    It is a prior, not an estimate: good enough to make spatially varying, scene-shaped haze.
    clear01: 3xHxW or 1x3xHxW in [0, 1].
    """
    full = as_clear_image(clear01)
    fh, fw = full.shape[-2:]
    # the prior is smooth by construction: work on a <=128 px (shorter side) copy for speed
    j = full if min(fh, fw) <= _PRIOR_SIZE else resize(full[None], scaled_shape(fh, fw, _PRIOR_SIZE), "antialias")[0]
    h, w = j.shape[-2:]
    vertical = torch.linspace(1.0, 0.0, h, device=j.device).view(h, 1).expand(h, w)
    patch = max(3, (min(h, w) // 32) | 1)  # odd window ~3% of the shorter side
    dark = j.min(dim=0).values[None, None]
    dark = -F.max_pool2d(-F.pad(dark, (patch // 2,) * 4, mode="replicate"), patch, stride=1)
    d = vertical_weight * vertical + (1 - vertical_weight) * dark[0, 0]
    d = _gaussian_blur(d, max(1.0, min(h, w) / 24))
    if (h, w) != (fh, fw):
        d = resize(d[None, None], (fh, fw), "bilinear")[0, 0]
    lo, hi = float(d.min()), float(d.max())
    return (d - lo) / (hi - lo) if hi > lo else torch.zeros_like(d)


def random_depth_field(h: int, w: int, *, grid: int = 3,
                       generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A smooth random depth map HxW in [0, 1]: a ``grid`` x ``grid`` array of uniform values,
    bicubic-upsampled (clamped to [0, 1]).

    Haze laid out by no scene cue at all: training on some of it keeps a stage-1 net from reading
    the haze off :func:`depth_prior`'s layout (vertical position, brightness) instead of the image,
    which a real depth map does not follow.
    """
    if h < 1 or w < 1 or grid < 1:
        raise ValueError(f"h, w and grid must be positive, got {h}, {w}, {grid}")
    z = torch.rand((1, 1, grid, grid), generator=generator)
    if grid == 1:
        return z.expand(1, 1, h, w)[0, 0].clone()
    return F.interpolate(z, size=(h, w), mode="bicubic", align_corners=True)[0, 0].clamp(0, 1)


def tint_scene(clear01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The clear image 3xHxW in [0, 1] under a random white balance: its channels scaled by
    ``1 + s * cos(theta - 2*pi*c/3)`` (hue angle theta uniform, strength s uniform in
    :data:`SCENE_TINT_RANGE`), divided by the largest gain so nothing clips. Returns 3xHxW in [0, 1].

    Why: half the built-in training photos are grey, so without it a clear scene is nearly always
    neutral and a stage-1 net learns to neutralise every colour, a blue dusk sky or a warm room
    included, as if it were the airlight's cast. Tinted scenes make the scene's colour something
    the haze must be told apart from.
    """
    u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
    theta = 2 * math.pi * u[0]
    strength = SCENE_TINT_RANGE[0] + u[1] * (SCENE_TINT_RANGE[1] - SCENE_TINT_RANGE[0])
    gains = torch.tensor([1 + strength * math.cos(theta - 2 * math.pi * c / 3) for c in range(3)], dtype=torch.float32)
    return (clear01 * (gains / gains.max()).view(3, 1, 1).to(clear01)).clamp(0, 1)
