"""Non-homogeneous haze: density that varies in space on its own, as smoke and fog banks do.

Depth-driven haze (:mod:`dehazeddpm.data.haze`) thickens with distance, so a network trained on it
learns to read haze off the scene layout. Real non-homogeneous haze (NH-HAZE, Dense-Haze, smoke)
does not follow depth: patches and plumes of any density sit anywhere, and the airlight is tinted
and uneven. Here the optical thickness is ``beta * (w * depth + (1 - w) * field)``, with ``field``
a fractal noise field (:func:`fbm_field`) and/or smoke plumes (:func:`plume_field`), and the
airlight a smooth coloured map (:func:`airlight_field`). The scattering model still holds
pixelwise: ``I = J * t + A(x) * (1 - t)``.

Every field is defined in relative image coordinates (its random numbers do not depend on the
output size), so one seed gives the same haze layout at every resolution. All images are image
space: float ``[0, 1]``, ``3xHxW``; fields are ``HxW`` in ``[0, 1]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..physics import rehaze, transmission
from .haze import HazySample, as_clear_image

__all__ = ["HAZE_KINDS", "HazeKind", "airlight_field", "cast_airlight", "fbm_field", "plume_field", "random_haze_kind_params",
           "smog_or_mist", "synthesize_nonhomogeneous"]


@dataclass(frozen=True)
class HazeKind:
    """Density range of one kind of non-homogeneous haze.

    beta: range of the scattering coefficient over a field in [0, 1]; floor: the field is lifted to
    ``floor + (1 - floor) * field`` so dense kinds leave no clear patch; depth_weight: range of the
    weight of the scene depth in the optical thickness (the rest is the field); tint: how far each
    airlight channel may stray from grey.
    """

    beta: tuple[float, float]
    floor: tuple[float, float]
    depth_weight: tuple[float, float]
    tint: float


# Hazy-vs-clear PSNR on the built-in photos: "nh" ~ 10-15 dB with clear and thick patches side by
# side (NH-HAZE's range), "dense" ~ 7-11 dB, almost no pixel thin (Dense-Haze's).
HAZE_KINDS: dict[str, HazeKind] = {
    "nh": HazeKind(beta=(1.0, 2.6), floor=(0.0, 0.2), depth_weight=(0.0, 0.4), tint=0.08),
    "dense": HazeKind(beta=(2.2, 3.6), floor=(0.35, 0.6), depth_weight=(0.0, 0.3), tint=0.06),
}


def _check_size(h: int, w: int) -> None:
    if h < 1 or w < 1:
        raise ValueError(f"h and w must be positive, got {h}, {w}")


def _uniform(g: Optional[torch.Generator], lo: float, hi: float) -> float:
    return lo + float(torch.rand((), generator=g, dtype=torch.float64)) * (hi - lo)


def fbm_field(h: int, w: int, *, octaves: int = 5, base_cells: int = 2, persistence: float = 0.55,
              generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Fractal (fBm) value noise HxW, min-max normalised to [0, 1].

    Octave ``o`` is a ``(base_cells * 2^o + 1)``-square grid of uniform values, bicubic-upsampled to
    the image and weighted ``persistence^o``: large soft patches carrying finer wisps. The grids'
    sizes do not depend on (h, w), so a seed gives the same pattern at any resolution.
    """
    _check_size(h, w)
    if octaves < 1 or base_cells < 1 or not 0 < persistence <= 1:
        raise ValueError(f"need octaves >= 1, base_cells >= 1, 0 < persistence <= 1; got {octaves}, "
                         f"{base_cells}, {persistence}")
    total = torch.zeros(1, 1, h, w)
    for o in range(octaves):
        n = base_cells * 2 ** o + 1
        grid = torch.rand((1, 1, n, n), generator=generator)
        total += persistence ** o * F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True)
    f = total[0, 0]
    lo, hi = float(f.min()), float(f.max())
    return (f - lo) / (hi - lo) if hi > lo else torch.zeros_like(f)


