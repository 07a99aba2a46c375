"""Synthetic haze: the scattering model, depth cues, built-in photo splits, the eval set."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dehazeddpm import data as haze
from dehazeddpm.io import images as imageio
from dehazeddpm.metrics import psnr

pytest.importorskip("skimage.data")


def _photo(h: int = 24, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def eval_photos():
    return haze.builtin_photos("eval")


def test_scattering_model_exact():
    j = _photo()
    depth = torch.linspace(0.5, 4.0, 24 * 32).view(24, 32)
    s = haze.synthesize_haze(j, depth, beta=1.3, airlight=(0.9, 0.85, 0.8))
    d = depth / depth.max()
    t = torch.exp(-1.3 * d)[None]
    a = torch.tensor([0.9, 0.85, 0.8]).view(3, 1, 1)
    assert torch.equal(s.depth, d)
    assert torch.equal(s.transmission, t)
    assert torch.equal(s.hazy, (j * t + a * (1 - t)).clamp(0, 1))
    assert torch.equal(s.airlight, a) and torch.equal(s.clear, j) and s.beta == 1.3
    assert s.hazy.shape == (3, 24, 32) and s.transmission.shape == (1, 24, 32) and s.airlight.shape == (3, 1, 1)
    assert float(s.transmission.min()) > 0 and float(s.transmission.max()) <= 1
    # depth ratios are kept: the nearest pixel is at 0.5 / 4 of the way
    assert float(s.transmission.max()) == pytest.approx(np.exp(-1.3 * 0.125), rel=1e-6)


def test_batched_input_scalar_airlight_and_constant_depth():
    j = _photo()
    s = haze.synthesize_haze(j[None], torch.full((24, 32), 7.0), beta=0.9, airlight=0.8)
    assert s.hazy.shape == (3, 24, 32)
    assert torch.allclose(s.transmission, torch.full((1, 24, 32), float(np.exp(-0.9))))
    assert s.airlight.flatten().tolist() == pytest.approx([0.8] * 3)


def test_beta_zero_is_clear_and_far_pixels_tend_to_airlight():
    j = _photo()
    depth = torch.rand(24, 32) + 0.1
    assert torch.equal(haze.synthesize_haze(j, depth, beta=0.0, airlight=0.9).hazy, j)
    thick = haze.synthesize_haze(j, torch.ones(24, 32), beta=40.0, airlight=(0.9, 0.8, 0.7))
    assert torch.allclose(thick.hazy, thick.airlight.expand(3, 24, 32), atol=1e-6)


def test_larger_beta_lowers_psnr(eval_photos):
    clear, depth = eval_photos["motorcycle"]
    values = [psnr(haze.synthesize_haze(clear, depth, beta=b, airlight=0.9).hazy, clear) for b in (0.3, 0.8, 1.5, 2.5)]
    assert all(x > y for x, y in zip(values, values[1:])), values


def test_invalid_inputs():
    j = _photo()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        haze.synthesize_haze(j * 2 - 1, None, beta=1.0, airlight=0.9)  # a [-1, 1] image
    with pytest.raises(ValueError, match="depth"):
        haze.synthesize_haze(j, torch.ones(5, 5), beta=1.0, airlight=0.9)
    with pytest.raises(ValueError, match="beta"):
        haze.synthesize_haze(j, None, beta=-1.0, airlight=0.9)
    with pytest.raises(ValueError, match="airlight"):
        haze.synthesize_haze(j, None, beta=1.0, airlight=(0.9, 0.9))
    with pytest.raises(ValueError, match="normalize_depth"):
        haze.synthesize_haze(j, torch.full((24, 32), 3.0), beta=1.0, airlight=0.9, normalize_depth=False)


def test_nonfinite_depth_counts_as_far():
    depth = torch.ones(24, 32) * 0.5
    depth[0, 0] = float("inf")
    depth[0, 1] = float("nan")
    depth[1, 1] = 2.0
    s = haze.synthesize_haze(_photo(), depth, beta=1.0, airlight=0.9)
    assert s.depth[0, 0] == 1.0 and s.depth[0, 1] == 1.0 and s.depth[2, 2] == 0.25


def test_random_params_ranges_and_determinism():
    g = torch.Generator().manual_seed(0)
    draws = [haze.random_haze_params(g) for _ in range(300)]
    betas = np.array([b for b, _ in draws])
    air = np.array([a for _, a in draws])
    assert betas.min() >= haze.BETA_RANGE[0] and betas.max() <= haze.BETA_RANGE[1]
    assert betas.max() - betas.min() > 0.8 * (haze.BETA_RANGE[1] - haze.BETA_RANGE[0])
    assert air.min() >= haze.AIRLIGHT_RANGE[0] - haze.AIRLIGHT_TINT and air.max() <= 1.0
    assert np.abs(air - air.mean(axis=1, keepdims=True)).max() <= 2 * haze.AIRLIGHT_TINT  # a slight tint only
    assert haze.random_haze_params(torch.Generator().manual_seed(5)) == haze.random_haze_params(
        torch.Generator().manual_seed(5))
    # beta/airlight left out are drawn from the generator
    s1 = haze.synthesize_haze(_photo(), None, generator=torch.Generator().manual_seed(3))
    s2 = haze.synthesize_haze(_photo(), None, generator=torch.Generator().manual_seed(3))
    assert s1.beta == s2.beta and torch.equal(s1.hazy, s2.hazy)


def test_typical_haze_strength(eval_photos):
    """Random haze on real photos lands mostly in the 10-17 dB band promised by BETA_RANGE."""
    g = torch.Generator().manual_seed(0)
    values = []
    for _ in range(4):
        for clear, depth in eval_photos.values():
            small = clear[:, ::4, ::4]
            d = None if depth is None else depth[::4, ::4]
            values.append(psnr(haze.synthesize_haze(small, d, generator=g).hazy, small))
    assert 9.0 < float(np.median(values)) < 17.5, values


def test_depth_prior_shape_range_and_vertical_cue():
    flat = torch.full((3, 40, 30), 0.5)
    d = haze.depth_prior(flat)
    assert d.shape == (40, 30)
    assert float(d.min()) == 0.0 and float(d.max()) == pytest.approx(1.0)
    rows = d.mean(dim=1)
    assert bool((rows[1:] <= rows[:-1] + 1e-6).all())  # the top is farther
    # bright unsaturated (sky-like) regions count as farther than dark ones at the same height
    img = torch.full((3, 40, 60), 0.1)
    img[:, :, 30:] = 0.95
    d2 = haze.depth_prior(img)
    assert float(d2[:, 45:].mean()) > float(d2[:, :15].mean())
    big = haze.depth_prior(torch.rand(3, 300, 500))  # computed at low resolution, returned full size
    assert big.shape == (300, 500) and torch.isfinite(big).all()


def test_disparity_to_depth_monotone_and_invalid_filled():
    disp = np.array([[10.0, 20.0, 40.0, 80.0]])
    depth = haze.disparity_to_depth(disp).numpy()[0]
    assert np.all(np.diff(depth) < 0)  # larger disparity -> nearer
    np.testing.assert_allclose(depth, [1.0, 0.5, 0.25, 0.125], rtol=1e-6)
    with_offs = haze.disparity_to_depth(disp, doffs=10.0).numpy()[0]
    np.testing.assert_allclose(with_offs, [1.0, 20 / 30, 20 / 50, 20 / 90], rtol=1e-6)
    # occlusion holes take the farther (smaller-disparity) neighbour on their row
    holes = np.array([[40.0, np.inf, 10.0, 0.0], [np.nan, np.nan, np.nan, np.nan], [20.0, -1.0, 20.0, 40.0]])
    d = haze.disparity_to_depth(torch.from_numpy(holes)).numpy()
    assert np.isfinite(d).all() and d.max() == 1.0 and d.min() > 0
    assert d[0, 1] == d[0, 2] == d[0, 3] == 1.0  # filled with disparity 10, the farthest
    assert (d[1] == 1.0).all()  # a row without data: the farthest depth in the map
    assert d[2, 1] == d[2, 0]
    with pytest.raises(ValueError):
        haze.disparity_to_depth(np.zeros((2, 2)))


def test_motorcycle_real_depth(eval_photos):
    clear, depth = eval_photos["motorcycle"]
    assert clear.shape == (3, 500, 741) and depth.shape == (500, 741)
    assert torch.isfinite(depth).all() and float(depth.max()) == 1.0 and float(depth.min()) > 0.3


def test_builtin_split_sets_are_disjoint(eval_photos):
    every_train = haze.TRAIN_PHOTOS + haze.MORE_TRAIN_PHOTOS
    assert set(every_train).isdisjoint(haze.EVAL_PHOTOS) and set(haze.TRAIN_PHOTOS).isdisjoint(haze.MORE_TRAIN_PHOTOS)
    assert len(haze.TRAIN_PHOTOS) == 16 and len(haze.MORE_TRAIN_PHOTOS) == 2 and len(haze.EVAL_PHOTOS) == 3
    assert set(haze.WHEEL_PHOTOS) <= set(every_train) | set(haze.INDEPENDENT_PHOTOS)
    # photos reserved for independent evaluation: in no training split (what training reads) nor the eval one
    assert set(haze.INDEPENDENT_PHOTOS).isdisjoint(every_train + haze.EVAL_PHOTOS) and "independent" not in haze.PHOTO_SPLITS
    assert list(haze.builtin_photos("independent")) == ["grace_hopper"]
    from dehazeddpm.training import TrainConfig
    for split in ("independent", "judge", "eval"):
        with pytest.raises(ValueError, match="photos must be one of 'train', 'train_all', 'train_wide'.*never trained on"):
            TrainConfig.from_dict({"stage": "stage1", "photos": split})
    train = haze.builtin_photos("train_all")
    assert list(train) == list(every_train) and list(eval_photos) == list(haze.EVAL_PHOTOS)
    # "train" stays the 16 photos the shipped recipes trained on, the same tensors
    assert list(haze.builtin_photos("train")) == list(haze.TRAIN_PHOTOS)
    assert torch.equal(haze.builtin_photos("train")["coffee"][0], train["coffee"][0])
    for name, (clear, depth) in {**train, **eval_photos}.items():
        assert clear.dtype == torch.float32 and clear.ndim == 3 and clear.shape[0] == 3, name
        assert 0 <= float(clear.min()) and float(clear.max()) <= 1, name
        assert (depth is not None) == (name == "motorcycle"), name
    # no photo appears in both splits under another name (skimage's cat is chelsea, ...)
    data = pytest.importorskip("skimage.data")
    fingerprints = {name: clear[:, ::7, ::7].sum().item() for name, (clear, _) in train.items()}
    for name, (clear, _) in eval_photos.items():
        assert all(abs(clear[:, ::7, ::7].sum().item() - f) > 1e-3 for f in fingerprints.values()), name
    cat = imageio.load_image(data.cat())[0]
    assert torch.equal(cat, train["chelsea"][0]) and "cat" not in haze.EVAL_PHOTOS
    # callers get copies
    train["astronaut"][0].zero_()
    assert float(haze.builtin_photos("train")["astronaut"][0].max()) > 0
    with pytest.raises(ValueError, match="'train', 'train_all', 'train_wide', 'eval', 'independent', 'judge'"):
        haze.builtin_photos("test")


def test_wallpaper_photos_train_wide_and_judge_apart():
    """The shipped wallpaper photos: the CC BY / CC0 ones widen training, the CC BY-SA ones are only judged."""
    wide, judge = haze.builtin_photos("train_wide"), haze.builtin_photos("judge")
    assert list(wide) == list(haze.TRAIN_PHOTOS + haze.MORE_TRAIN_PHOTOS + haze.WIDE_TRAIN_PHOTOS)
    assert list(judge) == list(haze.JUDGE_PHOTOS) and "judge" not in haze.PHOTO_SPLITS
    assert set(haze.ASSET_PHOTOS) == set(haze.WIDE_TRAIN_PHOTOS) | set(haze.JUDGE_PHOTOS)
    for name in haze.ASSET_PHOTOS:  # the licence decides the split
        assert (name in haze.JUDGE_PHOTOS) == ("SA" in haze.ASSET_PHOTOS[name]), name
    readme = (Path(haze.__file__).resolve().parents[1] / "assets" / "photos" / "README.md").read_text()
    every_split = [*wide, *judge, *haze.EVAL_PHOTOS, *haze.INDEPENDENT_PHOTOS]
    assert len(every_split) == len(set(every_split))
    for name, (clear, depth) in {**{n: wide[n] for n in haze.WIDE_TRAIN_PHOTOS}, **judge}.items():
        assert f"`{name}.jpg`" in readme and depth is None, name
        assert clear.dtype == torch.float32 and clear.shape[0] == 3 and min(clear.shape[1:]) == 512, name
        # colour photos, not greyscale replicated (free, a grey room, is the least coloured: 0.027)
        assert float((clear.max(0).values - clear.min(0).values).mean()) > 0.02, name
    # the photos are different scenes from every earlier one
    fingerprints = {n: c[:, :64, :64].mean().item() for n, (c, _) in wide.items() if n not in haze.ASSET_PHOTOS}
    for name in haze.ASSET_PHOTOS:
        f = {**wide, **judge}[name][0][:, :64, :64].mean().item()
        assert all(abs(f - g) > 1e-4 for g in fingerprints.values()), name


def test_missing_scikit_image_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        haze.load_photo.__wrapped__("astronaut")  # the loader itself, past its cache


def test_wheel_photos_come_from_the_installed_packages(monkeypatch):
    """The photos other wheels ship are read from the installed package's files; a missing package
    is a clear ImportError naming what to install."""
    import importlib.util

    for name, (package, rel, licence) in haze.WHEEL_PHOTOS.items():
        clear, depth = haze.load_photo(name)
        assert clear.shape[0] == 3 and min(clear.shape[1:]) >= 300 and depth is None, name
        assert float(clear.std()) > 0.05 and licence, name  # a real photo, with its licence recorded
    # glymur's 2592x1456 street scene is halved on load, its aspect kept
    assert tuple(haze.load_photo("nemo")[0].shape) == (3, 728, 1296)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "pywt" else real(n, *a))
    with pytest.raises(ImportError, match="pip install PyWavelets"):
        haze.load_photo.__wrapped__("aero")


def test_sample_photos_of_other_libraries_stay_out_of_training():
    """matplotlib's and scikit-learn's sample photos are reserved for independent evaluation."""
    reserved = {"grace_hopper", "china", "flower"}
    every_train = haze.TRAIN_PHOTOS + haze.MORE_TRAIN_PHOTOS
    assert reserved.isdisjoint(every_train) and reserved.isdisjoint(haze.EVAL_PHOTOS)


def test_make_eval_set_is_deterministic(tmp_path):
    pairs = haze.make_eval_set(tmp_path / "a", size=64, seed=0)
    assert [h.stem for h, _ in pairs] == list(haze.EVAL_PHOTOS)
    for hazy_path, gt_path in pairs:
        assert hazy_path == tmp_path / "a" / "hazy" / f"{hazy_path.stem}.png"
        assert gt_path == tmp_path / "a" / "gt" / f"{hazy_path.stem}.png"
        hazy, gt = imageio.load_image(hazy_path), imageio.load_image(gt_path)
        assert hazy.shape == gt.shape and min(gt.shape[-2:]) == 64
        assert 7.0 < psnr(hazy, gt) < 25.0
    params = json.loads((tmp_path / "a" / "params.json").read_text())
    assert params["images"]["motorcycle"]["real_depth"] is True
    again = haze.make_eval_set(tmp_path / "b", size=64, seed=0)
    other = haze.make_eval_set(tmp_path / "c", size=64, seed=1)
    for (h1, g1), (h2, g2), (h3, _) in zip(pairs, again, other):
        assert h1.read_bytes() == h2.read_bytes() and g1.read_bytes() == g2.read_bytes()
        assert h1.read_bytes() != h3.read_bytes()
    # the hazy image is the scattering model applied to the saved 8-bit GT
    name = "rocket"
    beta, air = haze.eval_haze_params(name, 0)
    gt = imageio.load_image(tmp_path / "a" / "gt" / f"{name}.png")[0]
    hazy = imageio.load_image(tmp_path / "a" / "hazy" / f"{name}.png")[0]
    expected = haze.synthesize_haze(gt, None, beta=beta, airlight=air).hazy
    assert (hazy - expected).abs().max() <= 0.5 / 255 + 1e-6
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "a").rglob("*"))


def test_random_depth_field_is_smooth_bounded_and_seeded():
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    d = haze.random_depth_field(48, 64, generator=g())
    assert d.shape == (48, 64) and float(d.min()) >= 0 and float(d.max()) <= 1
    assert torch.equal(d, haze.random_depth_field(48, 64, generator=g()))
    assert float(d.max() - d.min()) > 0.05  # not flat: 9 uniform control values
    # smooth: neighbouring pixels differ far less than the field's range
    assert float((d[:, 1:] - d[:, :-1]).abs().max()) < 0.1 * float(d.max() - d.min()) + 0.02
    assert torch.equal(haze.random_depth_field(4, 5, grid=1, generator=g()),
                       torch.full((4, 5), float(torch.rand((), generator=g()))))
    with pytest.raises(ValueError):
        haze.random_depth_field(0, 4)
