"""Stage 1 and the denoiser at a fixed working size: each network run where it was trained, detail kept.

A stage-1 network sees a fixed number of pixels around each output pixel, while haze follows the
scene: it varies over a fraction of the image whatever the image's resolution. A net trained on
128 px crops therefore sees too little of a 1000 px photo to judge its haze, and a 48 px thumbnail
is smaller than anything it was trained on. :func:`stage1_at_size` runs stage 1 on a copy whose
shorter side is ``size`` and brings the result back:

* smaller input: bicubic upsampling to the working size, then J and T are area-downsampled back;
* larger input: area downsampling; T is smooth and is upsampled bilinearly; J is the upsampled
  working J plus the hazy image's own high frequencies divided by T. Where T and A vary slowly,
  ``I = J * T + A * (1 - T)`` makes I's fine detail T times J's, so dividing restores it
  (``min_transmission`` bounds the gain in dense haze).

The re-hazed ``I`` (:func:`dehazeddpm.physics.rehaze`) is recomputed at the input's size. The
demo weights set this through their registry defaults (``stage1_size``: 128); the released
weights run stage 1 at full resolution, as the reference does. docs/benchmarks.md has the
measurement.

Stage 1's own J can take the same detail (``stage1_detail``, :func:`with_input_detail`): J keeps
its structure coarser than ``factor`` pixels and takes the finer detail from the hazy input divided
by T, at the smaller of the image's size and the size stage 1 ran at, where the input's detail is
(an enlarged input's finest detail is the interpolation's, not the scene's; Rule W4).

Stage 1 can also answer for the image and its left-right mirror at once (``stage1_flip``,
:func:`mirror_averaged`, Rule W5): it learned on crops mirrored at random, so the two are equally
its input, and the mean of its two answers has less of its own error.

The denoiser can run at a working size too (``denoise_size``, :func:`to_working_size` and
:func:`from_working_size`): J and T go to the working size, the chain runs there, and the image
gets its own J plus the denoiser's change, resampled to its size.
"""
from __future__ import annotations

from typing import Callable, Tuple

import torch

from ..models.stage1 import Stage1Output
from ..physics import rehaze, scene_detail
from ..utils import resize

# Upsampling the shorter side to the working size never makes the longer side exceed this
# (a 2 x 4000 strip is not blown up to 128 x 256000).
MAX_WORKING_SIDE = 2048
# The detail gain 1 / T is capped at 1 / MIN_TRANSMISSION.
MIN_TRANSMISSION = 0.1


def working_shape(h: int, w: int, size: int, max_side: int = MAX_WORKING_SIDE) -> Tuple[int, int]:
    """(h', w') with shorter side ``size`` and the aspect ratio kept; when that means enlarging,
    the longer side stays <= max(max_side, its current length)."""
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    scale = size / min(h, w)
    if scale > 1:
        scale = min(scale, max(1.0, max_side / max(h, w)))
    return max(1, round(h * scale)), max(1, round(w * scale))


def with_input_detail(out: Stage1Output, hazy01: torch.Tensor, factor: float, *,
                      min_transmission: float = MIN_TRANSMISSION) -> Stage1Output:
    """Stage 1's outputs with J's detail finer than ``factor`` pixels taken from the hazy input.

    out: stage 1 run on ``hazy01`` (B, 3, H, W) in [0, 1], at that size. The band is split by
    area-shrinking by ``factor`` and bilinear enlarging back; J becomes its own coarse band plus
    the input's fine band divided by T (:func:`~dehazeddpm.physics.scene_detail`), clamped to
    [0, 1], and I is recomposed. T, A and coarse are unchanged; ``factor`` 1 changes nothing.
    """
    if not factor >= 1:
        raise ValueError(f"factor must be at least 1, got {factor}")
    if factor == 1:
        return out
    h, w = hazy01.shape[-2:]
    small = (max(1, round(h / factor)), max(1, round(w / factor)))

    def coarse_band(x: torch.Tensor) -> torch.Tensor:
        return resize(resize(x, small, "antialias"), (h, w), "bilinear")

    J = (coarse_band(out.J) + scene_detail(hazy01 - coarse_band(hazy01), out.T, min_transmission)).clamp(0, 1)
    return out._replace(J=J, I=rehaze(J, out.T, out.A))


