"""The evaluation scripts behind docs/benchmarks.md run end to end (tiny sizes) and report what
their tables claim: per-seed means for sampled rows, one pass for the seed-free rows."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, folder: str = "scripts"):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_eval_demo_averages_sampled_rows_over_seeds(tmp_path):
    out = tmp_path / "eval.json"
    assert _load("eval_demo").main(["--size", "16", "--ddpm-size", "0", "--seeds", "0,1", "--threads", "1",
                                    "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert rows["hazy input"]["psnr_per_seed"].keys() == {"0"}  # does not depend on the seed
    default = rows["DDIM 20, pipeline default (demo: start_strength 0.3, eta 1)"]
    per_seed = default["psnr_per_seed"]
    assert per_seed.keys() == {"0", "1"}
    assert abs(default["psnr"] - sum(per_seed.values()) / 2) < 1e-2  # equal image counts per seed
    assert all(len(v) == 2 for v in default["psnr_per_image"].values())
    assert len(data["markdown"].splitlines()) == 2 + len(rows) and data["seeds"] == [0, 1]


def test_denoiser_noise_levels_prints_one_row_per_level(capsys):
    mod = _load("denoiser_noise_levels")
    assert mod.main(["--n", "2", "--crop", "16"]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| 0.")]
    assert [float(ln.split("|")[1]) for ln in lines] == list(mod.GAMMAS)
    # the x0 = J baseline's noise error grows with gamma (x_t holds less noise to explain)
    base = [float(ln.split("|")[5]) for ln in lines]
    assert base == sorted(base) and base[0] < base[-1]
    # the channel-mean part of the noise error is part of it: |mean(r)| <= mean(|r|)
    assert all(0 <= float(ln.split("|")[3]) <= float(ln.split("|")[2]) for ln in lines)


def test_sampler_steps_prints_one_row_per_setting(capsys):
    mod = _load("sampler_steps")
    assert mod.main(["--steps", "2,4", "--etas", "0,1", "--start-strengths", "1,0.5", "--seeds", "0,1",
                     "--n", "2", "--crop", "16"]) == 0
    out = capsys.readouterr().out
    rows = [ln.split("|")[1:-1] for ln in out.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [(int(r[0]), float(r[1]), float(r[2])) for r in rows] == [
        (s, e, f) for s in (2, 4) for e in (0.0, 1.0) for f in (1.0, 0.5)]
    for r in rows:  # the mean is the mean of the per-seed values shown
        seeds = [float(v) for v in r[4].split(",")]
        assert len(seeds) == 2 and abs(float(r[3]) - sum(seeds) / 2) < 0.01
    # UNet evaluations: all respaced steps from pure noise, half of them from start_strength 0.5
    assert [int(r[5]) for r in rows] == [2, 1, 2, 1, 4, 2, 4, 2]
    assert out.startswith("stage-1 J: ")


def test_sampler_steps_ddpm_row_runs_every_step_from_the_same_start(capsys):
    mod = _load("sampler_steps")
    # start_strength 0.01 keeps the ancestral row at 20 of the demo schedule's 2000 steps
    assert mod.main(["--steps", "4", "--etas", "0", "--start-strengths", "0.01", "--seeds", "0", "--n", "1",
                     "--crop", "16", "--ddpm"]) == 0
    rows = [ln.split("|")[1:-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and ln[2] != "-"]
    assert [(r[0].strip(), r[1].strip(), float(r[2]), int(r[5])) for r in rows[1:]] == [
        ("4", "0", 0.01, 1), ("ddpm", "", 0.01, 20)]


def test_depth_shift_prints_one_row_per_stage1(capsys, tmp_path):
    from dehazeddpm.io.checkpoints import save_stage1
    from dehazeddpm.models.stage1 import Stage1Net
    torch.manual_seed(0)
    other = save_stage1(Stage1Net(), tmp_path / "random_stage1.pth")
    mod = _load("depth_shift")
    assert mod.main([str(other), "--n", "2", "--crop", "16"]) == 0
    assert mod.main(["--n", "2", "--crop", "16"]) == 0  # the bundled demo stage 1
    rows = [ln.split("|")[1:-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and ".pth" in ln]
    assert [r[0].strip() for r in rows] == ["random_stage1.pth", "demo_stage1.pth"]
    for r in rows:
        vals = [float(v) for v in r[1:]]
        assert len(vals) == 5 and vals[4] == pytest.approx(sum(vals[1:4]) / 3, abs=0.01)


def test_stage1_working_size_prints_a_row_per_size(capsys):
    assert _load("stage1_working_size").main(["--sizes", "32,96", "--size", "48", "--limit", "2"]) == 0
    rows = [ln.split("|")[1:-1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and
            ln.split("|")[1].strip().isdigit()]
    assert [r[0].strip() for r in rows] == ["32", "96"]
    small, large = ([c.strip() for c in r] for r in rows)
    assert small[3] == "-" and large[3] != "-"  # the upsampled-J column only where the image shrinks
    for r in (small, large):
        assert float(r[4]) == pytest.approx(float(r[2]) - float(r[1]), abs=0.011)


def _bench(name: str):
    return _load(name, "benchmarks")


def test_frontier_runs_every_sampler_and_start(tmp_path):
    out, png = tmp_path / "f.json", tmp_path / "f.png"
    assert _bench("frontier").main(["--size", "16", "--seeds", "0", "--evals", "1,2", "--threads", "1",
                                    "--json", str(out), "--plot", str(png)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 1 + 4 * 2 * 2 and rows[0]["sampler"] == "stage 1 J"
    assert {r["evaluations"] for r in rows[1:]} == {1, 2}  # from J too: the start costs no evaluation
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cost_model_counts_flops_without_running_the_big_sizes(tmp_path):
    out = tmp_path / "c.json"
    assert _bench("cost_model").main(["--time-sizes", "", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    demo = data["entries"]["demo"]["sizes"]
    # the per-image cost is stage 1 plus evaluations x one evaluation, and the projections divide it
    for row in demo.values():
        assert row["flops_per_image"] == row["stage1_flops"] + row["evaluations"] * row["unet_flops_per_eval"]
        assert row["projected_seconds_per_image"]["H200 bf16 dense"] < row["projected_seconds_per_image"]["T4 fp16 tensor cores"]
    released = data["entries"]["nh-haze"]["sizes"]["1600x1200"]["unet_flops_per_eval"]
    assert 10.0e12 < released < 11.0e12  # the 10.55 TFLOP per evaluation
    assert data["matmul_flops_per_s"]["fp32"] > 1e9


def test_gpu_check_runs_its_code_path_on_a_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert _bench("gpu_check").main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert any("flash" in k for k in data["attention_kernels"]["fp32"])
    assert data["eps_agreement"]["max_abs_diff"] < 0.1 and data["tiled"]["tile"] == 32
    assert data["untiled"]["seconds_per_eval"] > 0 and "estimate_bytes_untiled" in data["tile_heuristic"]


def test_precision_and_attention_policy_scripts(tmp_path):
    out = tmp_path / "p.json"
    assert _bench("precision").main(["--sizes", "16", "--seeds", "0", "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["what"] for r in rows] == ["stage 1 J, stage 1 in fp32", "stage 1 J, stage 1 in bf16",
                                         "default call, denoiser in fp32", "default call, denoiser in bf16"]
    out = tmp_path / "a.json"
    assert _load("attention_policy").main(["--sizes", "32", "--seeds", "0", "--limit", "1", "--threads", "1",
                                           "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 4


def test_default_call_compares_two_checkouts_side_by_side(tmp_path):
    out = tmp_path / "d.json"
    assert _bench("default_call").main(["--baseline", str(REPO), "--size", "32x48", "--big", "64", "--rounds", "1",
                                        "--threads", "1", "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["time"]) == {"this checkout", "baseline"} and data["speedup"] > 0
    assert data["memory"]["peak_bytes"] > 0 and data["memory"]["size"] == [64, 64]


def test_eval_stages_reports_stage1_and_the_default_per_size_and_haze(tmp_path):
    out = tmp_path / "stages.json"
    assert _load("eval_stages").main(["--sizes", "16,24", "--haze", "depth,nh", "--seeds", "0,1", "--noise-size", "16",
                                      "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    cells = {(r["haze"], r["size"]) for r in data["rows"]}
    assert cells == {(h, s) for h in ("depth", "nh") for s in ("16", "24")}
    methods = {(r["haze"], r["size"], r["method"]) for r in data["rows"]}
    assert ("nh", "16", "from pure noise (DDIM 20, eta 0)") in methods and ("nh", "24", "from pure noise (DDIM 20, eta 0)") not in methods
    for r in data["rows"]:
        assert 0 <= r["ssim"] <= 1 and r["max_abs_da"] >= r["mean_abs_da"] >= 0
    # the rule's candidates on training photos, without touching the eval photos
    assert _load("eval_stages").main(["--split", "train", "--names", "coins", "--sizes", "16", "--haze", "nh",
                                      "--seeds", "0", "--noise-size", "0", "--candidates", "--threads", "1",
                                      "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 2 + 6


@pytest.mark.parametrize("bad", [["--haze", "smog"], ["--split", "train", "--names", "motorcycle"], ["--sizes", "0"],
                                 ["--seeds", "x"]])
def test_eval_stages_refuses_bad_arguments_in_one_line(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _load("eval_stages").main(bad)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and ": error: --" in err[-1]  # one usage line, then the reason
