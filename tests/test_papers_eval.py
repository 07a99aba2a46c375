"""Evaluating the way dehazing papers do: the public datasets' file names and test splits, the
metrics against scikit-image, LPIPS from weight files, the no-reference haze measure, the mean of
K samples, and an interrupted evaluation that goes on where it stopped."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dehazeddpm.cli import main
from dehazeddpm.data import DATASETS, DatasetError, dataset_pairs
from dehazeddpm.evaluation import DEFAULT_CALL, STAGE1, evaluate, format_report, load_pairs
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.metrics import ciede2000, haze_density, psnr, ssim
from dehazeddpm.perceptual import LPIPS, LpipsUnavailable, load_lpips

skimage_metrics = pytest.importorskip("skimage.metrics")
skimage_color = pytest.importorskip("skimage.color")


def _img(path: Path, seed: int, hw=(24, 32)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


def _ntire(root: Path, hazy: str, gt: str, ids, sub=("", "")) -> None:
    for i in ids:
        _img(root / sub[0] / hazy.format(i), i)
        _img(root / sub[1] / gt.format(i), 100 + i)


# each dataset's published names, a few scenes besides the test split, and the split papers report
LAYOUTS = {
    "nh-haze": (lambda r: _ntire(r / "NH-HAZE", "{:02d}_hazy.png", "{:02d}_GT.png", [1, 2, 50, 51, 52, 53, 54, 55]),
                ["51", "52", "53", "54", "55"], 8),
    "dense-haze": (lambda r: _ntire(r, "{:02d}_hazy.png", "{:02d}_GT.png", [3, 51, 52, 53, 54, 55]),
                   ["51", "52", "53", "54", "55"], 6),
    "o-haze": (lambda r: _ntire(r / "O-HAZE" / "# O-HAZY NTIRE 2018", "{:02d}_outdoor_hazy.jpg",
                                "{:02d}_outdoor_GT.jpg", [1, 40, 41, 42, 43, 44, 45], ("hazy", "GT")),
               [f"{i}_outdoor" for i in range(41, 46)], 7),
    "i-haze": (lambda r: _ntire(r / "I-HAZE" / "# I-HAZY NTIRE 2018", "{:02d}_indoor_hazy.jpg",
                                "{:02d}_indoor_GT.jpg", [1, 30, 31, 32, 33, 34, 35], ("hazy", "GT")),
               [f"{i}_indoor" for i in range(31, 36)], 7),
}


def _sots_indoor(root: Path) -> None:
    for scene in (1400, 1401):
        _img(root / "SOTS" / "indoor" / "gt" / f"{scene}.png", scene)
        for k in (1, 2, 10):
            _img(root / "SOTS" / "indoor" / "hazy" / f"{scene}_{k}.png", scene + k)


def _sots_outdoor(root: Path) -> None:
    for scene, haze in (("0001", "0.8_0.2"), ("0002", "1_0.16"), ("0015", "0.9_0.08")):
        _img(root / "outdoor" / "clear" / f"{scene}.png", int(scene))
        _img(root / "outdoor" / "hazy" / f"{scene}_{haze}.jpg", int(scene) + 50)


def _hsts(root: Path) -> None:
    for scene in ("0586", "1381"):
        _img(root / "HSTS" / "synthetic" / "synthetic" / f"{scene}.jpg", int(scene))
        _img(root / "HSTS" / "synthetic" / "original" / f"{scene}.jpg", int(scene) + 1)
    _img(root / "HSTS" / "real-world" / "Cityscape.jpg", 5)  # no ground truth: not part of the set


LAYOUTS.update({
    "sots-indoor": (_sots_indoor, [f"{s}_{k}" for s in (1400, 1401) for k in (1, 10, 2)], 6),
    "sots-outdoor": (_sots_outdoor, ["0001_0.8_0.2", "0002_1_0.16", "0015_0.9_0.08"], 3),
    "hsts": (_hsts, ["0586", "1381"], 2),
})


def test_every_dataset_has_a_layout_test():
    assert set(LAYOUTS) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_readers_find_the_standard_split_by_the_published_names(tmp_path, name):
    build, test_names, total = LAYOUTS[name]
    build(tmp_path)
    pairs = dataset_pairs(name, tmp_path, "test")
    assert [p.name for p in pairs] == test_names
    for p in pairs:  # each hazy image with the ground truth of its own scene
        scene = p.input.name.split("_")[0].split(".")[0]
        assert p.gt.name.split("_")[0].split(".")[0] == scene and p.gt != p.input
    assert len(dataset_pairs(name, tmp_path, "all")) == total


def test_missing_extra_and_unknown_files_are_one_line_naming_them(tmp_path):
    LAYOUTS["nh-haze"][0](tmp_path)
    folder = tmp_path / "NH-HAZE"
    (folder / "54_GT.png").unlink()
    with pytest.raises(DatasetError, match="54_hazy.png has no ground truth"):
        dataset_pairs("nh-haze", tmp_path)
    _img(folder / "54_GT.png", 1)
    _img(folder / "notes.png", 1)
    with pytest.raises(DatasetError, match="notes.png is not a nh-haze file name"):
        dataset_pairs("nh-haze", tmp_path)
    (folder / "notes.png").unlink()
    _img(folder / "56_GT.png", 1)
    with pytest.raises(DatasetError, match="56_GT.png has no hazy image"):
        dataset_pairs("nh-haze", tmp_path)
    (folder / "56_GT.png").unlink()
    (folder / "55_GT.png").unlink()
    (folder / "55_hazy.png").unlink()
    with pytest.raises(DatasetError, match="scene 55 is missing"):
        dataset_pairs("nh-haze", tmp_path)
    assert len(dataset_pairs("nh-haze", tmp_path, "all")) == 7
    with pytest.raises(DatasetError, match="unknown dataset 'nh'"):
        dataset_pairs("nh", tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        dataset_pairs("nh-haze", tmp_path / "nope")


def test_the_same_image_twice_is_refused(tmp_path):
    LAYOUTS["dense-haze"][0](tmp_path)
    _img(tmp_path / "copy" / "51_hazy.png", 3)
    with pytest.raises(DatasetError, match="same dense-haze image twice"):
        dataset_pairs("dense-haze", tmp_path)


# -- metrics ----------------------------------------------------------------------------------------
@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    a = rng.random((40, 48, 3))
    return a, np.clip(a + rng.normal(0, 0.15, a.shape), 0, 1), rng.random((40, 48, 3))


def test_psnr_ssim_ciede2000_match_scikit_image(images):
    a, b, c = images
    for x, y in ((a, b), (a, c)):
        assert psnr(x, y) == pytest.approx(skimage_metrics.peak_signal_noise_ratio(y, x, data_range=1), abs=1e-6)
        ref = skimage_metrics.structural_similarity(x, y, data_range=1, channel_axis=-1, gaussian_weights=True,
                                                    sigma=1.5, use_sample_covariance=False)
        assert ssim(x, y) == pytest.approx(ref, abs=1e-6)
        de = skimage_color.deltaE_ciede2000(skimage_color.rgb2lab(x), skimage_color.rgb2lab(y)).mean()
        assert ciede2000(x, y) == pytest.approx(de, abs=1e-6)
    assert ciede2000(a, a) == 0.0
    # grey against colour: the hue terms' special case (no chroma)
    grey = np.full_like(a, 0.5)
    assert ciede2000(grey, a) == pytest.approx(
        skimage_color.deltaE_ciede2000(skimage_color.rgb2lab(grey), skimage_color.rgb2lab(a)).mean(), abs=1e-6)


def test_haze_density_rises_with_synthetic_haze():
    from dehazeddpm.data import EVAL_PHOTOS, load_photo

    for name in EVAL_PHOTOS[:3]:  # real photos, hazed uniformly thicker: I = J t + A (1 - t)
        clear = load_photo(name)[0]
        values = [haze_density(clear * t + 0.85 * (1 - t)) for t in (1.0, 0.8, 0.6, 0.4, 0.2, 0.05)]
        assert all(b > a for a, b in zip(values, values[1:])), (name, values)
    assert haze_density(np.zeros((5, 7, 3))) == 0.0 and haze_density(np.ones((5, 7, 3))) == 1.0


# -- LPIPS --------------------------------------------------------------------------------------------
def _lpips_files(folder: Path, seed: int = 0):
    """Weight files in the two published layouts: torchvision's AlexNet and lpips' linear heads."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(64, 3, 11, 11), (192, 64, 5, 5), (384, 192, 3, 3), (256, 384, 3, 3), (256, 256, 3, 3)]
    trunk = {}
    for idx, shape in zip((0, 3, 6, 8, 10), shapes):
        trunk[f"features.{idx}.weight"] = torch.randn(shape, generator=g) * 0.05
        trunk[f"features.{idx}.bias"] = torch.randn(shape[0], generator=g) * 0.01
    trunk["classifier.1.weight"] = torch.zeros(4, 4)  # the rest of AlexNet, not used
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in
             enumerate((64, 192, 384, 256, 256))}
    torch.save(trunk, folder / "alexnet.pth")
    torch.save(heads, folder / "alex.pth")
    return folder / "alex.pth", folder / "alexnet.pth", trunk, heads


