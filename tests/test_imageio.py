"""Image I/O: every input kind and mode, error reporting, atomic saving, [0,1] <-> [-1,1]."""
from __future__ import annotations

import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from dehazeddpm.io import images as imageio
from dehazeddpm.io.images import ImageReadError, load_image, save_image_atomic, to_pil, to_signed, to_unit


def _rgb_u8(h: int = 6, w: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _as_hwc(t: torch.Tensor) -> np.ndarray:
    assert t.ndim == 4 and t.shape[:2] == (1, 3) and t.dtype == torch.float32
    return t[0].permute(1, 2, 0).numpy()


def _png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (gray/RGB/RGBA) written by hand, cycling through all five row filters so the
    decoder's Sub/Up/Average/Paeth unfiltering is exercised with 16-bit (6/8-byte) pixels."""
    h, w, c = arr.shape
    colour_type = {1: 0, 3: 2, 4: 6}[c]
    bpp = 2 * c
    rows = [np.frombuffer(arr[y].astype(">u2").tobytes(), dtype=np.uint8).astype(np.int64) for y in range(h)]
    out = b""
    prior = np.zeros_like(rows[0])
    for y, raw in enumerate(rows):
        ftype = y % 5
        left = np.concatenate([np.zeros(bpp, np.int64), raw[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int64), prior[:-bpp]])
        if ftype == 0:
            pred = np.zeros_like(raw)
        elif ftype == 1:
            pred = left
        elif ftype == 2:
            pred = prior
        elif ftype == 3:
            pred = (left + prior) // 2
        else:
            p = left + prior - upleft
            pa, pb, pc = np.abs(p - left), np.abs(p - prior), np.abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prior, upleft))
        out += bytes([ftype]) + ((raw - pred) % 256).astype(np.uint8).tobytes()
        prior = raw

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(out)) + chunk(b"IEND", b"")


# ------------------------------------------------------------------------------ files and modes
def test_rgb_png_roundtrip_is_exact(tmp_path):
    a = _rgb_u8()
    Image.fromarray(a).save(tmp_path / "x.png")
    t = load_image(tmp_path / "x.png")
    assert t.shape == (1, 3, 6, 5)
    np.testing.assert_array_equal(np.round(_as_hwc(t) * 255).astype(np.uint8), a)
    assert load_image(str(tmp_path / "x.png")).equal(t)  # str and Path alike


def test_grayscale_l_is_replicated(tmp_path):
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(g).save(tmp_path / "g.png")
    out = _as_hwc(load_image(tmp_path / "g.png"))
    for c in range(3):
        np.testing.assert_allclose(out[:, :, c], g / 255.0, atol=1e-7)


def test_bilevel_mode_1(tmp_path):
    img = Image.new("1", (3, 2), 0)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "b.png")
    out = _as_hwc(load_image(tmp_path / "b.png"))
    assert out[0, 1].tolist() == [1.0, 1.0, 1.0] and out.sum() == 3.0


def test_rgba_and_la_are_composited_over_white(tmp_path):
    Image.new("RGBA", (2, 2), (255, 0, 0, 128)).save(tmp_path / "rgba.png")
    a = 128 / 255
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "rgba.png"))[0, 0], [1.0, 1 - a, 1 - a], atol=1e-6)
    Image.new("LA", (2, 2), (0, 64)).save(tmp_path / "la.png")
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "la.png"))[1, 1], [1 - 64 / 255] * 3, atol=1e-6)
    # fully transparent -> white whatever the colour
    Image.new("RGBA", (2, 2), (10, 20, 30, 0)).save(tmp_path / "clear.png")
    assert float(load_image(tmp_path / "clear.png").min()) == 1.0


def test_palette_with_and_without_transparency(tmp_path):
    rgb = Image.fromarray(_rgb_u8(8, 8))
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(tmp_path / "p.png")
    expected = np.asarray(pal.convert("RGB")) / 255.0
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "p.png")), expected, atol=1e-6)

    p2 = Image.new("P", (2, 1))
    p2.putpalette([0, 0, 255, 255, 0, 0] + [0] * 762)
    p2.putpixel((1, 0), 1)
    p2.info["transparency"] = 0
    p2.save(tmp_path / "pt.png", transparency=0)
    out = _as_hwc(load_image(tmp_path / "pt.png"))
    np.testing.assert_allclose(out[0, 0], [1, 1, 1])  # transparent index -> white, not blue
    np.testing.assert_allclose(out[0, 1], [1, 0, 0])


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (3, 3), (0, 255, 255, 0))  # pure red in CMYK
    img.save(tmp_path / "c.tif")
    out = _as_hwc(load_image(tmp_path / "c.tif"))
    np.testing.assert_allclose(out[1, 1], [1, 0, 0], atol=1e-6)


