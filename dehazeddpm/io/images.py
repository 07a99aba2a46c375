"""Image I/O shared by the pipeline, the command line and the datasets: decode anything, save atomically.

Conventions used everywhere in :mod:`dehazeddpm`:

* **image space** is float in ``[0, 1]`` (what files hold, what metrics take);
* **diffusion space** is float in ``[-1, 1]`` (what the stage-2 DDPM sees).

:func:`to_signed` and :func:`to_unit` are the only functions that move between the two, so a
``[0, 1]``/``[-1, 1]`` mix-up has exactly one place to look for.

:func:`load_image` accepts paths, PIL images, numpy arrays and torch tensors and always returns a
float32 ``1x3xHxW`` tensor in ``[0, 1]``. Transparent images are composited **over white**
(haze datasets have no alpha; white keeps logo-like inputs readable instead of turning their
background black).
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator, TypeVar, Union

import numpy as np
import torch
from PIL import Image, ImageFile

from ..utils import atomic_write
from .wide16 import exif_transposed, wide_low_bytes, wide_rawmode

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "ImageSource",
    "is_image_file",
    "load_image",
    "save_image_atomic",
    "to_pil",
    "to_signed",
    "to_unit",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
_T = TypeVar("_T", torch.Tensor, np.ndarray, float)

# Floats a little outside [0, 1] come from resampling/rounding and are clamped; anything further
# out is almost surely a [-1, 1] or [0, 255] tensor passed by mistake, which we refuse.
_RANGE_TOL = 1e-3


class ImageReadError(ValueError):
    """A file could not be decoded as an image; ``path`` names the offending file.

    The message is the only required argument (``path`` is optional) so the error survives being
    re-raised from a ``DataLoader`` worker, which rebuilds exceptions as ``type(msg)``.
    """

    def __init__(self, message: str, path: Union[str, os.PathLike, None] = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)

    def __reduce__(self):  # keep ``path`` across pickling (multiprocessing workers)
        return (type(self), (self.args[0], self.path))


def _read_error(path: Union[str, os.PathLike], reason: str) -> ImageReadError:
    return ImageReadError(f"cannot read image '{os.fspath(path)}': {reason}", path)


def is_image_file(path: Union[str, os.PathLike]) -> bool:
    """True when ``path`` has an image extension we read (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


# --------------------------------------------------------------------------------------------
# [0, 1] <-> [-1, 1]
# --------------------------------------------------------------------------------------------
def to_signed(x01: _T) -> _T:
    """Image space ``[0, 1]`` -> diffusion space ``[-1, 1]`` (same shape and type).

    Computed as ``x / 0.5 - 1`` rather than ``2 * x - 1``: the reference builds its diffusion
    condition as ``J / 0.5 - 1``; the two agree mathematically but not always in the last float
    bit, and bit-exact parity with the reference matters more than style.
    """
    return x01 / 0.5 - 1


def to_unit(x_m11: _T) -> _T:
    """Diffusion space ``[-1, 1]`` -> image space ``[0, 1]``: ``(x + 1) / 2``; no clamping."""
    return (x_m11 + 1) / 2


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
_TRUNCATION_LOCK = threading.Lock()


@contextlib.contextmanager
def _strict_truncation() -> Iterator[None]:
    """Make PIL raise on truncated data even if someone set ``LOAD_TRUNCATED_IMAGES = True``.

    That flag is process-global; flipping it is only done (under a lock) when it is set, so the
    common case costs nothing and threads never see each other's temporary value.
    """
    if not ImageFile.LOAD_TRUNCATED_IMAGES:
        yield
        return
    with _TRUNCATION_LOCK:
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = True


def _rgb_from_channels(x: torch.Tensor) -> torch.Tensor:
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


def _finish(x: torch.Tensor) -> torch.Tensor:
    """CxHxW float -> contiguous float32 1x3xHxW, clamped to [0, 1]."""
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"image has no pixels (shape {tuple(x.shape)})")
    x = _rgb_from_channels(x.to(torch.float32))
    return x.clamp(0, 1).unsqueeze(0).contiguous()


