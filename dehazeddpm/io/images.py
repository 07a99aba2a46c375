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
import warnings
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, TypeVar, Union

import numpy as np
import torch
from PIL import Image, ImageFile, PngImagePlugin

from ..utils import atomic_write
from .pixels import float_pixels, from_numpy, from_tensor, single_chw
from .wide16 import exif_transposed, wide_low_bytes, wide_rawmode

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageReadError",
    "MAX_PIXELS_ENV",
    "ImageSource",
    "is_image_file",
    "load_image",
    "pixel_limit",
    "save_image_atomic",
    "to_pil",
    "to_signed",
    "denoiser_condition",
    "read_png_text",
    "to_unit",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})

ImageSource = Union[str, os.PathLike, Image.Image, np.ndarray, torch.Tensor]
_T = TypeVar("_T", torch.Tensor, np.ndarray, float)

# Files larger than this many pixels are refused before they are decoded (a 144-megapixel PNG
# takes half a minute and ~7 GB to decode); DEHAZEDDPM_MAX_PIXELS changes it. Pillow's own bomb
# guard (about 179 MP) stays behind it.
MAX_PIXELS_ENV = "DEHAZEDDPM_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 40_000_000


def pixel_limit() -> int:
    """The pixel limit for image files: ``DEHAZEDDPM_MAX_PIXELS`` if set (0: Pillow's own), else 40 MP."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r} is not a number of pixels") from None
    return value if value > 0 else 0


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


def denoiser_condition(J: torch.Tensor, T: torch.Tensor, channels: int = 4) -> torch.Tensor:
    """The denoiser's condition (the paper's condition on J and T; reference ``SR`` input of netG): ``cat([J, T])``
    in [-1, 1], (B, 4, H, W), from stage 1's J (B, 3, H, W) and T (B, 1, H, W) in [0, 1];
    ``channels=3`` gives J alone, for a J-only model. Stage 1's outputs are clamped to [0, 1]
    first (a no-op on what :class:`~dehazeddpm.models.Stage1Net` returns)."""
    if channels not in (3, 4):
        raise ValueError(f"a denoiser condition has 3 (J) or 4 (J, T) channels, not {channels}")
    J = J.clamp(0, 1)
    return to_signed(torch.cat([J, T.clamp(0, 1)], 1) if channels == 4 else J)


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
        arr = float_pixels(np.asarray(img, dtype=np.float64))
    else:  # CMYK, YCbCr, LAB, HSV, RGBX, ...
        arr = np.asarray(img.convert("RGB"))
    return from_numpy(np.asarray(arr))


def _load_path(path: Path, limit: int) -> torch.Tensor:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = _decode_path(path, limit)
    for w in caught:  # Pillow's warnings (corrupt EXIF, ...) name no file: say which one
        warnings.warn(f"{path}: {w.message}", w.category, stacklevel=3)
    return out


def _decode_path(path: Path, limit: int) -> torch.Tensor:
    try:
        if not path.exists():
            raise _read_error(path, "no such file")
        if path.is_dir():
            raise _read_error(path, "is a directory")
        if path.stat().st_size == 0:
            raise _read_error(path, "empty file")
        with _strict_truncation(), Image.open(path) as img:
            if limit and img.width * img.height > limit:
                raise _read_error(path, f"{img.width} x {img.height} = {img.width * img.height:,} pixels, more than "
                                        f"the limit of {limit:,} (--max-pixels or {MAX_PIXELS_ENV} raises it)")
            rawmode = wide_rawmode(img, list(img.tile))
            # full decode inside the try: Image.open only parses headers, truncation shows here
            img.load()
            if rawmode is not None:
                high = np.asarray(exif_transposed(img))
                low = wide_low_bytes(path, rawmode)
                if low is not None and low.shape == high.shape:
                    return from_numpy((high.astype(np.uint16) << 8) | low.astype(np.uint16))
            return _pil_to_tensor(img)
    except ImageReadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # UnidentifiedImageError, truncated data, broken chunks, bombs, ...
        raise _read_error(path, f"{type(exc).__name__}: {exc}") from exc


def load_image(src: ImageSource, *, max_pixels: Optional[int] = None) -> torch.Tensor:
    """Load ``src`` as a float32 ``1x3xHxW`` tensor in ``[0, 1]`` (image space).

    ``src`` may be

    * a path (``str`` / ``PathLike``): decoded fully, EXIF orientation applied; modes 1, L, P,
      LA, RGBA, CMYK, YCbCr, I;16 (scaled by 65535), I, F, and 16-bit RGB(A) PNG and
      uncompressed TIFF at full 16-bit precision (Pillow alone keeps only the high byte;
      compressed 16-bit RGB TIFF still gets those 8 bits); float (F) files by the rule of
      :func:`~dehazeddpm.io.pixels.float_pixels`. Files of more than ``max_pixels`` pixels
      (default :func:`pixel_limit`; 0: Pillow's own guard) are refused before decoding. Missing,
      empty, truncated or non-image files raise :class:`ImageReadError` naming the file;
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
        return _load_path(Path(src), pixel_limit() if max_pixels is None else max_pixels)
    if isinstance(src, Image.Image):
        src.load()
        return _pil_to_tensor(src)
    if isinstance(src, np.ndarray):
        return from_numpy(src)
    if isinstance(src, torch.Tensor):
        return from_tensor(src)
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
    x = single_chw(t.detach())
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"expected 1x3xHxW, 3xHxW or 1xHxW, got shape {tuple(t.shape)}")
    x = torch.nan_to_num(x.float().cpu(), nan=0.0).clamp(0, 1)
    arr = (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    # uint8 (H, W) is "L" and (H, W, 3) is "RGB" to Pillow; naming the mode is deprecated there (11.3)
    if arr.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(arr[:, :, 0]))
    return Image.fromarray(np.ascontiguousarray(arr))


def _format_for(path: Path) -> str:
    suffix = path.suffix.lower()
    if not suffix:
        return "PNG"
    fmt = Image.registered_extensions().get(suffix)
    if fmt is None:
        raise ValueError(f"unknown image extension '{path.suffix}' for {path}")
    return fmt


def save_image_atomic(
    img_or_tensor: Union[Image.Image, torch.Tensor, np.ndarray], path: Union[str, os.PathLike],
    text: Optional[Dict[str, str]] = None,
) -> Path:
    """Write an image so that ``path`` is either the old file or the complete new one, never partial.

    ``img_or_tensor`` is a PIL image (saved as is), a tensor accepted by :func:`to_pil`
    (``[0, 1]``), or a numpy array accepted by :func:`load_image`; the last two are written as
    8-bit images. The format comes from the suffix (no suffix: PNG). ``text``: key/value text
    chunks stored in a PNG (read back by :func:`read_png_text`). Written through
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


    extra: Dict[str, Any] = {}
    if text and fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
        extra["pnginfo"] = info

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            img.save(f, format=fmt, **extra)

    return atomic_write(path, write)


def read_png_text(path: Union[str, os.PathLike]) -> Optional[Dict[str, str]]:
    """The text chunks of a PNG that decodes whole, or None when the file is missing, truncated,
    corrupt or not a PNG (a broken output is as good as none)."""
    try:
        with _strict_truncation(), Image.open(path) as im:
            if im.format != "PNG":
                return None
            im.load()  # decodes every pixel: a truncated file fails here
            return {k: v for k, v in getattr(im, "text", {}).items() if isinstance(v, str)}
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
