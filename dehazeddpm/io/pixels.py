"""Pixels of any dtype and layout -> float32 (1, 3, H, W) in [0, 1] (image space).

numpy arrays (HxW, HxWxC) and torch tensors (HxW, CxHxW, 1xCxHxW) with 1 to 4 channels: gray is
replicated to RGB and alpha composited over white. Integers are scaled by their bit depth; floats
must already be in [0, 1] (:func:`check_float_range` refuses [-1, 1] and [0, 255] data passed by
mistake), except float *files*, where :func:`float_pixels` states the rule.
"""
from __future__ import annotations

from typing import Union

import numpy as np
import torch

__all__ = ["RANGE_TOL", "array_to_unit", "check_float_range", "finish", "float_pixels", "from_numpy", "from_tensor",
           "int_scale", "rgb_from_channels", "single_chw"]

# Floats a little outside [0, 1] come from resampling/rounding and are clamped; anything further
# out is almost surely a [-1, 1] or [0, 255] tensor passed by mistake, which we refuse.
RANGE_TOL = 1e-3


def rgb_from_channels(x: torch.Tensor) -> torch.Tensor:
    """CxHxW float in [0, 1] with C in {1, 2, 3, 4} -> 3xHxW; alpha is composited over white."""
    c = x.shape[0]
    if c == 1:
        return x.expand(3, -1, -1)
    if c == 2:
        gray, alpha = x[:1], x[1:2]
        return (gray * alpha + (1 - alpha)).expand(3, -1, -1)
    if c == 3:
        return x
    if c == 4:
        alpha = x[3:4]
        return x[:3] * alpha + (1 - alpha)
    raise ValueError(f"expected 1, 2, 3 or 4 channels, got {c}")


def finish(x: torch.Tensor) -> torch.Tensor:
    """CxHxW float -> contiguous float32 1x3xHxW, clamped to [0, 1]."""
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"image has no pixels (shape {tuple(x.shape)})")
    x = rgb_from_channels(x.to(torch.float32))
    return x.clamp(0, 1).unsqueeze(0).contiguous()


def check_float_range(x: Union[np.ndarray, torch.Tensor], what: str) -> None:
    if isinstance(x, np.ndarray):
        finite = bool(np.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    else:
        finite = bool(torch.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if not finite:
        raise ValueError(f"{what} contains NaN or inf")
    if lo < -RANGE_TOL or hi > 1 + RANGE_TOL:
        if hi > 1 + RANGE_TOL:
            hint = " (looks like [0, 255]: divide by 255)"
        else:
            hint = " (looks like [-1, 1]: use to_unit first)"
        raise ValueError(f"float {what} must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")


def int_scale(maximum: int, minimum: int, what: str) -> float:
    """Full-scale value for integer data whose dtype does not say (int32/int64 arrays)."""
    if minimum < 0:
        raise ValueError(f"integer {what} has negative values")
    if maximum <= 255:
        return 255.0
    if maximum <= 65535:
        return 65535.0
    raise ValueError(f"integer {what} exceeds 16 bits (max {maximum}); pass floats in [0, 1]")


def array_to_unit(arr: np.ndarray, what: str) -> np.ndarray:
    """Any-dtype numpy array -> float32 with the same shape, in [0, 1]."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        # float64 keeps 16-bit steps exact before the final float32 cast
        return (arr.astype(np.float64) / 65535.0).astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size == 0:
            return arr.astype(np.float32)
        scale = int_scale(int(arr.max()), int(arr.min()), what)
        return (arr.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        check_float_range(arr, what)
        return arr.astype(np.float32)
    raise TypeError(f"unsupported {what} dtype {arr.dtype}")


def from_numpy(arr: np.ndarray) -> torch.Tensor:
    """HxW / HxWxC (C in 1..4) array -> 1x3xHxW."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        hint = " (numpy arrays are channels-last: HxWxC)" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"expected a HxW or HxWxC (C<=4) array, got shape {arr.shape}{hint}")
    x = array_to_unit(np.ascontiguousarray(arr), "array")
    return finish(torch.from_numpy(x).permute(2, 0, 1))


def single_chw(t: torch.Tensor) -> torch.Tensor:
    """1xCxHxW -> CxHxW and HxW -> 1xHxW (a batch of more than one image is an error); other
    shapes pass through for the caller to check."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a single image (batch 1), got shape {tuple(t.shape)}")
        t = t[0]
    return t.unsqueeze(0) if t.ndim == 2 else t


def from_tensor(t: torch.Tensor) -> torch.Tensor:
    """HxW / CxHxW / 1xCxHxW tensor -> 1x3xHxW on the tensor's device."""
    t = single_chw(t.detach())
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        hint = " (tensors are channels-first: CxHxW)" if t.ndim == 3 and t.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"expected a HxW, CxHxW or 1xCxHxW tensor, got shape {tuple(t.shape)}{hint}")
    if t.dtype == torch.bool:
        x = t.float()
    elif t.dtype == torch.uint8:
        x = t.float() / 255.0
    elif t.is_floating_point():
        check_float_range(t, "tensor")
        x = t.float()
    else:  # other integer types: same full-scale heuristic as numpy
        if t.dtype == torch.uint16:
            scale = 65535.0
        else:
            scale = int_scale(int(t.max()), int(t.min()), "tensor") if t.numel() else 255.0
        x = t.double() / scale
    return finish(x)


def float_pixels(raw: np.ndarray) -> np.ndarray:
    """Float pixels of a file (no bit depth is stored) -> [0, 1], by one stated rule: values in
    [0, 1] are taken as they are; whole numbers up to 255 or 65535 are 8- or 16-bit data kept as
    floats and are divided by that full scale; anything else (values above 1 with fractions, such
    as linear or HDR data, negatives, NaN) is an error rather than a guess."""
    if not np.isfinite(raw).all():
        raise ValueError("float image holds NaN or inf")
    lo, hi = float(raw.min(initial=0.0)), float(raw.max(initial=0.0))
    if lo >= -RANGE_TOL and hi <= 1 + RANGE_TOL:
        return np.clip(raw, 0, 1)
    if lo >= 0 and np.all(raw == np.round(raw)) and hi <= 65535:
        return raw / (255.0 if hi <= 255 else 65535.0)
    raise ValueError(f"float image values span [{lo:.4g}, {hi:.4g}]: expected [0, 1] (or whole numbers of "
                     "8/16-bit data); normalise it or save it as an 8/16-bit image")
