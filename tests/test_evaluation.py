"""The one evaluation harness: the pairing rule, scoring runs over pairs and seeds, the summaries,
and that the CLI and notebook 05's way of calling it give the same numbers on one folder."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dehazeddpm.cli import main
from dehazeddpm.data import make_eval_set
from dehazeddpm.evaluation import (
    DEFAULT_CALL,
    HAZY,
    STAGE1,
    PairingError,
    by_image,
    evaluate,
    format_report,
    mean_of,
    pair_folders,
    pairs_in,
    score,
    summarize,
)
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.io import load_image
from dehazeddpm.metrics import psnr


def _img(path, seed, hw=(16, 20)):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)


def test_pairing_rule_matches_benchmark_names_and_reports_the_rest(tmp_path):
    a, g = tmp_path / "hazy", tmp_path / "gt"
    a.mkdir()
    g.mkdir()
    for i, (x, y) in enumerate([("01_hazy.png", "01_GT.png"), ("b.png", "b.png"), ("c_hazy.jpg", "c_gt.png")]):
        _img(a / x, i)
        _img(g / y, i + 10)
    _img(a / "lonely.png", 7)
    pairs, lonely = pair_folders(a, g)
    assert [(p.name, p.input.name, p.gt.name) for p in pairs] == [
        ("01", "01_hazy.png", "01_GT.png"), ("b", "b.png", "b.png"), ("c", "c_hazy.jpg", "c_gt.png")]
    assert lonely == [str(a / "lonely.png")]
    assert pairs_in(tmp_path)[0] == pairs
    _img(a / "01.png", 3)  # 01.png and 01_hazy.png share the key "01"
    with pytest.raises(PairingError, match="01.png and 01_hazy.png"):
        pair_folders(a, g)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        pair_folders(tmp_path / "nope", g)


def test_score_is_psnr_ssim_and_the_colour_cast(tmp_path):
    _img(tmp_path / "a.png", 0)
    x = load_image(tmp_path / "a.png")
    s = score(x, x.clamp(0, 0.9))
    assert s["psnr"] == pytest.approx(psnr(x, x.clamp(0, 0.9))) and 0 < s["ssim"] < 1 and s["abs_db"] >= 0
    with pytest.raises(ValueError, match="differs from ground truth"):
        score(x, x[..., :8, :8])


@pytest.fixture(scope="module")
def eval_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    make_eval_set(folder, size=16, seed=0)
    return folder


@pytest.fixture(scope="module")
def demo():
    return DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)


def test_runs_seeds_and_summaries(eval_folder, demo):
    pairs, _ = pairs_in(eval_folder)
    seen = []
    rows = evaluate(demo, pairs, {"hazy": HAZY, "stage1": STAGE1, "dehazed": DEFAULT_CALL}, seeds=[0, 1],
                    on_result=lambda pair, run, seed, res: seen.append((pair.name, run, seed, res is None)))
    # the deterministic runs are scored once per image, the sampled one once per seed
    per_image = {run: sum(r["run"] == run for r in rows) / len(pairs) for run in ("hazy", "stage1", "dehazed")}
    assert per_image == {"hazy": 1, "stage1": 1, "dehazed": 2}
    assert len(seen) == len(rows) and all(is_none == (run == "hazy") for _, run, _, is_none in seen)
    hazy = [r for r in rows if r["run"] == "hazy"]
    assert [r["psnr"] for r in hazy] == pytest.approx([psnr(load_image(p.input), load_image(p.gt)) for p in pairs])
    summary = {s["run"]: s for s in summarize(rows)}
    assert summary["dehazed"]["count"] == 2 * len(pairs)
    assert summary["stage1"]["psnr"] == pytest.approx(np.mean([r["psnr"] for r in rows if r["run"] == "stage1"]))
    wide = by_image(rows)
    assert [w["name"] for w in wide] == [p.name for p in pairs]
    assert set(wide[0]) == {"name", "seconds", *(f"{m}_{r}" for m in ("psnr", "ssim") for r in ("hazy", "stage1", "dehazed"))}
    assert mean_of(wide)["psnr_stage1"] == pytest.approx(summary["stage1"]["psnr"])


def test_a_broken_pair_is_one_row_with_its_reason(tmp_path, demo):
    a, g = tmp_path / "hazy", tmp_path / "gt"
    a.mkdir()
    g.mkdir()
    _img(a / "x.png", 0)
    _img(g / "x.png", 1, hw=(12, 12))  # another size
    (a / "y.png").write_bytes(b"not an image")
    _img(g / "y.png", 2)
    errors = []
    rows = evaluate(demo, pair_folders(a, g)[0], {"dehazed": DEFAULT_CALL}, on_error=lambda p, why: errors.append(p.name))
    assert errors == ["x", "y"] and all("error" in r for r in rows)
    assert json.loads(format_report(rows, "json"))["summary"]["dehazed"]["count"] == 0


def test_the_cli_and_notebook_05_give_the_same_numbers(eval_folder, demo, tmp_path):
    report = tmp_path / "r.json"
    assert main(["eval", "--hazy", str(eval_folder / "hazy"), "--gt", str(eval_folder / "gt"), "--format", "json",
                 "--out", str(report), "--quiet"]) == 0
    cli = {r["name"]: r["psnr"] for r in json.loads(report.read_text())["images"] if r["run"] == "dehazed"}
    # notebook 05's cell: the same harness over pairs_in(DATA_DIR) with seed 0
    rows = by_image(evaluate(demo, pairs_in(eval_folder)[0], {"dehazed": DEFAULT_CALL}, seeds=[0]))
    assert {r["name"]: r["psnr_dehazed"] for r in rows} == pytest.approx(cli)


def test_an_identical_pair_neither_poisons_the_mean_nor_looks_failed(tmp_path):
    a, g = tmp_path / "pred", tmp_path / "gt"
    a.mkdir()
    g.mkdir()
    _img(a / "same.png", 0)
    _img(g / "same.png", 0)
    _img(a / "other.png", 1)
    _img(g / "other.png", 2)
    rows = evaluate(None, pair_folders(a, g)[0], {"scored": HAZY})
    report = json.loads(format_report(rows, "json"))
    same = next(r for r in report["images"] if r["name"] == "same")
    assert same["psnr"] is None and same["identical"] is True and "error" not in same
    other = next(r for r in report["images"] if r["name"] == "other")
    assert report["summary"]["scored"]["psnr"] == pytest.approx(other["psnr"]) and report["identical"] == 1
    csv_text = format_report(rows, "csv")
    assert "same,scored,0,inf," in csv_text and "mean,scored,,inf" not in csv_text