def _check_float_range(x: Union[np.ndarray, torch.Tensor], what: str) -> None:
    if isinstance(x, np.ndarray):
        finite = bool(np.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    else:
        finite = bool(torch.isfinite(x).all())
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if not finite:
        raise ValueError(f"{what} contains NaN or inf")
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        if hi > 1 + _RANGE_TOL:
            hint = " (looks like [0, 255]: divide by 255)"
        else:
            hint = " (looks like [-1, 1]: use to_unit first)"
        raise ValueError(f"float {what} must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]{hint}")


def _int_scale(maximum: int, minimum: int, what: str) -> float:
    """Full-scale value for integer data whose dtype does not say (int32/int64 arrays)."""
    if minimum < 0:
        raise ValueError(f"integer {what} has negative values")
    if maximum <= 255:
        return 255.0
    if maximum <= 65535:
        return 65535.0
    raise ValueError(f"integer {what} exceeds 16 bits (max {maximum}); pass floats in [0, 1]")


def _array_to_unit(arr: np.ndarray, what: str) -> np.ndarray:
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
        scale = _int_scale(int(arr.max()), int(arr.min()), what)
        return (arr.astype(np.float64) / scale).astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        _check_float_range(arr, what)
        return arr.astype(np.float32)
    raise TypeError(f"unsupported {what} dtype {arr.dtype}")


def _from_numpy(arr: np.ndarray) -> torch.Tensor:
    """HxW / HxWxC (C in 1..4) array -> 1x3xHxW."""
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        hint = " (numpy arrays are channels-last: HxWxC)" if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) else ""
        raise ValueError(f"expected a HxW or HxWxC (C<=4) array, got shape {arr.shape}{hint}")
    x = _array_to_unit(np.ascontiguousarray(arr), "array")
    return _finish(torch.from_numpy(x).permute(2, 0, 1))


def _single_chw(t: torch.Tensor) -> torch.Tensor:
    """1xCxHxW -> CxHxW and HxW -> 1xHxW (a batch of more than one image is an error); other
    shapes pass through for the caller to check."""
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"expected a single image (batch 1), got shape {tuple(t.shape)}")
        t = t[0]
    return t.unsqueeze(0) if t.ndim == 2 else t


def _from_tensor(t: torch.Tensor) -> torch.Tensor:
    """HxW / CxHxW / 1xCxHxW tensor -> 1x3xHxW on the tensor's device."""
    t = _single_chw(t.detach())
    if t.ndim != 3 or t.shape[0] not in (1, 2, 3, 4):
        hint = " (tensors are channels-first: CxHxW)" if t.ndim == 3 and t.shape[-1] in (1, 3, 4) else ""
        raise ValueError(f"expected a HxW, CxHxW or 1xCxHxW tensor, got shape {tuple(t.shape)}{hint}")
    if t.dtype == torch.bool:
        x = t.float()
    elif t.dtype == torch.uint8:
        x = t.float() / 255.0
    elif t.is_floating_point():
        _check_float_range(t, "tensor")
        x = t.float()
    else:  # other integer types: same full-scale heuristic as numpy
        if t.dtype == torch.uint16:
            scale = 65535.0
        else:
            scale = _int_scale(int(t.max()), int(t.min()), "tensor") if t.numel() else 255.0
        x = t.double() / scale
    return _finish(x)


def _pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """Loaded PIL image of any mode -> 1x3xHxW, keeping 16-bit precision where PIL exposes it."""
    img = exif_transposed(img)
    mode = img.mode
    if mode in ("RGBa", "La", "PA", "P"):
        # P may carry transparency; go through RGBA so it is composited like any alpha
        img = img.convert("RGBA" if mode in ("RGBa", "PA", "P") else "LA")
        mode = img.mode
    if mode == "1":
        arr = np.asarray(img.convert("L"))
    elif mode in ("L", "LA", "RGB", "RGBA"):
        arr = np.asarray(img)
    elif mode.startswith("I;16"):
        # uint16 view; scale by 65535 so 16-bit grayscale keeps its precision
        arr = np.asarray(img).astype(np.uint16)
    elif mode == "I":
        # 32-bit ints come from 16-bit sources in practice (older Pillow opened 16-bit PNG as I)
        raw = np.asarray(img).astype(np.int64)
        arr = np.clip(raw, 0, None) / (65535.0 if raw.max(initial=0) <= 65535 else float(2**31 - 1))
    elif mode == "F":
        raw = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        peak = float(raw.max(initial=0.0))
        # no bit depth is stored for float images: infer the full-scale value from the data
        scale = 1.0 if peak <= 1 + _RANGE_TOL else 255.0 if peak <= 255 else 65535.0
        arr = np.clip(raw / scale, 0, 1)
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        arr = np.asarray(img.convert("RGB"))
    return _from_numpy(np.asarray(arr))