def plume_field(h: int, w: int, *, count: int = 2, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Smoke plumes HxW in [0, 1]: ``count`` cones rising from sources near the lower part of the
    image, widening and thinning along their axis, broken up by fBm turbulence.

    Density is ``1 - exp(-sum of plumes)``, so overlapping plumes saturate instead of exceeding 1.
    ``count`` 0 gives zeros.
    """
    _check_size(h, w)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    aspect = w / h
    ys = torch.linspace(0, 1, h).view(h, 1)
    xs = torch.linspace(0, aspect, w).view(1, w)
    total = torch.zeros(h, w)
    for _ in range(count):
        x0 = _uniform(generator, 0.1, 0.9) * aspect
        y0 = _uniform(generator, 0.6, 1.1)
        angle = _uniform(generator, -0.6, 0.6)  # radians from straight up
        length = _uniform(generator, 0.6, 1.4)
        spread = _uniform(generator, 0.15, 0.45)  # half-width gained per unit of length
        strength = _uniform(generator, 1.5, 3.5)
        ux, uy = math.sin(angle), -math.cos(angle)  # up is -y
        along = (xs - x0) * ux + (ys - y0) * uy
        across = (xs - x0) * uy - (ys - y0) * ux
        s = along.clamp(min=0)
        width = 0.05 + spread * s
        density = strength * torch.exp(-0.5 * (across / width) ** 2) * torch.exp(-s / length) * torch.sigmoid(along / 0.04)
        total += density * (0.35 + 0.65 * fbm_field(h, w, octaves=4, base_cells=3, generator=generator))
    return 1 - torch.exp(-total)


def airlight_field(h: int, w: int, base: torch.Tensor, *, variation: float = 0.06,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """A smooth airlight map 3xHxW in [0, 1]: ``base`` (3 values) plus a low-frequency field of
    amplitude ``variation`` shared by the channels (brighter and darker banks of haze) and a
    smaller per-channel one (uneven tint)."""
    _check_size(h, w)
    base = torch.as_tensor(base, dtype=torch.float32).flatten()
    if base.numel() != 3:
        raise ValueError(f"base must hold 3 values, got {base.numel()}")
    shared = fbm_field(h, w, octaves=2, base_cells=1, generator=generator) - 0.5
    own = torch.stack([fbm_field(h, w, octaves=2, base_cells=1, generator=generator) - 0.5 for _ in range(3)])
    return (base.view(3, 1, 1) + variation * (2 * shared + 0.5 * own)).clamp(0, 1)


def cast_airlight(level: float, tint: float, generator: Optional[torch.Generator] = None
                  ) -> Tuple[float, float, float]:
    """An airlight colour (r, g, b) in [0, 1]: grey ``level`` cast towards yellow-brown smog or
    blue-grey mist by up to ``tint`` per channel (the sign and strength drawn from ``generator``),
    with a little independent jitter per channel. Real smoke and smog are rarely grey; a stage 1
    trained only on grey airlight dehazes a tinted one into the opposite cast."""
    warmth = _uniform(generator, -1.0, 1.0)  # > 0: smog, < 0: mist
    cast = (warmth * tint, 0.3 * warmth * tint, -warmth * tint)
    return tuple(min(1.0, max(0.0, level + c + _uniform(generator, -0.3, 0.3) * tint)) for c in cast)  # type: ignore[return-value]


def smog_or_mist(airlight: Sequence[float], generator: Optional[torch.Generator] = None) -> Tuple[float, float, float]:
    """A near-grey ``airlight`` (r, g, b) recast towards smog or mist at its mean level, by up to
    the "nh" kind's tint (:func:`cast_airlight`): depth haze with the colour real haze has."""
    return cast_airlight(sum(airlight) / len(airlight), HAZE_KINDS["nh"].tint, generator)


def random_haze_kind_params(kind: str, generator: Optional[torch.Generator] = None) -> dict:
    """Draw the scalar parameters of one hazy image of ``kind`` (a key of :data:`HAZE_KINDS`):
    ``{"beta", "floor", "depth_weight", "airlight": (r, g, b), "plumes": 0..2, "fbm_weight"}``.

    The airlight is a level in [0.65, 1] with a colour cast (warm smog or cool mist) of up to the
    kind's ``tint`` per channel.
    """
    if kind not in HAZE_KINDS:
        raise ValueError(f"kind must be one of {sorted(HAZE_KINDS)}, got {kind!r}")
    k = HAZE_KINDS[kind]
    rgb = cast_airlight(_uniform(generator, 0.65, 1.0), k.tint, generator)
    return {"beta": _uniform(generator, *k.beta), "floor": _uniform(generator, *k.floor),
            "depth_weight": _uniform(generator, *k.depth_weight), "airlight": rgb,
            "plumes": int(torch.randint(0, 3, (1,), generator=generator)),
            "fbm_weight": _uniform(generator, 0.5, 1.0)}


def synthesize_nonhomogeneous(clear01: torch.Tensor, kind: str = "nh", depth: Optional[torch.Tensor] = None, *,
                              generator: Optional[torch.Generator] = None) -> HazySample:
    """Non-homogeneous haze over a clear image: ``I = clamp(J * t + A(x) * (1 - t), 0, 1)``.

    ``t = exp(-beta * D)`` with ``D = floor + (1 - floor) * (dw * depth + (1 - dw) * field)``, the
    field a blend of :func:`fbm_field` and :func:`plume_field`; ``A(x)`` from :func:`airlight_field`.
    clear01: 3xHxW (or 1x3xHxW) in [0, 1]; depth: HxW in [0, 1] (None: no depth term).
    Returns a :class:`HazySample` whose ``airlight`` is the map's mean (3x1x1, what stage 1
    predicts) and ``airlight_map`` the map itself; ``depth`` is ``D``.
    """
    j = as_clear_image(clear01)
    h, w = j.shape[-2:]
    p = random_haze_kind_params(kind, generator)
    fbm = fbm_field(h, w, generator=generator)
    plumes = plume_field(h, w, count=p["plumes"], generator=generator)
    field = 1 - (1 - p["fbm_weight"] * fbm) * (1 - plumes)  # union of patches and plumes, in [0, 1]
    if depth is not None:
        d = torch.as_tensor(depth, dtype=torch.float32).squeeze()
        if d.shape != (h, w) or not torch.isfinite(d).all() or float(d.min()) < 0 or float(d.max()) > 1:
            raise ValueError(f"depth must be a finite {h}x{w} map in [0, 1]")
        field = p["depth_weight"] * d + (1 - p["depth_weight"]) * field
    thickness = p["floor"] + (1 - p["floor"]) * field
    t = transmission(thickness, p["beta"]).unsqueeze(0)
    a_map = airlight_field(h, w, torch.tensor(p["airlight"]), generator=generator)
    hazy = rehaze(j, t, a_map).clamp(0, 1)
    return HazySample(hazy=hazy, clear=j, transmission=t, airlight=a_map.mean(dim=(1, 2), keepdim=True),
                      depth=thickness, beta=p["beta"], airlight_map=a_map)