def _reference_lpips(x, y, trunk, heads):
    """LPIPS written out from the paper's definition, straight from the two state dicts."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = 0.0
    feats = []
    for img in (x, y):
        h = ((img * 2 - 1) - shift) / scale
        out = []
        for k, (idx, stride, pad) in enumerate(((0, 4, 2), (3, 1, 2), (6, 1, 1), (8, 1, 1), (10, 1, 1))):
            if k in (1, 2):
                h = F.max_pool2d(h, 3, 2)
            h = F.relu(F.conv2d(h, trunk[f"features.{idx}.weight"], trunk[f"features.{idx}.bias"], stride, pad))
            out.append(h / (h.norm(dim=1, keepdim=True) + 1e-10))
        feats.append(out)
    for k, (fa, fb) in enumerate(zip(*feats)):
        total = total + (((fa - fb) ** 2) * heads[f"lin{k}.model.1.weight"]).sum(1).mean()
    return float(total)


def test_lpips_loads_both_layouts_and_computes_the_distance(tmp_path):
    linear, backbone, trunk, heads = _lpips_files(tmp_path)
    net = load_lpips(linear, backbone)
    assert isinstance(net, LPIPS) and not any(p.requires_grad for p in net.parameters())
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 3, 70, 80, generator=g), torch.rand(1, 3, 70, 80, generator=g)
    with torch.no_grad():
        assert float(net(x, x)[0]) == 0.0
        assert float(net(x, y)[0]) == pytest.approx(_reference_lpips(x, y, trunk, heads), rel=1e-5)
    # evaluation scores it beside the other metrics
    a, gt = tmp_path / "hazy", tmp_path / "gt"
    _img(a / "01_hazy.png", 0, (70, 80))
    _img(gt / "01_GT.png", 1, (70, 80))
    rows = evaluate(None, load_pairs("folder", tmp_path), {"scored": None}, lpips=net)
    assert rows[0]["lpips"] > 0 and "lpips" in format_report(rows, "csv").splitlines()[0]


def test_lpips_without_its_files_or_with_wrong_ones_says_so(tmp_path):
    linear, backbone, trunk, heads = _lpips_files(tmp_path)
    with pytest.raises(LpipsUnavailable, match="pip install --no-deps lpips"):
        load_lpips(tmp_path / "none.pth", backbone)
    with pytest.raises(LpipsUnavailable, match="alexnet-owt-7be5be79.pth"):
        load_lpips(linear, tmp_path / "none.pth")
    del heads["lin3.model.1.weight"]
    torch.save(heads, tmp_path / "bad.pth")
    with pytest.raises(LpipsUnavailable, match="bad.pth is not the file LPIPS needs: lin3.model.1.weight missing"):
        load_lpips(tmp_path / "bad.pth", backbone)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(LpipsUnavailable, match="cannot read AlexNet weights"):
        load_lpips(linear, tmp_path / "junk.pth")


# -- the model over a dataset -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo():
    return DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)


def test_samples_give_their_mean_and_spread_in_one_batch(demo):
    rng = np.random.default_rng(3)
    img = torch.from_numpy(rng.random((1, 3, 48, 64), dtype=np.float32))
    one = demo(img, seed=0, progress=False, samples=1)
    again = demo(img, seed=0, progress=False, steps=20)  # a call that sets its steps draws one sample
    assert torch.equal(torch.from_numpy(np.array(one.image)), torch.from_numpy(np.array(again.image)))
    assert one.spread is None and one.samples is None
    default = demo(img, seed=0, progress=False)  # the demo's default averages 2 (Rule S3)
    assert default.options.samples == 2 and default.spread is not None and default.samples is None
    four = demo(img, seed=0, progress=False, samples=4, keep_samples=True)
    assert four.evaluations == one.evaluations  # one batch per step, not four runs
    assert four.samples.shape == (4, 3, 48, 64) and four.spread.shape == (1, 1, 48, 64)
    mean = four.samples.mean(0, keepdim=True)
    got = torch.from_numpy(np.array(four.image)).permute(2, 0, 1)[None].float() / 255
    assert (got - mean).abs().max() <= 0.5 / 255 + 1e-6  # the image is the samples' mean, 8-bit
    spread = four.samples.std(0, unbiased=False).mean(0)
    assert torch.allclose(four.spread[0, 0], spread) and float(four.spread.max()) > 0
    assert not torch.equal(four.samples[0], four.samples[1])
    assert "mean of 4 samples" in four.describe()
    assert demo(img, seed=0, progress=False, samples=2).samples is None  # kept only when asked


def test_eval_dataset_scores_j_and_the_result_and_resumes_after_a_kill(tmp_path, demo, capsys):
    LAYOUTS["nh-haze"][0](tmp_path / "data")
    out = tmp_path / "report.json"
    cmd = ["eval", "--dataset", "nh-haze", "--root", str(tmp_path / "data"), "--out", str(out), "--quiet",
           "--lpips", "off"]
    assert main(cmd) == 0
    first = json.loads(out.read_text())
    assert [(r["name"], r["run"]) for r in first["images"]][:2] == [("51", "stage1"), ("51", "dehazed")]
    assert {r["name"] for r in first["images"]} == {"51", "52", "53", "54", "55"}
    assert first["meta"]["split"] == "test" and first["meta"]["options"]["samples"] == 2
    assert set(first["summary"]) == {"stage1", "dehazed"} and first["summary"]["dehazed"]["count"] == 5
    # the harness called as notebook 05 calls it gives the same numbers
    rows = evaluate(demo, dataset_pairs("nh-haze", tmp_path / "data"), {"stage1": STAGE1, "dehazed": DEFAULT_CALL})
    assert [r["psnr"] for r in rows] == pytest.approx([r["psnr"] for r in first["images"]], abs=1e-9)
    # a kill after two images, mid-line: the rerun reports the same numbers
    journal = out.with_name(out.name + ".rows.jsonl")
    lines = journal.read_text().splitlines()
    assert len(lines) == 6  # the header and one line per image
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    out.unlink()
    assert main(cmd) == 0
    again = json.loads(out.read_text())
    assert [r["psnr"] for r in again["images"]] == [r["psnr"] for r in first["images"]]
    assert [r["ssim"] for r in again["images"]] == [r["ssim"] for r in first["images"]]
    # another setting cannot continue that journal
    capsys.readouterr()
    assert main(cmd + ["--steps", "3"]) == 2
    assert "was written for another evaluation" in capsys.readouterr().err
    assert main(cmd + ["--steps", "3", "--overwrite"]) == 0


def test_a_journal_takes_the_finished_pairs_and_computes_the_rest(tmp_path, demo):
    LAYOUTS["dense-haze"][0](tmp_path / "data")
    pairs = dataset_pairs("dense-haze", tmp_path / "data")
    runs = {"stage1": STAGE1, "dehazed": DEFAULT_CALL}
    journal = tmp_path / "rows.jsonl"
    full = evaluate(demo, pairs, runs, journal=journal, identity={"weights": "demo"})
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:3]) + "\n")  # the header and two finished images
    ran = []
    rows = evaluate(demo, pairs, runs, journal=journal, identity={"weights": "demo"},
                    on_result=lambda pair, run, seed, res: ran.append((pair.name, res is not None)))
    assert [name for name, computed in ran if computed] == ["53", "53", "54", "54", "55", "55"]
    assert [r["psnr"] for r in rows] == [r["psnr"] for r in full]
    with pytest.raises(ValueError, match="its weights differ"):
        evaluate(demo, pairs, runs, journal=journal, identity={"weights": "other"})
    with pytest.raises(ValueError, match="its seeds differ"):
        evaluate(demo, pairs, runs, seeds=(1,), journal=journal, identity={"weights": "demo"})


def test_eval_dataset_errors_are_one_line(tmp_path, capsys):
    LAYOUTS["o-haze"][0](tmp_path)
    (next(tmp_path.rglob("43_outdoor_GT.jpg"))).unlink()
    assert main(["eval", "--dataset", "o-haze", "--root", str(tmp_path), "--quiet", "--lpips", "off"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "43_outdoor_hazy.jpg has no ground truth" in err[0]
    assert main(["eval", "--dataset", "o-haze", "--quiet"]) == 2
    assert "--root" in capsys.readouterr().err


def test_the_docs_comparison_table_is_the_published_one():
    from dehazeddpm.evaluation import PUBLISHED, comparison

    text = (Path(__file__).parent.parent / "docs" / "evaluation.md").read_text()
    for r in PUBLISHED:
        assert f"| {r['dataset']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:g} | {r['source']} |" in text, r
    rows = comparison("nh-haze", [{"run": "stage1", "psnr": 13.0, "ssim": 0.5}], label="demo")
    assert [r["psnr"] for r in rows[:-1]] == sorted((r["psnr"] for r in rows[:-1]), reverse=True)
    assert rows[-1] == {"method": "demo: stage1", "psnr": 13.0, "ssim": 0.5, "source": "measured here"}
    assert {r["dataset"] for r in PUBLISHED} <= set(DATASETS)