def _load_path(path: Path) -> torch.Tensor:
    try:
        if not path.exists():
            raise _read_error(path, "no such file")
        if path.is_dir():
            raise _read_error(path, "is a directory")
        if path.stat().st_size == 0:
            raise _read_error(path, "empty file")
        with _strict_truncation(), Image.open(path) as img:
            rawmode = wide_rawmode(img, list(img.tile))
            # full decode inside the try: Image.open only parses headers, truncation shows here
            img.load()
            if rawmode is not None:
                high = np.asarray(exif_transposed(img))
                low = wide_low_bytes(path, rawmode)
                if low is not None and low.shape == high.shape:
                    return _from_numpy((high.astype(np.uint16) << 8) | low.astype(np.uint16))
            return _pil_to_tensor(img)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # UnidentifiedImageError, truncated data, broken chunks, bombs, ...
        raise _read_error(path, f"{type(exc).__name__}: {exc}") from exc


def load_image(src: ImageSource) -> torch.Tensor:
    """Load ``src`` as a float32 ``1x3xHxW`` tensor in ``[0, 1]`` (image space).

    ``src`` may be

    * a path (``str`` / ``PathLike``): decoded fully, EXIF orientation applied; modes 1, L, P,
      LA, RGBA, CMYK, YCbCr, I;16 (scaled by 65535), I, F, and 16-bit RGB(A) PNG and
      uncompressed TIFF at full 16-bit precision (Pillow alone keeps only the high byte;
      compressed 16-bit RGB TIFF still gets those 8 bits). Missing, empty, truncated or
      non-image files raise :class:`ImageReadError` naming the file;
    * a ``PIL.Image.Image`` (EXIF orientation applied; an already-opened 16-bit RGB file keeps
      the 8 bits Pillow decoded);
    * a numpy array ``HxW``, ``HxWx1``, ``HxWx2`` (gray+alpha), ``HxWx3`` or ``HxWx4``: ``uint8``
      (/255), ``uint16`` (/65535), ``bool`` or float in ``[0, 1]``;
    * a torch tensor ``HxW``, ``CxHxW`` or ``1xCxHxW`` (C in 1..4): ``uint8`` or float in
      ``[0, 1]``. The result stays on the tensor's device.

    Gray is replicated to RGB; alpha is composited over white. Float inputs outside ``[0, 1]``
    (beyond 1e-3 of rounding slack, which is clamped) raise ``ValueError`` because they are
    almost always ``[-1, 1]`` or ``[0, 255]`` data passed by mistake.
    """
    if isinstance(src, (str, os.PathLike)):
        return _load_path(Path(src))
    if isinstance(src, Image.Image):
        src.load()
        return _pil_to_tensor(src)
    if isinstance(src, np.ndarray):
        return _from_numpy(src)
    if isinstance(src, torch.Tensor):
        return _from_tensor(src)
    raise TypeError(f"cannot load an image from {type(src).__name__}")


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------
def to_pil(t: torch.Tensor) -> Image.Image:
    """``1x3xHxW`` / ``3xHxW`` tensor -> RGB image; ``1x1xHxW`` / ``1xHxW`` / ``HxW`` -> L image.

    Values are image space ``[0, 1]``: clamped, then ``round(x * 255)`` (round half to even,
    as the reference's ``tensor2img``). NaN becomes 0.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"to_pil expects a torch.Tensor, got {type(t).__name__}")
    x = _single_chw(t.detach())
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected 1x3xHxW, 3xHxW or 1xHxW, got shape {tuple(t.shape)}")
    x = torch.nan_to_num(x.float().cpu(), nan=0.0).clamp(0, 1)
    arr = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    if arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]), mode="L")
    return Image.fromarray(np.ascontiguousarray(arr), mode="RGB")


def _format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if not suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"unknown image extension '{path.suffix}' for {path}")
    return fmt


def save_image_atomic(
    img_or_tensor: Union[Image.Image, torch.Tensor, np.ndarray], path: Union[str, os.PathLike]
) -> Path:
    """Write an image so that ``path`` is either the old file or the complete new one, never partial.

    ``img_or_tensor`` is a PIL image (saved as is), a tensor accepted by :func:`to_pil`
    (``[0, 1]``), or a numpy array accepted by :func:`load_image`; the last two are written as
    8-bit images. The format comes from the suffix (no suffix: PNG). Written through
    :func:`dehazeddpm.utils.atomic_write`: on any error the old file (if any) is left as it was.
    Returns ``path``.
    """
    path = Path(path)
    fmt = _format_for(path)
    if isinstance(img_or_tensor, Image.Image):
        img = img_or_tensor
    elif isinstance(img_or_tensor, torch.Tensor):
        img = to_pil(img_or_tensor)
    elif isinstance(img_or_tensor, np.ndarray):
        img = to_pil(load_image(img_or_tensor))
    else:
        raise TypeError(f"cannot save {type(img_or_tensor).__name__} as an image")
    if fmt == "JPEG" and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB")  # JPEG has no alpha/palette


    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            img.save(f, format=fmt)

    return atomic_write(path, write)
