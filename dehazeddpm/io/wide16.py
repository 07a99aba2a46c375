"""Full 16-bit precision for RGB(A) PNG and uncompressed TIFF, which Pillow decodes to 8 bits.

Pillow opens a 16-bit RGB file as an 8-bit "RGB" image, keeping only the high byte of each
sample. :func:`wide_low_bytes` decodes the file a second time with the byte-swapped unpacker to
recover the low bytes; :mod:`dehazeddpm.io.images` joins the two.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["WIDE_RAWMODES", "exif_transposed", "wide_low_bytes", "wide_rawmode"]


def exif_transposed(img: Image.Image) -> Image.Image:
    """``img`` turned upright by its EXIF orientation (itself when it has none)."""
    transposed = ImageOps.exif_transpose(img)
    return img if transposed is None else transposed


# 16-bit RGB(A) rawmodes and their byte-swapped twins (see wide_low_bytes)
WIDE_RAWMODES = {"RGB;16B": "RGB;16L", "RGB;16L": "RGB;16B", "RGBA;16B": "RGBA;16L", "RGBA;16L": "RGBA;16B"}


def _tile_rawmode(tile) -> str | None:
    args = tile.args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def wide_rawmode(img: Image.Image, tiles: list) -> str | None:
    """The 16-bit RGB(A) rawmode of an image Pillow is about to squeeze into 8 bits, else None."""
    if img.mode not in ("RGB", "RGBA") or not tiles:
        return None
    # only codecs whose unpacking we understand: PNG's zip and uncompressed TIFF's raw
    if any(t.codec_name not in ("zip", "raw") for t in tiles):
        return None
    modes = {_tile_rawmode(t) for t in tiles}
    if len(modes) != 1:
        return None
    mode = modes.pop()
    return mode if mode in WIDE_RAWMODES else None


def wide_low_bytes(path: Path, rawmode: str) -> np.ndarray | None:
    """Low bytes of a 16-bit RGB(A) PNG/TIFF, which Pillow (13 included) drops when opening it as RGB(A).

    Pillow decodes (and for PNG unfilters) whole 16-bit pixels, then its "RGB;16B" unpacker keeps
    only the high byte of each sample. Decoding a second time with the byte-swapped unpacker
    ("RGB;16L": same 48/64-bit pixel, so identical unfiltering) picks the other byte of every
    sample. Returns None if this Pillow does not allow the trick; the caller then keeps 8 bits.
    """
    swapped = WIDE_RAWMODES[rawmode]
    try:
        with Image.open(path) as img:
            tiles = []
            for t in img.tile:
                args = swapped if isinstance(t.args, str) else (swapped, *t.args[1:])
                tiles.append(t._replace(args=args))
            img.tile = tiles
            img.load()
            return np.asarray(exif_transposed(img))
    except Exception:  # any failure: fall back to Pillow's 8-bit decode
        return None
