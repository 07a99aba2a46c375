"""Datasets: pairing, error messages, aligned crops/flips, reproducibility."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dehazeddpm import data as haze
from dehazeddpm.data import datasets
from dehazeddpm.data.datasets import PairedFolderDataset, SyntheticHazeDataset, pair_key
from dehazeddpm.io.images import ImageReadError


def _coded_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB whose (R, G) encode the pixel position, so any crop can be located exactly."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[..., 0] = np.arange(h, dtype=np.uint8)[:, None]
    a[..., 1] = np.arange(w, dtype=np.uint8)[None, :]
    a[..., 2] = seed
    return a


def _write(folder, name, arr):
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(folder / name)


@pytest.fixture
def pair_dirs(tmp_path):
    hazy, gt = tmp_path / "hazy", tmp_path / "gt"
    for i in range(3):
        a = _coded_image(20, 30, seed=i)
        _write(hazy, f"{i:02d}.png", a)
        _write(gt, f"{i:02d}.png", a)  # gt == hazy: alignment is checkable pixel for pixel
    return hazy, gt


def test_pair_key():
    assert pair_key("01_hazy") == "01" and pair_key("01_GT") == "01" and pair_key("01_gt") == "01"
    assert pair_key("01_clean") == "01" and pair_key("01") == "01"
    assert pair_key("_gt") == "_gt"  # never strips a name down to nothing


def test_pairs_by_stem(pair_dirs):
    ds = PairedFolderDataset(*pair_dirs)
    assert len(ds) == 3
    item = ds[1]
    assert set(item) == {"hazy", "gt", "name"} and item["name"] == "01"
    assert item["hazy"].shape == (3, 20, 30) and item["hazy"].dtype == torch.float32
    assert float(item["hazy"][2].mean()) == pytest.approx(1 / 255)  # the file with seed 1
    assert torch.equal(item["hazy"], item["gt"])
    assert ds[-1]["name"] == "02"
    with pytest.raises(IndexError):
        ds[3]


def test_suffix_style_names_and_non_images_ignored(tmp_path):
    for i in range(2):
        _write(tmp_path / "h", f"{i}_hazy.png", _coded_image(8, 8, i))
        _write(tmp_path / "g", f"{i}_GT.jpg", _coded_image(8, 8, i))
    (tmp_path / "h" / "notes.txt").write_text("x")
    (tmp_path / "g" / ".0_GT.png.tmp").write_text("x")
    ds = PairedFolderDataset(tmp_path / "h", tmp_path / "g")
    assert [(h.name, g.name) for h, g in ds.pairs] == [("0_hazy.png", "0_GT.jpg"), ("1_hazy.png", "1_GT.jpg")]


def test_many_hazy_per_gt_with_custom_key(tmp_path):
    for name in ("0001_0.8_0.2.png", "0001_0.9_0.1.png", "0002_0.8_0.2.png"):
        _write(tmp_path / "h", name, _coded_image(8, 8))
    for name in ("0001.png", "0002.png"):
        _write(tmp_path / "g", name, _coded_image(8, 8))
    ds = PairedFolderDataset(tmp_path / "h", tmp_path / "g", key=lambda s: s.split("_")[0])
    assert [g.name for _, g in ds.pairs] == ["0001.png", "0001.png", "0002.png"]


def test_unmatched_files_are_listed_on_both_sides(tmp_path):
    # ("x_hazy" and "x_gt" would pair with each other: the suffixes are stripped)
    for name in ("a.png", "b.png", "c_hazy.png"):
        _write(tmp_path / "h", name, _coded_image(4, 4))
    for name in ("a.png", "b.png", "d_gt.png"):
        _write(tmp_path / "g", name, _coded_image(4, 4))
    with pytest.raises(ValueError) as info:
        PairedFolderDataset(tmp_path / "h", tmp_path / "g")
    msg = str(info.value)
    assert "c_hazy.png" in msg and "d_gt.png" in msg
    assert "a.png" not in msg and "b.png" not in msg


def test_folder_errors(tmp_path):
    _write(tmp_path / "h", "a.png", _coded_image(4, 4))
    _write(tmp_path / "g", "a.png", _coded_image(4, 4))
    _write(tmp_path / "g", "a_GT.jpg", _coded_image(4, 4))
    with pytest.raises(ValueError, match="a.png, a_GT.jpg"):
        PairedFolderDataset(tmp_path / "h", tmp_path / "g")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        PairedFolderDataset(tmp_path / "empty", tmp_path / "g")
    with pytest.raises(FileNotFoundError):
        PairedFolderDataset(tmp_path / "nope", tmp_path / "g")


def test_unreadable_and_mismatched_files_name_the_file(tmp_path):
    _write(tmp_path / "h", "a.png", _coded_image(4, 4))
    (tmp_path / "g").mkdir()
    (tmp_path / "g" / "a.png").write_bytes(b"not a png")
    ds = PairedFolderDataset(tmp_path / "h", tmp_path / "g")  # listing does not decode
    with pytest.raises(ImageReadError, match=str(tmp_path / "g" / "a.png")):
        ds[0]
    _write(tmp_path / "g", "a.png", _coded_image(5, 4))
    with pytest.raises(ValueError, match="size mismatch"):
        ds[0]


def test_crop_and_flip_keep_pairs_aligned(pair_dirs):
    full = PairedFolderDataset(*pair_dirs)[0]["hazy"]
    ds = PairedFolderDataset(*pair_dirs, crop=8, flip=True, seed=123)
    flips = 0
    seen = set()
    for epoch in range(20):
        ds.set_epoch(epoch)
        item = ds[0]
        hazy, gt = item["hazy"], item["gt"]
        assert hazy.shape == gt.shape == (3, 8, 8)
        assert torch.equal(hazy, gt)
        rows = (hazy[0] * 255).round().long()
        cols = (hazy[1] * 255).round().long()
        top = int(rows[0, 0])
        flipped = bool(cols[0, 0] > cols[0, -1])
        left = int(cols[0, -1] if flipped else cols[0, 0])
        expected = full[:, top:top + 8, left:left + 8]
        assert torch.equal(hazy, expected.flip(-1) if flipped else expected)  # a real window of the image
        flips += flipped
        seen.add((top, left))
    assert 3 <= flips <= 17 and len(seen) > 5


def test_seeded_crops_are_reproducible(pair_dirs):
    a = PairedFolderDataset(*pair_dirs, crop=8, flip=True, seed=7)
    b = PairedFolderDataset(*pair_dirs, crop=8, flip=True, seed=7)
    for i in range(3):
        assert torch.equal(a[i]["hazy"], b[i]["hazy"])
    a.set_epoch(1)
    assert any(not torch.equal(a[i]["hazy"], b[i]["hazy"]) for i in range(3))


def test_crop_larger_than_image(pair_dirs):
    with pytest.raises(ValueError, match="smaller than crop"):
        PairedFolderDataset(*pair_dirs, crop=25)[0]


def test_dataloader_with_workers(pair_dirs):
    ds = PairedFolderDataset(*pair_dirs, crop=8, flip=True, seed=0)
    batches = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert batches[0]["hazy"].shape == (2, 3, 8, 8) and batches[1]["name"] == ["02"]
    assert torch.equal(batches[0]["hazy"][1], ds[1]["hazy"])  # same item whichever process made it


# ------------------------------------------------------------------------------ synthetic
@pytest.fixture(scope="module")
def small_photos():
    g = torch.Generator().manual_seed(0)
    depth = torch.linspace(2.0, 1.0, 40)[:, None].expand(40, 50).contiguous()
    return {"p0": (torch.rand(3, 40, 50, generator=g), depth),
            "p1": (torch.rand(3, 36, 36, generator=g), None)}


def test_synthetic_items(small_photos):
    ds = SyntheticHazeDataset(small_photos, crop=16, length=10, seed=0)
    assert len(ds) == 10
    for i in range(10):
        item = ds[i]
        assert item["hazy"].shape == item["gt"].shape == (3, 16, 16)
        assert item["transmission"].shape == (1, 16, 16) and item["airlight"].shape == (3, 1, 1)
        for key in ("hazy", "gt", "transmission", "airlight"):
            assert item[key].dtype == torch.float32
            assert 0 <= float(item[key].min()) and float(item[key].max()) <= 1, key
        assert float(item["transmission"].min()) > 0
        t, a = item["transmission"], item["airlight"]
        assert torch.allclose(item["hazy"], (item["gt"] * t + a * (1 - t)).clamp(0, 1), atol=1e-6)
        assert haze.BETA_RANGE[0] <= float(item["beta"]) <= haze.BETA_RANGE[1]
        assert item["name"] in small_photos
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["hazy"].shape == (4, 3, 16, 16) and batch["airlight"].shape == (4, 3, 1, 1)


def test_synthetic_depth_scale_is_per_scene(small_photos):
    """Crops share their photo's depth scale: p0's nearest rows are never treated as far."""
    ds = SyntheticHazeDataset({"p0": small_photos["p0"]}, crop=16, length=30, seed=3)
    for i in range(30):
        item = ds[i]
        d_est = -torch.log(item["transmission"]) / item["beta"]
        assert float(d_est.min()) >= 0.5 - 1e-4 and float(d_est.max()) <= 1 + 1e-4


def test_synthetic_determinism(small_photos):
    a = SyntheticHazeDataset(small_photos, crop=16, length=20, seed=5)
    b = SyntheticHazeDataset(small_photos, crop=16, length=20, seed=5)
    for i in (0, 7, 19):
        for key in ("hazy", "gt", "transmission", "airlight"):
            assert torch.equal(a[i][key], b[i][key])
    # order of access does not matter: each index owns its generator
    assert torch.equal(a[7]["hazy"], a[7]["hazy"])
    c = SyntheticHazeDataset(small_photos, crop=16, length=20, seed=6)
    assert not torch.equal(a[7]["hazy"], c[7]["hazy"])
    a.set_epoch(1)
    assert not torch.equal(a[7]["hazy"], b[7]["hazy"])
    fixed = SyntheticHazeDataset(small_photos, crop=16, length=20, seed=5, fixed=True)
    before = fixed[7]["hazy"]
    fixed.set_epoch(3)
    assert torch.equal(fixed[7]["hazy"], before)
    assert torch.equal(fixed[7]["hazy"], b[7]["hazy"])  # epoch 0 == fixed


def test_synthetic_min_scale_sets_the_window_size():
    # a horizontal ramp: a crop's value range is the width of its source window over the photo's
    ramp = torch.linspace(0, 1, 200)[None, None, :].expand(3, 200, 200).contiguous()
    photos = {"ramp": (ramp, torch.ones(200, 200))}

    def mean_span(min_scale: float) -> float:
        ds = SyntheticHazeDataset(photos, crop=16, length=40, seed=1, min_scale=min_scale)
        return sum(float(ds[i]["gt"][0].max() - ds[i]["gt"][0].min()) for i in range(40)) / 40

    assert mean_span(1.0) == pytest.approx(15 / 199, abs=1e-5)  # windows are exact 16-pixel crops
    # scale ~ U(min_scale, 1), window 16 / scale: about 2.6x wider on average at 0.1, 1.4x at 0.5
    assert mean_span(0.1) > 2 * mean_span(1.0) and mean_span(0.1) > 1.4 * mean_span(0.5) > 1.4 * mean_span(1.0)
    with pytest.raises(ValueError, match="min_scale"):
        SyntheticHazeDataset(photos, crop=16, length=1, min_scale=0)


def test_synthetic_augment_permutes_channels_and_reshapes_depth():
    # three distinct constant channels: any channel order is visible in the crop's colour
    photo = torch.stack([torch.full((40, 40), v) for v in (0.1, 0.5, 0.9)])
    ramp = torch.linspace(0.05, 1, 40)[:, None].expand(40, 40).contiguous()
    plain = SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=30, seed=2, min_scale=1.0)
    aug = SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=30, seed=2, min_scale=1.0, augment=True)
    orders, exponents = set(), []
    for i in range(30):
        a, p = aug[i], plain[i]
        orders.add(tuple(round(float(v), 3) for v in a["gt"][:, 0, 0]))
        assert sorted(float(v) for v in a["gt"][:, 0, 0]) == pytest.approx([0.1, 0.5, 0.9], abs=1e-6)
        # same window (drawn before the augmentation), so d_aug = d ** k for one k per crop
        d_plain = -torch.log(p["transmission"][0]) / float(p["beta"])
        d_aug = -torch.log(a["transmission"][0]) / float(a["beta"])
        far = d_plain > 0.9  # log(d) -> 0: k is ill-conditioned there
        k = (torch.log(d_aug) / torch.log(d_plain))[~far]
        assert float(k.max() - k.min()) < 1e-2
        exponents.append(float(k.mean()))
    assert len(orders) >= 4  # six possible orders, 30 crops
    assert 0.5 - 1e-3 <= min(exponents) < 0.8 and 1.5 < max(exponents) <= 2 + 1e-3


def test_synthetic_random_depth_replaces_the_layout_at_the_given_rate():
    photo = torch.stack([torch.full((40, 40), v) for v in (0.1, 0.5, 0.9)])
    ramp = torch.linspace(0.05, 1, 40)[:, None].expand(40, 40).contiguous()  # far at the bottom

    def depths(rate: float) -> list:
        ds = SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=200, seed=3, min_scale=1.0,
                                  random_depth=rate)
        return [-torch.log(ds[i]["transmission"][0]) / float(ds[i]["beta"]) for i in range(200)]

    def is_ramp(d: torch.Tensor) -> bool:  # a window of the ramp: constant along rows, rising down
        return bool((d - d[:, :1]).abs().max() < 1e-4) and bool((d[1:, 0] > d[:-1, 0]).all())

    assert all(is_ramp(d) for d in depths(0.0))
    assert not any(is_ramp(d) for d in depths(1.0))
    share = sum(not is_ramp(d) for d in depths(0.5)) / 200
    assert 0.38 < share < 0.62, share
    # 0 draws nothing extra: the same crops as a dataset without the option
    plain = SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=3, seed=3, min_scale=1.0, augment=True)
    zero = SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=3, seed=3, min_scale=1.0, augment=True,
                                random_depth=0.0)
    assert all(torch.equal(plain[i]["hazy"], zero[i]["hazy"]) for i in range(3))
    with pytest.raises(ValueError, match="random_depth"):
        SyntheticHazeDataset({"p": (photo, ramp)}, crop=16, length=1, random_depth=1.5)


def test_synthetic_errors(small_photos):
    with pytest.raises(ValueError, match="smaller than crop"):
        SyntheticHazeDataset(small_photos, crop=37, length=1)
    with pytest.raises(ValueError):
        SyntheticHazeDataset({}, crop=8, length=1)
    with pytest.raises(ValueError, match="depth"):
        SyntheticHazeDataset({"x": (torch.rand(3, 20, 20), torch.ones(10, 10))}, crop=8, length=1)


def test_synthetic_on_builtin_train_photos():
    pytest.importorskip("skimage.data")
    ds = SyntheticHazeDataset(haze.builtin_photos("train"), crop=48, length=12, seed=0)
    names = {ds[i]["name"] for i in range(12)}
    assert names <= set(haze.TRAIN_PHOTOS) and len(names) >= 3
    assert datasets.item_generator(0, 0, 1).initial_seed() != datasets.item_generator(0, 0, 2).initial_seed()


def test_train_all_adds_glymurs_photos_to_the_crops():
    """``photos="train_all"``: the 16 training photos and glymur's two, every crop a hazy/clear
    pair of one of them."""
    pytest.importorskip("skimage.data")
    from dehazeddpm.training.data import training_photos

    photos = training_photos("train_all")
    assert list(photos) == list(haze.TRAIN_PHOTOS + haze.MORE_TRAIN_PHOTOS)
    ds = SyntheticHazeDataset(photos, crop=48, length=200, seed=0)
    names = [ds[i]["name"] for i in range(200)]
    assert set(names) <= set(photos) and {"nemo", "goodstuff"} <= set(names)
    item = ds[names.index("nemo")]
    assert item["hazy"].shape == item["gt"].shape == (3, 48, 48)
    assert float((item["hazy"] - item["gt"]).abs().mean()) > 0.01  # hazed, not a copy