def mirror_averaged(stage1: Callable[[torch.Tensor], Stage1Output]) -> Callable[[torch.Tensor], Stage1Output]:
    """``stage1`` run on the image and its left-right mirror in one batch, the answers averaged.

    The returned callable maps a (B, 3, H, W) image in [0, 1] to a :class:`Stage1Output` like
    ``stage1``'s: J, coarse, T and A are the means of the two passes (the mirror's flipped back), I
    is re-composed from them, all in [0, 1].
    """
    def both(hazy01: torch.Tensor) -> Stage1Output:
        b = hazy01.shape[0]
        out = stage1(torch.cat([hazy01, hazy01.flip(-1)]))

        def mean(t: torch.Tensor) -> torch.Tensor:
            mirrored = t[b:] if t.shape[-1] == 1 else t[b:].flip(-1)  # A is one colour per image
            return (t[:b] + mirrored) / 2

        J, coarse, T, A = mean(out.J), mean(out.coarse), mean(out.T), mean(out.A)
        return Stage1Output(J=J, coarse=coarse, T=T, A=A, I=rehaze(J, T, A))

    return both


def stage1_at_size(stage1: Callable[[torch.Tensor], Stage1Output], hazy01: torch.Tensor, size: int, *,
                   detail: float = 0, min_transmission: float = MIN_TRANSMISSION) -> Stage1Output:
    """Run ``stage1`` on a copy of ``hazy01`` whose shorter side is ``size``; outputs at the input's size.

    stage1: maps a (B, 3, h, w) image in [0, 1] to a :class:`Stage1Output` of the same size (a
        ``Stage1Net``, which pads internally). hazy01: (B, 3, H, W) in [0, 1]. size: 0 runs
        ``stage1`` on ``hazy01`` as it is.
    detail: 0, or J's detail finer than this many pixels comes from the input
        (:func:`with_input_detail`), applied at the smaller of the input's size and the working
        size: on the working copy when stage 1 ran smaller, on the input when it ran enlarged.
    Returns J, coarse, T, I as (B, C, H, W) and A as (B, 3, 1, 1), all in [0, 1]. When the
    working shape equals the input's, this is ``stage1(hazy01)`` (with the detail).
    """
    if not 0 < min_transmission <= 1:
        raise ValueError(f"min_transmission must be in (0, 1], got {min_transmission}")

    def sharpened(out: Stage1Output, img: torch.Tensor) -> Stage1Output:
        return with_input_detail(out, img, detail, min_transmission=min_transmission) if detail else out

    h, w = hazy01.shape[-2:]
    hw = working_shape(h, w, size) if size else (h, w)
    if hw == (h, w):
        return sharpened(stage1(hazy01), hazy01)
    enlarge = hw[0] * hw[1] > h * w
    small = to_working_size(hazy01, size)
    out = stage1(small)
    if enlarge:
        J = resize(out.J, (h, w), "antialias")
        T = resize(out.T, (h, w), "antialias")
    else:
        out = sharpened(out, small)
        T = resize(out.T, (h, w), "bilinear")
        detail_band = hazy01 - resize(small, (h, w), "bilinear")
        J = resize(out.J, (h, w), "bilinear") + scene_detail(detail_band, T, min_transmission)
    J, T = J.clamp(0, 1), T.clamp(0, 1)
    coarse = resize(out.coarse, (h, w), "antialias" if enlarge else "bilinear").clamp(0, 1)
    A = out.A
    back = Stage1Output(J=J, coarse=coarse, T=T, A=A, I=rehaze(J, T, A))
    return sharpened(back, hazy01) if enlarge else back


def to_working_size(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) in [0, 1] resized to :func:`working_shape` (bicubic to enlarge, antialiased
    bilinear to shrink) and clamped to [0, 1]; ``x`` itself when that is its shape."""
    h, w = x.shape[-2:]
    hw = working_shape(h, w, size)
    if hw == (h, w):
        return x
    return resize(x, hw, "bicubic" if hw[0] * hw[1] > h * w else "antialias").clamp(0, 1)


def from_working_size(result: torch.Tensor, J: torch.Tensor, J_working: torch.Tensor) -> torch.Tensor:
    """The denoiser's result at the working size brought back to J's size, all in [0, 1].

    result: (K, 3, h', w'), K samples denoised from ``J_working`` = ``to_working_size(J, size)``
    (1, 3, h', w'); J: (1, 3, H, W), stage 1's J at the image's size. Returns (K, 3, H, W): J plus
    the denoiser's change (``result - J_working``) resampled to H x W (bilinear up, antialiased
    down). The change is made where the denoiser sees as much of the scene as it was trained to;
    J's own detail, which resampling to the working size and back would blur, is kept as stage 1
    made it, so a result that changes nothing gives J back exactly.
    """
    h, w = J.shape[-2:]
    if result.shape[-2:] == (h, w):
        return result
    shrink = result.shape[-2] * result.shape[-1] > h * w
    return (J + resize(result - J_working, (h, w), "antialias" if shrink else "bilinear")).clamp(0, 1)


__all__ = ["MAX_WORKING_SIDE", "MIN_TRANSMISSION", "from_working_size", "mirror_averaged", "stage1_at_size",
           "to_working_size", "with_input_detail", "working_shape"]
