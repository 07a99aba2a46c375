"""The benchmarks behind docs/benchmarks.md run end to end (tiny sizes) and report what their
tables claim: per-seed means for sampled rows, one pass for the seed-free rows. (The finished
experiments under experiments/ are not run by the suite.)"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str, folder: str = "scripts"):
    spec = importlib.util.spec_from_file_location(name, REPO / folder / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _bench(name: str):
    return _load(name, "benchmarks")


def test_cost_model_counts_flops_without_running_the_big_sizes(tmp_path):
    out = tmp_path / "c.json"
    assert _bench("cost_model").main(["--time-sizes", "", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    demo = data["entries"]["demo"]["sizes"]
    # the per-image cost is stage 1 plus evaluations x one evaluation at the denoiser's working size
    # (the demo's 128 px, padded to 16), and the projections divide it
    for row in demo.values():
        assert row["flops_per_image"] == row["stage1_flops"] + row["evaluations"] * row["unet_flops_per_call_eval"]
        assert row["unet_flops_per_call_eval"] < row["unet_flops_per_eval"]
        assert row["projected_seconds_per_image"]["H200 bf16 dense"] < row["projected_seconds_per_image"]["T4 fp16 tensor cores"]
    assert demo["1600x1200"]["denoised_at"] == [128, 176] and demo["256x256"]["denoised_at"] == [128, 128]
    big = data["entries"]["nh-haze"]["sizes"]["1600x1200"]
    assert 10.0e12 < big["unet_flops_per_eval"] < 11.0e12  # the 10.55 TFLOP per evaluation
    assert big["denoised_at"] == [1200, 1600] and big["unet_flops_per_call_eval"] == big["unet_flops_per_eval"]
    assert data["matmul_flops_per_s"]["fp32"] > 1e9


def test_layout_times_the_released_config_against_the_matmul_rate(tmp_path):
    out = tmp_path / "l.json"
    assert _bench("layout").main(["--released", "--ceiling", "--size", "64", "--repeats", "1", "--threads", "1",
                                  "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["config"].startswith("nh-haze") and data["size"] == [64, 64]
    assert 20e9 < data["flops_per_eval"] < 25e9  # 1426 GFLOP at 512x512 scales with the pixels: 22.3 at 64
    for name in ("contiguous", "channels_last"):
        row = data["rows"][name]
        rate = data["flops_per_eval"] / row["seconds_per_eval"] / data["bf16_matmul_flops_per_s"]
        assert row["fraction_of_matmul_rate"] == pytest.approx(rate) and 0 < rate < 1
    # --ceiling: the profiled time split by kind, and what the rate would be without the fusable kinds
    kinds = data["rows"]["time by kind (torch.profiler)"]
    assert {"convolutions", "GroupNorm", "SiLU", "additions"} <= set(kinds["seconds"])
    assert sum(kinds["share"].values()) == pytest.approx(1.0)
    assert kinds["ceiling_fraction_without_norm_silu_additions"] > kinds["fraction_of_matmul_rate"] > 0


def test_gpu_check_runs_its_code_path_on_a_cpu(tmp_path):
    out = tmp_path / "g.json"
    assert _bench("gpu_check").main(["--device", "cpu", "--tiny", "--repeats", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert any("flash" in k for k in data["attention_kernels"]["fp32"])
    assert data["eps_agreement"]["max_abs_diff"] < 0.1 and data["tiled"]["tile"] == 32
    assert data["untiled"]["seconds_per_eval"] > 0 and "estimate_bytes_untiled" in data["tile_heuristic"]
    assert data["end_to_end"]["96x64"]["evaluations"] == 20 and data["end_to_end"]["96x64"]["seconds"] > 0
    step = data["finetune_step"]
    assert step["crop"] == 32 and step["seconds_per_step"] > 0 and step["estimate_bytes"] > 0


def test_default_call_compares_two_checkouts_side_by_side(tmp_path):
    out = tmp_path / "d.json"
    assert _bench("default_call").main(["--baseline", str(REPO), "--size", "32x48", "--big", "64", "--rounds", "1",
                                        "--threads", "1", "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["time"]) == {"this checkout", "baseline"} and data["speedup"] > 0
    assert data["memory"]["peak_bytes"] > 0 and data["memory"]["size"] == [64, 64]


def test_quality_reports_stage1_and_the_default_per_size_and_haze(tmp_path):
    out = tmp_path / "stages.json"
    assert _bench("quality").main(["--sizes", "16,24", "--haze", "depth,nh", "--seeds", "0,1", "--noise-size", "16",
                                      "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    cells = {(r["haze"], r["size"]) for r in data["rows"]}
    assert cells == {(h, s) for h in ("depth", "nh") for s in ("16", "24")}
    methods = {(r["haze"], r["size"], r["method"]) for r in data["rows"]}
    assert ("nh", "16", "from pure noise (DDIM 20, eta 0)") in methods and ("nh", "24", "from pure noise (DDIM 20, eta 0)") not in methods
    for r in data["rows"]:
        assert 0 <= r["ssim"] <= 1 and r["max_abs_da"] >= r["mean_abs_da"] >= 0
        # every eval photo's own PSNR, whose mean is the cell's
        assert set(r["photos"]) == {"motorcycle", "rocket", "camera"}
        assert sum(r["photos"].values()) / 3 == pytest.approx(r["psnr"])
    # the rule's candidates on training photos, without touching the eval photos
    assert _bench("quality").main(["--split", "train", "--names", "coins", "--sizes", "16", "--haze", "nh",
                                      "--seeds", "0", "--noise-size", "0", "--candidates", "--threads", "1",
                                      "--json", str(out)]) == 0
    assert len(json.loads(out.read_text())["rows"]) == 2 + 6


def test_demo_acceptance_names_the_photo_a_cell_mean_hides(tmp_path, capsys):
    def run(j: dict, default: float) -> dict:
        cell = {"haze": "depth", "size": "256", "ssim": 0.8, "mean_abs_da": 1.0, "mean_abs_db": 2.0}
        return {"command": "x", "rows": [{**cell, "method": "stage 1 J", "psnr": sum(j.values()) / len(j), "photos": j},
                                          {**cell, "method": "default call", "psnr": default, "photos": {}}]}

    before, after = tmp_path / "b.json", tmp_path / "a.json"
    before.write_text(json.dumps(run({"rocket": 22.0, "camera": 22.0}, 21.9)))
    after.write_text(json.dumps(run({"rocket": 18.0, "camera": 26.2}, 22.0)))  # the mean gains 0.1 dB
    assert _bench("demo_acceptance").main([str(before), str(after), "--json", str(tmp_path / "o.json")]) == 0
    row = json.loads((tmp_path / "o.json").read_text())["rows"][0]
    assert row["J_check"] and row["J_gain"] == pytest.approx(0.1)
    assert row["J_worst_photo"] == "rocket" and row["J_worst_photo_gain"] == pytest.approx(-4.0)
    assert "| rocket -4.00 |" in capsys.readouterr().out
    # results written before photos were kept: the column says "-"
    before.write_text(json.dumps({"command": "x", "rows": [{k: v for k, v in r.items() if k != "photos"}
                                                           for r in run({"rocket": 22.0}, 21.9)["rows"]]}))
    assert _bench("demo_acceptance").main([str(before), str(after), "--json", str(tmp_path / "o.json")]) == 0
    assert "J_worst_photo" not in json.loads((tmp_path / "o.json").read_text())["rows"][0]


def test_airlight_scores_stage1_against_the_model_with_the_true_airlight(tmp_path):
    out = tmp_path / "a.json"
    assert _bench("airlight").main(["--split", "judge", "--sizes", "24,original", "--haze", "nh,depth",
                                    "--haze-seeds", "0,1", "--threads", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["cells"]) == {"nh 24", "nh original", "depth 24", "depth original"}
    n_photos = len(data["photos"])
    rows = [r for r in data["rows"] if (r["kind"], r["size"]) == ("nh", "24")]
    cell = data["cells"]["nh 24"]
    assert len(rows) == cell["pairs"] == 2 * n_photos
    for label, score in cell["images"].items():  # each cell is its pairs' mean
        assert score["abs_db"] == pytest.approx(sum(abs(r["images"][label]["db"]) for r in rows) / len(rows))
    assert cell["A_abs_error"] == pytest.approx(sum(r["A_abs_error"] for r in rows) / len(rows))
    # the finding it records for the demo stage 1: its A is near grey under tinted nh airlight, so
    # solving the model with it casts the image, and the true airlight with stage 1's own T does not
    assert cell["stage1_tint"] < cell["true_tint"] / 2
    with_a, with_true = cell["images"]["model, T and A of stage 1"], cell["images"]["model, T of stage 1, true airlight"]
    assert with_true["abs_db"] < with_a["abs_db"] / 2 and with_true["psnr"] > with_a["psnr"] + 1
    assert cell["true_tint"] > 0.02  # nh airlight is tinted
    with pytest.raises(SystemExit) as exc:
        _bench("airlight").main(["--split", "nowhere"])
    assert exc.value.code == 2


@pytest.mark.parametrize("bad", [["--haze", "smog"], ["--split", "train", "--names", "motorcycle"], ["--sizes", "0"],
                                 ["--seeds", "x"]])
def test_quality_refuses_bad_arguments_in_one_line(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        _bench("quality").main(bad)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and ": error: --" in err[-1]  # one usage line, then the reason


def test_train_demo_exports_beside_the_run_and_installs_only_when_asked(tmp_path):
    """A recipe file drives the run; the export lands in OUT/export and the bundled assets are
    untouched unless --install is given."""
    recipe = json.loads((REPO / "scripts" / "recipes" / "demo_round5.json").read_text())
    recipe["stage1"]["config"].update(crop=32, batch_size=1, steps=1, val_every=0, save_every=0, num_val=1,
                                      val_crop=32)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(recipe))
    def bundled() -> dict:  # every file under assets/, by relative path
        root = REPO / "dehazeddpm" / "assets"
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assets = bundled()
    registry = (REPO / "dehazeddpm" / "hub" / "weights.json").read_bytes()
    assert _load("train_demo").main(["--recipe", str(path), "--out", str(tmp_path / "run")]) == 0
    export = tmp_path / "run" / "export"
    assert {p.name for p in export.iterdir()} >= {"demo_stage1.pth", "demo_denoiser.pth", "demo_provenance.json",
                                                  "demo_entry.json"}
    entry = json.loads((export / "demo_entry.json").read_text())
    assert entry["denoiser"]["sha256"] == recipe["denoiser"]["kept"][2]  # the kept file, byte for byte
    assert json.loads((export / "demo_provenance.json").read_text())["round"] == 5
    assert bundled() == assets
    assert (REPO / "dehazeddpm" / "hub" / "weights.json").read_bytes() == registry


def test_train_demo_trains_only_the_denoiser_when_the_recipe_keeps_stage_1(tmp_path):
    """A denoiser-only round (the shipped one): the stage-1 file comes from git history as it is,
    the denoiser trains on its conditions, and the export ships that stage 1 byte for byte."""
    recipe = json.loads((REPO / "scripts" / "recipes" / "demo_round15.json").read_text())
    recipe["denoiser"]["config"].update(steps=1, condition_pool=8, scene_sizes=[64, 96], batch_size=2, save_every=0,
                                        num_val=1, val_every=0)
    path = tmp_path / "kept.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "run"
    assert _load("train_demo").main(["--recipe", str(path), "--out", str(out)]) == 0
    side = json.loads((out / "denoiser" / "denoiser_final.json").read_text())
    assert side["step"] == 1 and side["config"]["stage1_detail"] == 3
    assert side["config"]["stage1_checkpoint"].endswith("demo_stage1_9767dd0.pth")
    export = out / "export"
    entry = json.loads((export / "demo_entry.json").read_text())
    assert entry["stage1"]["sha256"] == recipe["stage1"]["kept"][2]  # byte for byte
    prov = json.loads((export / "demo_provenance.json").read_text())
    assert prov["stage1_kept"]["sha256"] == recipe["stage1"]["kept"][2] and prov["stage1_phases"] == []
    assert set(prov["init"]) == {"denoiser"} and prov["round"] == 15


def test_train_demo_registry_entry_names_the_photos_its_recipe_trained_on(tmp_path):
    """The exported entry's ``dataset`` says which built-in photos trained the pair: the shipped
    round's text byte for byte for ``photos="train"``, glymur's photos named for ``"train_all"``."""
    s1, den = tmp_path / "s1.pth", tmp_path / "den.pth"
    s1.write_bytes(b"stage one")
    den.write_bytes(b"denoiser")
    shipped = json.loads((REPO / "dehazeddpm" / "hub" / "weights.json").read_text())["entries"]["demo"]
    make = _load("train_demo").registry_entry
    for name in ("demo_round15.json", "demo_round13.json", "demo_round17.json"):
        recipe = json.loads((REPO / "scripts" / "recipes" / name).read_text())
        entry = make(recipe, s1, den)
        if name == "demo_round15.json":  # the shipped round: its stage 1 kept from round 8
            assert "kept" in recipe["stage1"]
            assert entry["dataset"] == shipped["dataset"] and entry["notes"] == shipped["notes"]
        elif name == "demo_round13.json":
            assert recipe["stage1"]["config"]["photos"] == "train_all"
            assert "MORE_TRAIN_PHOTOS" in entry["dataset"] and "glymur" in entry["dataset"]
            assert "WIDE_TRAIN_PHOTOS" not in entry["dataset"]
        else:  # both stages on the wallpaper photos too, credited where the entry points
            assert {recipe[r]["config"]["photos"] for r in ("stage1", "denoiser")} == {"train_wide"}
            assert "WIDE_TRAIN_PHOTOS" in entry["dataset"] and "assets/photos/README.md" in entry["dataset"]
        assert entry["stage1"]["size"] == 9 and entry["denoiser"]["size"] == 8


def test_train_demo_runs_stage1_phases_in_turn_and_keeps_finished_ones(tmp_path, capsys):
    """A recipe's ``more`` phases each start from the previous phase's result; a rerun keeps a
    finished phase (checked against its sidecar) instead of refusing or retraining it."""
    recipe = json.loads((REPO / "scripts" / "recipes" / "demo_round5.json").read_text())
    tiny = dict(crop=32, batch_size=1, steps=1, val_every=0, save_every=0, num_val=1, val_crop=32)
    recipe["stage1"]["config"].update(tiny)
    recipe["stage1"]["more"] = [{**recipe["stage1"]["config"], "steps": 2, "seed": 9, "airlight_cast": 1.0,
                                 "loss_weights": {"colour": 1.0}}]
    path = tmp_path / "phases.json"
    path.write_text(json.dumps(recipe))
    train_demo = _load("train_demo")
    out = tmp_path / "run"
    assert train_demo.main(["--recipe", str(path), "--out", str(out), "--phase", "stage1"]) == 0
    first, second = out / "stage1" / "stage1_final.pth", out / "stage1_2" / "stage1_final.pth"
    side = json.loads(second.with_suffix(".json").read_text())
    assert side["step"] == 2 and side["config"]["init_checkpoint"] == str(first)
    assert side["config"]["loss_weights"]["colour"] == 1.0
    stamps = (first.stat().st_mtime_ns, second.stat().st_mtime_ns)
    capsys.readouterr()
    assert train_demo.main(["--recipe", str(path), "--out", str(out)]) == 0  # all phases: stage 1 kept, export
    assert "kept" in capsys.readouterr().out
    assert (first.stat().st_mtime_ns, second.stat().st_mtime_ns) == stamps
    prov = json.loads((out / "export" / "demo_provenance.json").read_text())
    assert [p["steps"] for p in prov["stage1_phases"]] == [1, 2] and prov["steps_done"]["stage1"] == 2
    # an unfinished phase in the folder (an interrupted run) is one line pointing at --resume
    (tmp_path / "cut" / "stage1").mkdir(parents=True)
    (tmp_path / "cut" / "stage1" / "resume_stage1.pt").write_bytes(b"left by a killed run")
    with pytest.raises(SystemExit, match="unfinished stage1 run: rerun with --resume"):
        train_demo.main(["--recipe", str(path), "--out", str(tmp_path / "cut"), "--phase", "stage1"])
    assert (tmp_path / "cut" / "stage1" / "resume_stage1.pt").read_bytes() == b"left by a killed run"


def test_wallpaper_photos_refuses_files_it_does_not_know_in_one_line(tmp_path, capsys):
    """The photos are remade only from the two packages whose sha256 it records: a renamed or
    corrupt file is refused before anything under assets/photos is touched."""
    mod = _load("wallpaper_photos")
    assets = {p.name: p.read_bytes() for p in mod.OUT.glob("*")}
    assert set(mod.SOURCES) == {p.stem for p in mod.OUT.glob("*.jpg")}  # one source per shipped photo
    fake = tmp_path / "lomiri-wallpapers-16.04_20.04.0-2_all.deb"
    fake.write_bytes(b"not a package")
    other = tmp_path / "photos.deb"
    other.write_bytes(b"")
    for deb, why in ((fake, "does not have the sha256 recorded for it"), (other, "is not one of")):
        with pytest.raises(SystemExit) as exc:
            mod.main([str(deb)])
        assert why in str(exc.value) and "\n" not in str(exc.value)
    assert {p.name: p.read_bytes() for p in mod.OUT.glob("*")} == assets


def test_mix_stage1_interpolates_every_weight_between_two_stage1_files(tmp_path):
    """alpha 0 and 1 give the two files' weights exactly, 0.5 their mean; a denoiser or an alpha
    outside [0, 1] is refused in one line and nothing is written."""
    import torch

    from dehazeddpm.io import load_stage1, save_stage1
    from dehazeddpm.models import Stage1Net

    torch.manual_seed(0)
    a, b = Stage1Net(), Stage1Net()
    save_stage1(a, tmp_path / "a.pth")
    torch.save({"params": {k: v.half() for k, v in b.state_dict().items()}}, tmp_path / "b.pth")  # fp16, as shipped
    mod = _load("mix_stage1")
    for alpha in (0.0, 0.5, 1.0):
        out = tmp_path / f"mix{alpha}.pth"
        assert mod.main([str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--alpha", str(alpha), "--out", str(out)]) == 0
        got = load_stage1(out).state_dict()
        for k, v in a.state_dict().items():
            want = torch.lerp(v.float(), b.state_dict()[k].half().float(), alpha)
            assert torch.equal(got[k], want), (alpha, k)
    den = tmp_path / "den.pth"
    den.write_bytes((REPO / "dehazeddpm" / "assets" / "demo_denoiser.pth").read_bytes())
    for args, why in (([str(tmp_path / "a.pth"), str(den), "--alpha", "0.5"], "load it with load_denoiser"),
                      ([str(tmp_path / "a.pth"), str(tmp_path / "b.pth"), "--alpha", "1.5"], "alpha must lie in [0, 1]")):
        with pytest.raises(SystemExit) as exc:
            mod.main(args + ["--out", str(tmp_path / "bad.pth")])
        assert why in str(exc.value)
    assert not (tmp_path / "bad.pth").exists()
