"""PSNR/SSIM: known values, layouts, agreement with scikit-image."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dehazeddpm.metrics import psnr, ssim

skmetrics = pytest.importorskip("skimage.metrics")
skdata = pytest.importorskip("skimage.data")


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(skmetrics.structural_similarity(
        a, b, channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return skdata.astronaut()[100:228, 150:310].astype(np.float64) / 255.0  # 128x160x3


def test_psnr_known_values():
    a = np.full((8, 8, 3), 0.25)
    assert psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-9)  # MSE 0.01
    assert psnr(a, a + 0.01) == pytest.approx(40.0, abs=1e-9)
    assert psnr(a * 255, a * 255 + 25.5, data_range=255.0) == pytest.approx(20.0, abs=1e-9)
    # half the pixels off by 0.2: MSE 0.02
    b = a.copy()
    b[:4] += 0.2
    assert psnr(a, b) == pytest.approx(10 * math.log10(1 / 0.02), abs=1e-9)


def test_psnr_identical_is_inf():
    x = torch.rand(1, 3, 5, 5)
    assert psnr(x, x.clone()) == math.inf


def test_layouts_agree(photo):
    noisy = np.clip(photo + np.random.default_rng(0).normal(0, 0.05, photo.shape), 0, 1)
    ref_p, ref_s = psnr(photo, noisy), ssim(photo, noisy)
    chw = lambda x: torch.from_numpy(x).permute(2, 0, 1)  # noqa: E731
    for a, b in [(chw(photo), chw(noisy)), (chw(photo)[None], chw(noisy)[None]),
                 (chw(photo).float(), chw(noisy).float())]:
        assert psnr(a, b) == pytest.approx(ref_p, abs=1e-4)
        assert ssim(a, b) == pytest.approx(ref_s, abs=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))
    with pytest.raises(TypeError, match="float"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="11x11"):
        ssim(np.zeros((10, 30, 3)), np.zeros((10, 30, 3)))


def test_ssim_identical_is_one(photo):
    assert ssim(photo, photo) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("kind", ["noise", "offset", "contrast", "blur", "unrelated"])
def test_ssim_matches_skimage(photo, kind):
    rng = np.random.default_rng(1)
    if kind == "noise":
        other = np.clip(photo + rng.normal(0, 0.1, photo.shape), 0, 1)
    elif kind == "offset":
        other = np.clip(photo + 0.1, 0, 1)
    elif kind == "contrast":
        other = 0.5 * photo + 0.3
    elif kind == "blur":
        other = (photo + np.roll(photo, 1, 0) + np.roll(photo, 1, 1) + np.roll(photo, -1, 0)) / 4
    else:
        other = rng.random(photo.shape)
    expected = _sk_ssim(photo, other)
    assert ssim(photo, other) == pytest.approx(expected, abs=1e-6)  # brief asks 1e-3; we match to float64
    # float32 tensors (the pipeline's dtype) agree as well
    t32 = lambda x: torch.from_numpy(x).float().permute(2, 0, 1)  # noqa: E731
    assert ssim(t32(photo), t32(other)) == pytest.approx(expected, abs=1e-3)


def test_ssim_is_per_channel_mean(photo):
    other = photo.copy()
    other[..., 1] = np.clip(other[..., 1] + 0.3, 0, 1)  # only green changes
    per_channel = [ssim(photo[..., c], other[..., c]) for c in range(3)]
    assert ssim(photo, other) == pytest.approx(np.mean(per_channel), abs=1e-12)
    assert per_channel[0] == pytest.approx(1.0) and per_channel[1] < 0.99


def test_lab_matches_skimage_and_known_colours():
    from dehazeddpm.metrics import mean_ab, rgb_to_lab

    color = pytest.importorskip("skimage.color")
    x = torch.rand(1, 3, 12, 17, generator=torch.Generator().manual_seed(0))
    ref = color.rgb2lab(x[0].permute(1, 2, 0).numpy().astype(np.float64))
    assert np.abs(rgb_to_lab(x)[0].permute(1, 2, 0).numpy() - ref).max() < 1e-3
    white = rgb_to_lab(torch.ones(3, 2, 2))[0, :, 0, 0]
    assert abs(float(white[0]) - 100) < 1e-3 and float(white[1:].abs().max()) < 1e-2
    a, b = mean_ab(torch.tensor([0.2, 0.3, 0.8]).view(3, 1, 1).expand(3, 4, 4))
    assert b < -30  # blue: strongly negative b*
    with pytest.raises(ValueError):
        rgb_to_lab(torch.rand(1, 2, 4, 4))