def test_16bit_grayscale_png_keeps_precision(tmp_path):
    g = np.array([[0, 1000, 1001], [30000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = _as_hwc(load_image(tmp_path / "g16.png"))[:, :, 0]
    np.testing.assert_allclose(out, g / 65535.0, rtol=0, atol=1e-7)
    assert out[0, 1] != out[0, 2]  # 1000 and 1001 would collapse at 8 bits


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16bit_png_all_filters_full_precision(tmp_path, channels):
    rng = np.random.default_rng(channels)
    a = rng.integers(0, 65536, (9, 7, channels), dtype=np.uint16)
    if channels == 4:
        a[..., 3] = 65535  # opaque, so the colour values are checked as such
    a[0, 0, 0] = 1000
    (tmp_path / "x16.png").write_bytes(_png16(a))
    out = _as_hwc(load_image(tmp_path / "x16.png"))
    expected = (a[..., :3] if channels > 1 else np.repeat(a, 3, axis=2)) / 65535.0
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)
    assert abs(out[0, 0, 0] - 1000 / 65535) < 1e-7


def test_16bit_rgba_png_alpha_composited(tmp_path):
    a = np.zeros((2, 2, 4), dtype=np.uint16)
    a[..., 0] = 65535
    a[..., 3] = 32768
    (tmp_path / "a16.png").write_bytes(_png16(a))
    alpha = 32768 / 65535
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "a16.png"))[0, 0], [1, 1 - alpha, 1 - alpha], atol=1e-6)


def test_int32_and_float_modes(tmp_path):
    Image.fromarray(np.array([[1000, 65535]], dtype=np.int32)).save(tmp_path / "i.tif")
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "i.tif"))[0, :, 0], [1000 / 65535, 1.0], atol=1e-7)
    Image.fromarray(np.array([[0.25, 0.75]], dtype=np.float32)).save(tmp_path / "f.tif")
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "f.tif"))[0, :, 1], [0.25, 0.75], atol=1e-7)


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), dtype=np.uint8)  # H=20, W=40
    a[:8, :8] = (255, 0, 0)  # red block at the stored top-left
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    t = load_image(tmp_path / "rot.jpg")
    assert t.shape == (1, 3, 40, 20)
    out = _as_hwc(t)
    # rotating clockwise moves the top-left block to the top-right
    assert out[:6, -6:, 0].mean() > 0.9 and out[:6, -6:, 1].mean() < 0.1
    assert out[:6, :6, 0].mean() < 0.1
    # a PIL image carrying the same EXIF is rotated too
    assert load_image(Image.open(tmp_path / "rot.jpg")).shape == (1, 3, 40, 20)


def test_one_pixel_image(tmp_path):
    Image.new("RGB", (1, 1), (255, 0, 51)).save(tmp_path / "one.png")
    np.testing.assert_allclose(_as_hwc(load_image(tmp_path / "one.png"))[0, 0], [1, 0, 0.2], atol=1e-6)


# ------------------------------------------------------------------------------ broken files
def _assert_read_error(path: Path) -> ImageReadError:
    with pytest.raises(ImageReadError) as info:
        load_image(path)
    assert str(path) in str(info.value)
    assert info.value.path == path
    assert isinstance(info.value, ValueError)
    return info.value


def test_truncated_png_and_jpeg(tmp_path):
    for name in ("t.png", "t.jpg"):
        Image.fromarray(_rgb_u8(64, 64)).save(tmp_path / f"full_{name}")
        data = (tmp_path / f"full_{name}").read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) // 2])
        _assert_read_error(tmp_path / name)


