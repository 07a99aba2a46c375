"""Synthetic haze with the atmospheric scattering model ``I = J * t + A * (1 - t)``, ``t = exp(-beta * d)``.

DehazeDDPM's stage 1 predicts exactly these quantities (clear image J, transmission t, airlight A),
so synthetic pairs come with ground truth for all three. Photos come from scikit-image's bundled
data only (no download), split into disjoint TRAIN and EVAL sets:

* ``TRAIN_PHOTOS``: astronaut, coffee, chelsea, immunohistochemistry, hubble_deep_field, grass,
  brick, gravel, coins, moon, text, page, and ``grace_hopper`` (from matplotlib's sample data, a
  core dependency, so it needs no download either)
* ``EVAL_PHOTOS``: motorcycle (left view of Middlebury 2014 "Motorcycle", with its *real*
  disparity-derived depth), rocket, camera

Grayscale photos (grass, brick, gravel, coins, moon, text, page, camera) are replicated to RGB.
skimage's ``cat`` is the same photo as ``chelsea`` and ``motorcycle_right`` shows the same scene as
``motorcycle``; both are left out so nothing leaks between the splits. Only ``motorcycle`` has real depth; the others use
:func:`depth_prior`.

All images here are image space: float ``[0, 1]``, ``3xHxW``.
"""
from __future__ import annotations

import json
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import imageio

__all__ = [
    "AIRLIGHT_RANGE",
    "BETA_RANGE",
    "EVAL_PHOTOS",
    "HazySample",
    "MOTORCYCLE_DOFFS",
    "TRAIN_PHOTOS",
    "builtin_photos",
    "depth_prior",
    "disparity_to_depth",
    "eval_haze_params",
    "make_eval_set",
    "random_depth_field",
    "random_haze_params",
    "synthesize_haze",
]

TRAIN_PHOTOS: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "hubble_deep_field", "grass",
                                  "brick", "gravel", "coins", "moon", "text", "page", "grace_hopper")
EVAL_PHOTOS: tuple[str, ...] = ("motorcycle", "rocket", "camera")

# Middlebury's depth is Z = f * baseline / (disparity + doffs); doffs (the principal point
# offset between the two cameras) for the 4x down-sampled Motorcycle shipped by skimage.
MOTORCYCLE_DOFFS = 31.086

# Scattering coefficient range for random haze. With depth normalised to (0, 1] this gives hazy
# images mostly at 11-16 dB PSNR against the clear photo (interquartile range over the built-in
# photos; dark photos such as hubble_deep_field go lower), i.e. mid-thick haze.
BETA_RANGE: tuple[float, float] = (0.6, 2.0)
# Global airlight level range; each channel gets an extra tint of up to +-AIRLIGHT_TINT.
AIRLIGHT_RANGE: tuple[float, float] = (0.7, 1.0)
AIRLIGHT_TINT = 0.04

Airlight = Union[float, Sequence[float], torch.Tensor]


@dataclass
class HazySample:
    """One synthetic pair. Tensors are float32 image space, unbatched.

    hazy, clear: 3xHxW in [0, 1]; transmission: 1xHxW in (0, 1]; airlight: 3x1x1 in [0, 1];
    depth: HxW, the normalised depth d actually used (in [0, 1]); beta: scattering coefficient.
    """

    hazy: torch.Tensor
    clear: torch.Tensor
    transmission: torch.Tensor
    airlight: torch.Tensor
    depth: torch.Tensor
    beta: float


