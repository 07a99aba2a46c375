"""`dehazeddpm dehaze` / `dehazeddpm eval`: inputs of every kind, corrupt files, resume, sharding."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dehazeddpm import NoiseSchedule, Stage1Net, UNet, save_denoiser, save_stage1
from dehazeddpm.cli import main
from dehazeddpm.cli.dehaze import collect_inputs, shard
from dehazeddpm.evaluation import pair_folders
from dehazeddpm.io.images import load_image, to_pil
from dehazeddpm.metrics import psnr, ssim
from dehazeddpm.utils import torchrun_env

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> list:
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_stage1(Stage1Net(), d / "s1.pth")
    unet = UNet(in_channel=7, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=(1, 2),
                attn_res=(8,), res_blocks=1, image_size=16)
    sched = NoiseSchedule.from_config({"schedule": "linear", "n_timestep": 2000,
                                       "linear_start": 1e-6, "linear_end": 1e-2})
    save_denoiser(unet, d / "den_gen.pth", sched)
    return ["--stage1", str(d / "s1.pth"), "--denoiser", str(d / "den_gen.pth"), "--unet-config", '{"norm_groups": 8}', "--steps", "2", "--quiet"]


SIZES = {"odd": (53, 37), "gray": (11, 9), "rgba": (10, 12), "deep": (6, 13), "tiny": (1, 1)}  # (w, h)


@pytest.fixture()
def inputs(tmp_path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(d / "odd.png")
    Image.fromarray(rng.integers(0, 256, (9, 11), dtype=np.uint8)).save(d / "gray.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8)).save(d / "rgba.png")
    Image.fromarray(rng.integers(0, 65536, (13, 6), dtype=np.uint16)).save(d / "deep.png")  # I;16
    Image.fromarray(np.full((1, 1, 3), 200, dtype=np.uint8)).save(d / "tiny.png")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (d / "notes.txt").write_text("not an image")
    return d


def _listing(d: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in sorted(d.iterdir())}


def test_dehaze_folder_resume_and_errors(tmp_path, inputs, ckpts, capsys):
    out = tmp_path / "out"
    rc = main(["dehaze", str(inputs), "-o", str(out), *ckpts])
    err = capsys.readouterr().err
    assert rc == 1  # the corrupt input makes the run fail at the end ...
    assert "corrupt.png" in err and "notes.txt" not in err
    files = _listing(out)
    assert sorted(files) == sorted(f"{k}.png" for k in SIZES)  # ... after writing all the others
    for stem, size in SIZES.items():
        with Image.open(out / f"{stem}.png") as im:
            assert im.size == size and im.mode == "RGB"
    assert not any(name.startswith(".") or name.endswith(".tmp") for name in os.listdir(out))

    # A rerun resumes: nothing rewritten, same exit status.
    rc2 = main(["dehaze", str(inputs), "-o", str(out), *ckpts])
    assert rc2 == 1 and _listing(out) == files
    # Deleting one output redoes that one only.
    (out / "gray.png").unlink()
    (inputs / "corrupt.png").unlink()
    assert main(["dehaze", str(inputs), "-o", str(out), *ckpts]) == 0
    after = _listing(out)
    assert set(after) == set(files)
    assert all(after[k] == files[k] for k in files if k != "gray.png")


def test_dehaze_glob_and_intermediates(tmp_path, inputs, ckpts):
    out = tmp_path / "o2"
    assert main(["dehaze", str(inputs / "od*.png"), str(inputs / "tiny.png"), "-o", str(out),
                 "--save-intermediates", *ckpts]) == 0
    assert sorted(os.listdir(out)) == ["odd.png", "stage1", "tiny.png"]
    assert sorted(os.listdir(out / "stage1")) == sorted(f"{s}_{k}.png" for s in ("odd", "tiny") for k in "JTA")
    for f in (out / "odd.png", *(out / "stage1" / f"odd_{k}.png" for k in "JTA")):
        with Image.open(f) as im:
            assert im.size == (53, 37)
    with Image.open(out / "stage1" / "odd_T.png") as im:
        assert im.mode == "L"


def test_dehaze_missing_input_is_an_error(tmp_path, ckpts, capsys):
    rc = main(["dehaze", str(tmp_path / "nothing*.png"), "-o", str(tmp_path / "o"), *ckpts])
    assert rc != 0 and "nothing" in capsys.readouterr().err


def test_steps_zero_writes_stage1_j(tmp_path, inputs, ckpts):
    out = tmp_path / "o3"
    args = [a if a != "2" else "0" for a in ckpts]
    assert main(["dehaze", str(inputs / "odd.png"), "-o", str(out), "--save-intermediates", *args]) == 0
    assert np.array_equal(np.asarray(Image.open(out / "odd.png")), np.asarray(Image.open(out / "stage1" / "odd_J.png")))


def test_stage1_size_option_reaches_stage1(tmp_path, inputs, ckpts):
    """--stage1-size N runs stage 1 at shorter side N (J brought back to the input's size)."""
    from dehazeddpm.inference.working_size import stage1_at_size
    from dehazeddpm.io.checkpoints import load_stage1

    args = [a if a != "2" else "0" for a in ckpts]
    for name, extra in (("full", []), ("sized", ["--stage1-size", "16"])):
        assert main(["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / name), *args, *extra]) == 0
    hazy = load_image(inputs / "odd.png")
    with torch.no_grad():
        expect = stage1_at_size(load_stage1(ckpts[1]), hazy, 16).J
    sized = np.asarray(Image.open(tmp_path / "sized" / "odd.png"))
    assert sized.shape == (37, 53, 3)
    assert np.array_equal(sized, np.asarray(to_pil(expect)))
    assert not np.array_equal(sized, np.asarray(Image.open(tmp_path / "full" / "odd.png")))


def test_denoise_size_option_reaches_the_denoiser(tmp_path, inputs, ckpts):
    """--denoise-size N runs the chain at shorter side N; the output keeps the input's size."""
    seen = {}
    for name, extra in (("full", []), ("sized", ["--denoise-size", "16"]), ("same", ["--denoise-size", "37"])):
        assert main(["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / name), *ckpts, *extra]) == 0
        seen[name] = np.asarray(Image.open(tmp_path / name / "odd.png"))
    assert seen["sized"].shape == seen["full"].shape == (37, 53, 3)
    assert not np.array_equal(seen["sized"], seen["full"])
    assert np.array_equal(seen["same"], seen["full"])  # 37 px is the image's shorter side: full resolution


@pytest.mark.parametrize("bad, message", [(["--stage1-size", "-1"], "must be >= 0"),
                                          (["--denoise-size", "-2"], "must be >= 0"), (["--eta", "1.5"], "in [0, 1]"),
                                          (["--steps", "two"], "expected an integer"), (["--tile", "0"], "must be >= 1")])
def test_bad_sampling_options_are_usage_errors(tmp_path, inputs, ckpts, capsys, bad, message):
    """Out-of-range options stop the run before any model loads or output is written."""
    with pytest.raises(SystemExit) as exc:
        main(["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / "o"), *ckpts, *bad])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_collect_inputs(inputs):
    paths, problems = collect_inputs([str(inputs), str(inputs / "odd.png"), str(inputs / "*.txt"), "nope/*.png"])
    names = [p.name for p in paths]
    assert names == sorted(names) and "notes.txt" not in names and names.count("odd.png") == 1
    assert "corrupt.png" in names  # found by extension; decoding fails later and is reported
    assert problems == [f"no image found for '{inputs / '*.txt'}'", "no image found for 'nope/*.png'"]


def test_inputs_that_give_nothing_say_why(tmp_path, ckpts, capsys):
    gifs = tmp_path / "gifs"
    gifs.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(gifs / "a.gif")
    _, problems = collect_inputs([str(gifs)])
    assert len(problems) == 1 and ".gif" in problems[0] and ".png" in problems[0]
    out = tmp_path / "o"
    out.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(out / "done.png")
    _, problems = collect_inputs([str(out / "*.png")], exclude=out)
    assert problems == [f"'{out / '*.png'}' matches only files in the output folder {out} (outputs are never inputs)"]
    assert main(["dehaze", str(gifs), "-o", str(tmp_path / "o2"), *ckpts]) == 1
    _one_error_line(capsys.readouterr().err, "no readable image", ".gif")


def test_a_bad_pixel_limit_is_one_line_before_any_model_loads(tmp_path, ckpts, capsys, monkeypatch):
    monkeypatch.setenv("DEHAZEDDPM_MAX_PIXELS", "abc")
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(src / f"{i}.png")
    assert main(["dehaze", str(src), "-o", str(tmp_path / "o"), *ckpts]) == 2
    err = capsys.readouterr().err
    _one_error_line(err, "DEHAZEDDPM_MAX_PIXELS='abc'")
    assert err.count("DEHAZEDDPM_MAX_PIXELS") == 1


@pytest.mark.parametrize("world", [1, 2, 3])
def test_shard_splits_sorted_inputs(world):
    items = [f"img{i:02d}.png" for i in (7, 3, 0, 9, 4, 1, 8, 2, 6, 5, 10)]
    parts = [shard(items, r, world) for r in range(world)]
    assert sorted(sum(parts, [])) == sorted(items)  # every item exactly once
    assert all(len(set(p)) == len(p) for p in parts)
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    for r, part in enumerate(parts):
        assert part == sorted(items)[r::world]
    with pytest.raises(ValueError):
        shard(items, world, world)


def test_torchrun_env():
    assert torchrun_env({}) == (0, 1, 0)
    assert torchrun_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"}) == (2, 3, 0)
    for bad, name in (({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
                      ({"RANK": "-1"}, "RANK"), ({"WORLD_SIZE": "0"}, "WORLD_SIZE")):
        with pytest.raises(ValueError, match=name):
            torchrun_env(bad)


def test_eval_pred_and_hazy(tmp_path, ckpts, capsys):
    rng = np.random.default_rng(1)
    gt, pred, hazy = tmp_path / "gt", tmp_path / "pred", tmp_path / "hazy"
    for d in (gt, pred, hazy):
        d.mkdir()
    for name in ("a", "b"):
        g = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        Image.fromarray(g).save(gt / f"{name}_GT.png")
        noisy = np.clip(g.astype(int) + rng.integers(-20, 21, g.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(pred / f"{name}.png")
        Image.fromarray(noisy).save(hazy / f"{name}_hazy.png")
    pairs, lonely = pair_folders(pred, gt)
    assert [p.name for p in pairs] == ["a", "b"] and lonely == []

    report = tmp_path / "r.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--format", "json", "--out", str(report),
                 "--quiet"]) == 0
    data = json.loads(report.read_text())
    expect = [psnr(load_image(pred / f"{n}.png"), load_image(gt / f"{n}_GT.png")) for n in ("a", "b")]
    assert [r["psnr"] for r in data["images"]] == pytest.approx(expect)
    assert data["summary"]["scored"]["psnr"] == pytest.approx(sum(expect) / 2)
    assert data["images"][0]["ssim"] == pytest.approx(ssim(load_image(pred / "a.png"), load_image(gt / "a_GT.png")))

    capsys.readouterr()
    assert main(["eval", "--hazy", str(hazy), "--gt", str(gt), *ckpts]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("name,run,seed,psnr,ssim,ciede2000,haze,")
    # stage 1's J and the final image side by side, then their means
    assert [ln.split(",")[:2] for ln in lines[1:]] == [["a", "stage1"], ["a", "dehazed"], ["b", "stage1"],
                                                       ["b", "dehazed"], ["mean", "stage1"], ["mean", "dehazed"]]


def test_help_subprocess():
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-m", "dehazeddpm", "dehaze", "--help"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--save-intermediates" in r.stdout and "--stage1" in r.stdout


def test_unloadable_weights_exit_2(tmp_path, inputs, capsys):
    rc = main(["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / "o"), "--stage1",
               str(tmp_path / "missing_s1.pth"), "--denoiser", str(tmp_path / "missing_gen.pth"), "--quiet"])
    assert rc == 2 and "missing_s1.pth" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# -- folders, bad values, failing writes: one clear line, a non-zero code, nothing left behind --------

def _one_error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert lines and "Traceback" not in err, err
    for n in needles:
        assert any(n in ln for ln in lines), (n, err)


def test_output_folder_equal_to_an_input_folder_is_refused(inputs, ckpts, capsys):
    before = _listing(inputs)
    assert main(["dehaze", str(inputs), "-o", str(inputs), *ckpts]) == 2
    _one_error_line(capsys.readouterr().err, "also an input folder")
    assert _listing(inputs) == before
    assert main(["dehaze", str(inputs / "odd.png"), "-o", str(inputs), *ckpts]) == 2  # would overwrite odd.png
    _one_error_line(capsys.readouterr().err, "inside the output folder")


def test_outputs_inside_the_input_tree_are_never_inputs(inputs, ckpts, capsys):
    (inputs / "corrupt.png").unlink()
    out = inputs / "out"
    args = ["dehaze", str(inputs / "*"), "-o", str(out), *[a for a in ckpts if a != "--quiet"]]
    assert main(args) == 0
    first = _listing(out)
    assert sorted(first) == sorted(f"{k}.png" for k in SIZES)
    capsys.readouterr()
    assert main(args) == 0  # the glob now also matches out/: its files are not inputs
    assert _listing(out) == first and "0 written, 5 already done" in capsys.readouterr().err


def test_intermediates_cannot_collide_with_another_inputs_outputs(tmp_path, ckpts):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    for name in ("a", "a_J"):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(src / f"{name}.png")
    out = tmp_path / "out"
    assert main(["dehaze", str(src), "-o", str(out), "--save-intermediates", *ckpts]) == 0
    assert sorted(os.listdir(out)) == ["a.png", "a_J.png", "stage1"]
    assert len(os.listdir(out / "stage1")) == 6  # a_J, a_T, a_A, a_J_J, a_J_T, a_J_A


def test_eval_refuses_two_images_of_one_name(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for d in (pred, gt):
        d.mkdir()
    img = Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8))
    img.save(pred / "a.png")
    img.save(pred / "a.jpg")
    img.save(gt / "a.png")
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "a.jpg and a.png")


def test_eval_json_is_strict_and_out_must_be_a_file(tmp_path, capsys):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    for d in (pred, gt):
        d.mkdir()
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(pred / "a.png")
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(gt / "a.png")  # identical: PSNR is infinite
    report = tmp_path / "r.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--format", "json", "--out", str(report), "--quiet"]) == 0
    data = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["images"][0]["psnr"] is None and data["summary"]["scored"]["psnr"] is None
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path), "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "is a folder")
    assert sorted(os.listdir(tmp_path)) == ["gt", "pred", "r.json", "r.json.rows.jsonl"]


def test_non_finite_weights_are_a_clear_error(tmp_path, inputs, ckpts, capsys):
    from dehazeddpm.io import read_checkpoint
    sd = read_checkpoint(ckpts[1])
    sd["params"]["last.weight"] = torch.full_like(sd["params"]["last.weight"], float("nan"))
    torch.save(sd, tmp_path / "nan_s1.pth")
    args = ["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / "o"), "--stage1", str(tmp_path / "nan_s1.pth"),
            *ckpts[2:]]
    assert main(args) == 2
    _one_error_line(capsys.readouterr().err, "NaN or inf", "last.weight")
    assert not (tmp_path / "o").exists()  # found before anything was written


@pytest.mark.parametrize("bad,message", [(["--seed", "99999999999999999999"], "seed must be"),
                                         (["--device", "cuda"], "CUDA is not available"),
                                         (["--device", "tpu9"], "unknown device")])
def test_bad_run_options_are_one_line(tmp_path, inputs, ckpts, capsys, bad, message):
    if "cuda" in bad and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    try:
        rc = main(["dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / "o"), *ckpts, *bad])
    except SystemExit as exc:  # usage errors exit through argparse
        rc = exc.code
    assert rc == 2
    _one_error_line(capsys.readouterr().err, message)
    assert not list((tmp_path / "o").glob("*.png")) if (tmp_path / "o").exists() else True


def test_output_folder_problems_are_found_before_any_model_loads(tmp_path, inputs, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    missing_model = ["--stage1", str(tmp_path / "no.pth"), "--denoiser", str(tmp_path / "no2.pth")]
    assert main(["dehaze", str(inputs / "odd.png"), "-o", str(blocker), *missing_model]) == 2
    _one_error_line(capsys.readouterr().err, "is a file")
    assert main(["dehaze", str(inputs / "odd.png"), "-o", str(blocker / "sub"), *missing_model]) == 2
    _one_error_line(capsys.readouterr().err, "cannot write to the output folder")


def test_a_full_disk_stops_the_batch_with_one_line(tmp_path, inputs, ckpts, capsys, monkeypatch):
    import errno

    from dehazeddpm.io import images

    def full(path, write, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images, "atomic_write", full)
    assert main(["dehaze", str(inputs), "-o", str(tmp_path / "o"), *ckpts]) == 1
    _one_error_line(capsys.readouterr().err, "No space left on device", "stopped after 0 image(s)")


def test_float_images_beyond_one_and_huge_images_are_skipped_by_name(tmp_path, ckpts, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.linspace(0, 1.2, 400, dtype=np.float32).reshape(20, 20)).save(src / "hdr.tif")
    Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(src / "wide.png")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(src / "small.png")
    assert main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--max-pixels", "1000", *ckpts]) == 1
    err = capsys.readouterr().err
    _one_error_line(err, "hdr.tif", "expected [0, 1]")
    _one_error_line(err, "wide.png", "2,000 pixels")
    assert os.listdir(tmp_path / "o") == ["small.png"]


def test_leftovers_of_a_killed_run_are_removed(tmp_path, inputs, ckpts):
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".odd.png.tmp-{int(dead.stdout)}-deadbeef").write_bytes(b"")
    assert main(["dehaze", str(inputs / "odd.png"), "-o", str(out), *ckpts]) == 0
    assert os.listdir(out) == ["odd.png"]


def test_bad_torchrun_variables_are_one_line(tmp_path, inputs):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WORLD_SIZE": "2", "RANK": "seven", "DEHAZEDDPM_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "dehazeddpm", "dehaze", str(inputs / "odd.png"), "-o", str(tmp_path / "o")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "RANK='seven' is not an integer" in r.stderr


def _one_input(tmp_path) -> Path:
    d = tmp_path / "in1"
    d.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (16, 20, 3), dtype=np.uint8)).save(d / "a.png")
    return d


def test_an_output_made_under_other_defaults_is_not_taken_as_done(tmp_path, capsys):
    """The record holds the options that ran, the weights' defaults folded in: an output an earlier
    version made with the same files and flags but other defaults (0.4's demo once averaged 3
    samples of a 7-step chain, and recorded only the flags given: none) is refused, not kept."""
    from dehazeddpm.cli.dehaze import RECORD_KEY
    from dehazeddpm.hub import resolve, sha256_file
    from dehazeddpm.io import read_png_text, save_image_atomic

    src, out = _one_input(tmp_path), tmp_path / "o"
    out.mkdir()
    files = resolve("demo")
    earlier = json.dumps({"stage1": sha256_file(files.stage1), "denoiser": sha256_file(files.denoiser),
                          "unet_config": None, "options": {}, "seed": 0, "intermediates": False}, sort_keys=True)
    save_image_atomic(Image.new("RGB", (20, 16)), out / "a.png", text={RECORD_KEY: earlier})
    assert main(["dehaze", str(src / "a.png"), "-o", str(out), "--quiet"]) == 2
    _one_error_line(capsys.readouterr().err, "made with other weights or settings", "--overwrite")
    assert not np.asarray(Image.open(out / "a.png")).any()  # kept as it was
    assert main(["dehaze", str(src / "a.png"), "-o", str(out), "--quiet", "--overwrite"]) == 0
    ran = json.loads(read_png_text(out / "a.png")[RECORD_KEY])["options"]
    assert ran["steps"] == 20 and ran["samples"] == 2 and ran["start_strength"] == 0.3  # the demo's defaults
    assert ran["precision"] in ("bf16", "fp32")  # "auto" resolved on this CPU


@pytest.mark.parametrize("quiet", [False, True])
def test_outputs_made_otherwise_are_refused_not_counted_as_done(tmp_path, ckpts, capsys, quiet):
    """Each output records what made it: a rerun with other settings or weights refuses with a line
    that says how to choose (even with --quiet), and --overwrite redoes the image."""
    src, out = _one_input(tmp_path), tmp_path / "o"
    flags = [a for a in ckpts if a != "--quiet"] + (["--quiet"] if quiet else [])
    assert main(["dehaze", str(src), "-o", str(out), *flags]) == 0  # --steps 2
    first = (out / "a.png").read_bytes()
    capsys.readouterr()
    again = [*flags, "--steps", "0"]
    assert main(["dehaze", str(src), "-o", str(out), *again]) == 2
    _one_error_line(capsys.readouterr().err, "made with other weights or settings", "--overwrite")
    assert (out / "a.png").read_bytes() == first
    assert main(["dehaze", str(src), "-o", str(out), *again, "--seed", "1"]) == 2  # the seed is part of it too
    assert main(["dehaze", str(src), "-o", str(out), *again, "--overwrite"]) == 0
    redone = (out / "a.png").read_bytes()
    assert redone != first
    assert main(["dehaze", str(src), "-o", str(out), *again]) == 0  # now made with these settings: done
    assert (out / "a.png").read_bytes() == redone


def test_broken_outputs_are_redone_and_missing_weights_are_errors(tmp_path, ckpts, capsys):
    src, out = _one_input(tmp_path), tmp_path / "o"
    assert main(["dehaze", str(src), "-o", str(out), *ckpts]) == 0
    good = (out / "a.png").read_bytes()
    for broken in (b"", good[: len(good) // 2]):  # a zero-byte and a truncated output
        (out / "a.png").write_bytes(broken)
        assert main(["dehaze", str(src), "-o", str(out), *ckpts]) == 0
        assert (out / "a.png").read_bytes() == good
    gone = [tmp_path / "no_s1.pth" if a.endswith("s1.pth") else a for a in ckpts]
    capsys.readouterr()
    assert main(["dehaze", str(src), "-o", str(out), *map(str, gone)]) == 2  # outputs exist, weights do not
    _one_error_line(capsys.readouterr().err, "checkpoint not found")


def test_an_empty_output_folder_name_is_refused(tmp_path, ckpts, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _one_input(tmp_path)
    assert main(["dehaze", str(src), "-o", "", *ckpts]) == 2
    _one_error_line(capsys.readouterr().err, "-o is empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in1"]


@pytest.mark.parametrize("flags,needle", [
    (["--weights", "demo", "--unet-config", '{"norm_groups": 8}'], "--unet-config describes a --denoiser"),
    (["--device", "meta"], "runs on cpu, cuda or mps"),
    (["--device", "xpu"], "runs on cpu, cuda or mps"),
    (["--sampler", "ddpm", "--eta", "0.5"], "eta does not apply to the ddpm sampler"),
    (["--sampler", "dpmpp_2m", "--eta", "0.5"], "eta does not apply to the dpmpp_2m sampler"),
])
def test_options_that_would_be_dropped_are_refused(tmp_path, capsys, flags, needle):
    src = _one_input(tmp_path)
    try:  # usage errors leave through argparse (SystemExit 2), the others as one error line and code 2
        rc = main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--quiet", *flags])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    _one_error_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("config", ['{"norm_groups": 0}', '{"norm_groups": "16"}', '{"norm_groups": 16.0}',
                                    '{"norm_groups": true}', '{"norm_groups": -16}', '{"channel_mults": 5}',
                                    '{"norm_groups": 7}'])
def test_bad_unet_configs_are_one_line(tmp_path, ckpts, capsys, config):
    src = _one_input(tmp_path)
    flags = [a for a in ckpts]
    flags[flags.index("--unet-config") + 1] = config
    assert main(["dehaze", str(src), "-o", str(tmp_path / "o"), *flags]) in (1, 2)
    _one_error_line(capsys.readouterr().err, "UNet config")


@pytest.mark.parametrize("content", ['[1, 2]', '{"files": {"demo/x.pth": "abc"}}', '{"files": 3}'])
def test_recorded_hashes_of_the_wrong_structure_are_one_line(tmp_path, monkeypatch, capsys, content):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "recorded_hashes.json").write_text(content)
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(cache))
    for argv in (["info"], ["download", "nh-haze"], ["dehaze", str(_one_input(tmp_path)), "-o", str(tmp_path / "o"),
                                                       "--weights", "nh-haze", "--quiet"]):
        assert main(argv) != 0
        _one_error_line(capsys.readouterr().err, "recorded hashes", "Delete it")


def test_a_cache_variable_that_names_a_file_says_so(tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("x")
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "f"))
    assert main(["info"]) != 0
    _one_error_line(capsys.readouterr().err, "DEHAZEDDPM_CACHE", "is a file")