def test_truncation_detected_even_with_load_truncated_images(tmp_path, monkeypatch):
    Image.fromarray(_rgb_u8(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    _assert_read_error(tmp_path / "t.png")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_text_empty_missing_and_directory(tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image\n")
    _assert_read_error(tmp_path / "notes.png")
    (tmp_path / "empty.png").write_bytes(b"")
    assert "empty" in str(_assert_read_error(tmp_path / "empty.png"))
    _assert_read_error(tmp_path / "missing.png")
    (tmp_path / "dir.png").mkdir()
    _assert_read_error(tmp_path / "dir.png")


def test_read_error_survives_pickling_and_dataloader_reraise(tmp_path):
    err = ImageReadError("cannot read image 'x.png': bad", "x.png")
    back = pickle.loads(pickle.dumps(err))
    assert str(back) == str(err) and back.path == Path("x.png")
    assert str(type(err)("msg only")) == "msg only"  # DataLoader rebuilds errors as type(msg)


# ------------------------------------------------------------------------------ in-memory inputs
def test_numpy_inputs_all_layouts_and_dtypes():
    a = _rgb_u8()
    ref = a / 255.0
    np.testing.assert_allclose(_as_hwc(load_image(a)), ref, atol=1e-7)
    np.testing.assert_allclose(_as_hwc(load_image(a.astype(np.float64) / 255)), ref, atol=1e-7)
    np.testing.assert_allclose(_as_hwc(load_image(a[:, :, 0])), np.repeat(ref[:, :, :1], 3, 2), atol=1e-7)
    np.testing.assert_allclose(_as_hwc(load_image(a[:, :, :1])), np.repeat(ref[:, :, :1], 3, 2), atol=1e-7)
    rgba = np.concatenate([a, np.full(a.shape[:2] + (1,), 255, np.uint8)], axis=2)
    np.testing.assert_allclose(_as_hwc(load_image(rgba)), ref, atol=1e-7)
    u16 = np.array([[[1000, 0, 65535]]], dtype=np.uint16)
    np.testing.assert_allclose(_as_hwc(load_image(u16))[0, 0], [1000 / 65535, 0, 1], atol=1e-7)
    assert _as_hwc(load_image(np.array([[True, False]])))[0].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert load_image(np.zeros((3, 4, 3), np.float16)).dtype == torch.float32


def test_float_out_of_range_is_refused_not_clamped():
    with pytest.raises(ValueError, match="to_unit"):
        load_image(np.full((4, 4, 3), -0.5, np.float32))  # a [-1, 1] image
    with pytest.raises(ValueError, match="255"):
        load_image(torch.full((3, 4, 4), 200.0))
    with pytest.raises(ValueError, match="NaN"):
        load_image(np.full((4, 4, 3), np.nan))
    # rounding slack is clamped
    assert float(load_image(np.full((2, 2, 3), 1.0000001)).max()) == 1.0


def test_tensor_inputs():
    a = _rgb_u8()
    chw = torch.from_numpy(a).permute(2, 0, 1)
    ref = load_image(a)
    assert load_image(chw).equal(ref)  # uint8 CxHxW
    assert load_image(chw.float() / 255).sub(ref).abs().max() < 1e-7
    assert load_image((chw.float() / 255)[None]).sub(ref).abs().max() < 1e-7
    gray = torch.rand(4, 5)
    assert load_image(gray).equal(gray.expand(3, 4, 5)[None])
    assert load_image(gray[None]).equal(gray.expand(3, 4, 5)[None])
    x = torch.rand(3, 4, 5, requires_grad=True)
    assert not load_image(x).requires_grad
    with pytest.raises(ValueError, match="channels-first"):
        load_image(torch.rand(5, 6, 3))
    with pytest.raises(ValueError, match="batch"):
        load_image(torch.rand(2, 3, 4, 5))


def test_pil_input_and_bad_types():
    a = _rgb_u8()
    assert load_image(Image.fromarray(a)).equal(load_image(a))
    assert load_image(Image.fromarray(a).convert("CMYK")).shape == (1, 3, 6, 5)
    with pytest.raises(TypeError):
        load_image(42)  # type: ignore[arg-type]


def test_is_image_file():
    for name in ("a.png", "b.JPG", "c.jpeg", "d.bmp", "e.tif", "f.TIFF", "g.webp", "h.ppm", "i.pgm"):
        assert imageio.is_image_file(name), name
    for name in ("a.txt", "b", "c.png.tmp", "d.gif", ".png"):
        assert not imageio.is_image_file(name), name


# ------------------------------------------------------------------------------ output
def test_to_pil_rounds_and_clamps():
    t = torch.tensor([0.0, 0.5 / 255, 1.5 / 255, 0.4, 1.2, -0.3]).view(1, 1, 6).expand(3, 1, 6)
    arr = np.asarray(to_pil(t))
    assert arr.shape == (1, 6, 3)
    # round half to even, like the reference's np.round in tensor2img
    assert arr[0, :, 0].tolist() == [0, 0, 2, 102, 255, 0]
    assert to_pil(t[None]).mode == "RGB"
    assert to_pil(torch.rand(1, 4, 5)).mode == "L" and to_pil(torch.rand(1, 4, 5)).size == (5, 4)
    a = _rgb_u8()
    np.testing.assert_array_equal(np.asarray(to_pil(load_image(a))), a)  # exact uint8 round trip
    with pytest.raises(ValueError):
        to_pil(torch.rand(2, 4, 5))


def test_save_image_atomic_roundtrip_and_no_temp_files(tmp_path):
    t = load_image(_rgb_u8(16, 12))
    out = save_image_atomic(t, tmp_path / "sub" / "x.png")
    assert out == tmp_path / "sub" / "x.png"
    assert load_image(out).equal(t)
    assert os.listdir(tmp_path / "sub") == ["x.png"]
    # overwrite in place, other input kinds, format from suffix
    save_image_atomic(Image.new("RGBA", (3, 3), (0, 0, 255, 255)), tmp_path / "sub" / "x.png")
    assert load_image(out).shape == (1, 3, 3, 3)
    save_image_atomic(_rgb_u8(), tmp_path / "sub" / "y.jpg")
    assert Image.open(tmp_path / "sub" / "y.jpg").format == "JPEG"
    save_image_atomic(t, tmp_path / "sub" / "noext")
    assert Image.open(tmp_path / "sub" / "noext").format == "PNG"
    assert sorted(os.listdir(tmp_path / "sub")) == ["noext", "x.png", "y.jpg"]
    mode = os.stat(out).st_mode & 0o777
    assert mode & 0o044 == 0o044 or os.name == "nt"  # not mkstemp's private 0600
    with pytest.raises(ValueError, match="extension"):
        save_image_atomic(t, tmp_path / "sub" / "z.unknownext")


def test_save_image_atomic_failure_keeps_old_file_and_cleans_up(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    save_image_atomic(torch.zeros(3, 4, 4), path)
    before = path.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG partial")
        raise KeyboardInterrupt  # even an interrupt must not leave debris

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        save_image_atomic(torch.ones(3, 4, 4), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["keep.png"]


# ------------------------------------------------------------------------------ value spaces
def test_to_signed_to_unit():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert to_signed(x).tolist() == [-1.0, -0.5, 0.0, 1.0]
    assert to_unit(torch.tensor([-1.0, 0.0, 1.0])).tolist() == [0.0, 0.5, 1.0]
    r = torch.rand(10000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(to_signed(r), r / 0.5 - 1)  # bit-exact with the reference's J / 0.5 - 1
    assert (to_unit(to_signed(r)) - r).abs().max() < 1e-7
    a = np.linspace(0, 1, 5)
    np.testing.assert_allclose(to_signed(a), 2 * a - 1)
    assert to_unit(1.0) == 1.0 and to_signed(0.5) == 0.0


@pytest.mark.parametrize("byteorder", ["<", ">"])
def test_16bit_rgb_tiff_full_precision(tmp_path, byteorder):
    tifffile = pytest.importorskip("tifffile")  # only to write the fixture; Pillow cannot
    a = np.random.default_rng(2).integers(0, 65536, (15, 11, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x16.tif", a, photometric="rgb", byteorder=byteorder, rowsperstrip=4)
    out = _as_hwc(load_image(tmp_path / "x16.tif"))
    np.testing.assert_allclose(out, a / 65535.0, rtol=0, atol=1e-7)


def test_float_files_follow_one_stated_rule(tmp_path):
    """Float TIFFs: [0, 1] as is; whole numbers up to 255 are 8-bit data; other values are refused
    (never divided by 255 blindly)."""
    ramp = np.linspace(0, 1, 48, dtype=np.float32).reshape(6, 8)
    Image.fromarray(ramp).save(tmp_path / "unit.tif")
    torch.testing.assert_close(load_image(tmp_path / "unit.tif")[0, 0], torch.from_numpy(ramp))
    Image.fromarray(np.round(ramp * 255)).save(tmp_path / "eight.tif")
    torch.testing.assert_close(load_image(tmp_path / "eight.tif")[0, 0], torch.from_numpy(np.round(ramp * 255) / 255))
    Image.fromarray(ramp * 1.2).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match=r"hdr\.tif.*\[0, 1\.2\].*expected \[0, 1\]"):
        load_image(tmp_path / "hdr.tif")


def test_pixel_limit_refuses_before_decoding(tmp_path, monkeypatch):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv("DEHAZEDDPM_MAX_PIXELS", "50000")
    with pytest.raises(ImageReadError, match=r"300 x 200 = 60,000 pixels, more than the limit of 50,000"):
        load_image(tmp_path / "big.png")
    monkeypatch.setenv("DEHAZEDDPM_MAX_PIXELS", "0")  # 0: Pillow's own guard only
    assert load_image(tmp_path / "big.png").shape == (1, 3, 200, 300)
    assert load_image(tmp_path / "big.png", max_pixels=60_000).shape == (1, 3, 200, 300)


def test_a_corrupt_exif_warning_names_the_file(tmp_path):
    import io as _io
    import warnings

    buf = _io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
        buf, "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\xff\xff")
    path = tmp_path / "bad_exif.jpg"
    path.write_bytes(buf.getvalue())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_image(path).shape == (1, 3, 8, 8)
    assert caught and all(str(path) in str(w.message) for w in caught)