def _as_chw(clear01: torch.Tensor) -> torch.Tensor:
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
    j = _as_chw(clear01)
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

    t = torch.exp(-beta * d).unsqueeze(0)
    hazy = (j * t + a * (1 - t)).clamp(0, 1)
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
    full = _as_chw(clear01)
    fh, fw = full.shape[-2:]
    # the prior is smooth by construction: work on a <=128 px (shorter side) copy for speed
    scale = min(1.0, _PRIOR_SIZE / min(fh, fw))
    j = full if scale == 1.0 else F.interpolate(
        full[None], size=(max(1, round(fh * scale)), max(1, round(fw * scale))),
        mode="bilinear", align_corners=False, antialias=True)[0]
    h, w = j.shape[-2:]
    vertical = torch.linspace(1.0, 0.0, h, device=j.device).view(h, 1).expand(h, w)
    patch = max(3, (min(h, w) // 32) | 1)  # odd window ~3% of the shorter side
    dark = j.min(dim=0).values[None, None]
    dark = -F.max_pool2d(-F.pad(dark, (patch // 2,) * 4, mode="replicate"), patch, stride=1)
    d = vertical_weight * vertical + (1 - vertical_weight) * dark[0, 0]
    d = _gaussian_blur(d, max(1.0, min(h, w) / 24))
    if (h, w) != (fh, fw):
        d = F.interpolate(d[None, None], size=(fh, fw), mode="bilinear", align_corners=False)[0, 0]
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


def disparity_to_depth(disp: Union[np.ndarray, torch.Tensor], *, doffs: float = 0.0) -> torch.Tensor:
    """Stereo disparity HxW (pixels) -> relative depth HxW in (0, 1], 1 = farthest.

    depth = 1 / (disparity + doffs) (``doffs`` is Middlebury's principal-point offset; 0 for a
    plain stereo pair), divided by its maximum so depth ratios survive. Invalid disparities
    (non-finite or <= -doffs, e.g. occlusions) are filled along each row with the smaller
    (farther) of the nearest valid disparities to the left and right: occluded pixels belong to
    the background of the adjacent edge. A map with no valid pixel raises ``ValueError``.
    """
    dp = np.asarray(disp.detach().cpu() if isinstance(disp, torch.Tensor) else disp, dtype=np.float64)
    if dp.ndim != 2:
        raise ValueError(f"expected an HxW disparity map, got shape {dp.shape}")
    dp = dp + doffs
    valid = np.isfinite(dp) & (dp > 0)
    if not valid.any():
        raise ValueError("disparity map has no valid (finite, positive) value")
    if not valid.all():
        h, w = dp.shape
        cols = np.arange(w)
        # index of the nearest valid pixel to the left / right in each row (-1 / w when none)
        left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
        right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]
        rows = np.arange(h)[:, None]
        big = np.inf
        from_left = np.where(left >= 0, dp[rows, np.clip(left, 0, w - 1)], big)
        from_right = np.where(right < w, dp[rows, np.clip(right, 0, w - 1)], big)
        filled = np.minimum(from_left, from_right)
        # rows without any valid pixel: farthest valid disparity in the map
        filled = np.where(np.isfinite(filled), filled, dp[valid].min())
        dp = np.where(valid, dp, filled)
    depth = 1.0 / dp
    return torch.from_numpy(depth / depth.max()).float()


# --------------------------------------------------------------------------------------------
# Built-in photos
# --------------------------------------------------------------------------------------------
def _skimage_data():
    try:
        import skimage.data
    except ImportError as exc:  # scikit-image is a train/dev extra, not a core dependency
        raise ImportError(
            "the built-in photos come from scikit-image: pip install scikit-image "
            "(or pip install 'dehazeddpm[train]')"
        ) from exc
    return skimage.data


def _rgb(arr: np.ndarray) -> np.ndarray:
    return np.repeat(arr[:, :, None], 3, axis=2) if arr.ndim == 2 else arr[:, :, :3]


def _load_builtin(name: str) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    data = _skimage_data()
    if name == "motorcycle":
        left, _right, disp = data.stereo_motorcycle()
        depth = disparity_to_depth(disp, doffs=MOTORCYCLE_DOFFS)
        return imageio.load_image(left)[0], depth
    if name not in TRAIN_PHOTOS + EVAL_PHOTOS:
        raise KeyError(name)
    if name == "grace_hopper":
        import matplotlib.cbook

        try:
            path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        except (OSError, ValueError) as exc:  # a matplotlib packaged without its sample data
            raise FileNotFoundError("training photo grace_hopper.jpg is missing from matplotlib's sample "
                                    "data (reinstall matplotlib from PyPI)") from exc
        return imageio.load_image(path)[0], None
    return imageio.load_image(_rgb(getattr(data, name)()))[0], None


_CACHE: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}


def builtin_photos(split: str) -> dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]]:
    """Built-in photos of ``split`` ("train" or "eval") as ``{name: (clear, depth)}``.

    clear: float32 3xHxW in [0, 1]; depth: HxW relative depth in (0, 1] (1 = farthest) where the
    photo has real depth (``motorcycle``), else None. The sets are ``TRAIN_PHOTOS`` and
    ``EVAL_PHOTOS`` (disjoint). Returns fresh tensors: callers may modify them.
    Requires scikit-image (ImportError with the install command otherwise).
    """
    names = {"train": TRAIN_PHOTOS, "eval": EVAL_PHOTOS}.get(split)
    if names is None:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    out: dict[str, tuple[torch.Tensor, Optional[torch.Tensor]]] = {}
    for name in names:
        if name not in _CACHE:
            _CACHE[name] = _load_builtin(name)
        clear, depth = _CACHE[name]
        out[name] = (clear.clone(), None if depth is None else depth.clone())
    return out


def _resize_shorter(
    clear: torch.Tensor, depth: Optional[torch.Tensor], size: int
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    h, w = clear.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    # Lanczos on the 8-bit photo keeps the GT a faithful 8-bit image (what gets saved anyway)
    from PIL import Image

    pil = imageio.to_pil(clear).resize((new_w, new_h), Image.LANCZOS)
    clear = imageio.load_image(pil)[0]
    if depth is not None:
        depth = F.interpolate(depth[None, None], size=(new_h, new_w), mode="bilinear",
                              align_corners=False, antialias=scale < 1)[0, 0]
    return clear, depth


def eval_haze_params(name: str, seed: int = 0) -> tuple[float, tuple[float, float, float]]:
    """The fixed ``(beta, airlight)`` of eval photo ``name`` for ``seed`` (as used by make_eval_set).

    Seeded by the photo's name, not its position, so adding photos never changes existing pairs.
    """
    state = np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(2, dtype=np.uint64)
    g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    return random_haze_params(g)


def make_eval_set(
    out_dir: Union[str, os.PathLike], *, size: Optional[int] = None, seed: int = 0
) -> list[tuple[Path, Path]]:
    """Write the deterministic eval pairs ``out_dir/hazy/NAME.png`` and ``out_dir/gt/NAME.png``.

    One pair per ``EVAL_PHOTOS`` entry, in that order, with haze parameters from
    :func:`eval_haze_params` (recorded in ``out_dir/params.json``). ``size``: resize so the
    shorter side is ``size`` pixels first (None keeps the original size). The hazy image is made
    from the 8-bit GT exactly as saved, so the pair is consistent. Files are written atomically;
    rerunning rewrites identical bytes. Returns ``[(hazy_path, gt_path), ...]``.
    """
    out = Path(out_dir)
    if size is not None and size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    pairs: list[tuple[Path, Path]] = []
    params: dict[str, dict] = {}
    for name, (clear, depth) in builtin_photos("eval").items():
        if size is not None:
            clear, depth = _resize_shorter(clear, depth, size)
        beta, airlight = eval_haze_params(name, seed)
        sample = synthesize_haze(clear, depth, beta=beta, airlight=airlight)
        gt_path = imageio.save_image_atomic(sample.clear, out / "gt" / f"{name}.png")
        hazy_path = imageio.save_image_atomic(sample.hazy, out / "hazy" / f"{name}.png")
        pairs.append((hazy_path, gt_path))
        params[name] = {"beta": beta, "airlight": list(airlight), "height": int(clear.shape[-2]),
                        "width": int(clear.shape[-1]), "real_depth": depth is not None}
    tmp = out / ".params.json.tmp"
    tmp.write_text(json.dumps({"seed": seed, "size": size, "images": params}, indent=2) + "\n")
    os.replace(tmp, out / "params.json")
    return pairs
