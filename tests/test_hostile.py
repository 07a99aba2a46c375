"""Hostile inputs replayed black-box through the CLI and the public API: each answers with the
right output, or one ``error:`` line and a non-zero exit, and leaves nothing behind."""
from __future__ import annotations

import argparse
import os

import numpy as np
import pytest
import torch
from PIL import Image

import dehazeddpm as dd
from dehazeddpm import hub
from dehazeddpm.cli import main
from dehazeddpm.io import read_png_text


def _error_line(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if "error:" in ln]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert all(n in lines[0] for n in needles), (needles, err)


def _photo(path, hw=(40, 56), seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*hw, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def src(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    _photo(d / "a.png")
    return d


@pytest.mark.parametrize("length", [236, 245, 251])
def test_inputs_with_names_as_long_as_the_file_system_allows(tmp_path, length):
    d = tmp_path / "in"
    d.mkdir()
    _photo(d / ("x" * (length - 4) + ".png"))
    out = tmp_path / "o"
    assert main(["dehaze", str(d), "-o", str(out), "--steps", "0", "--quiet"]) == 0
    assert [p.name for p in out.iterdir()] == ["x" * (length - 4) + ".png"]


def test_a_tile_smaller_than_the_weights_overlap_runs(src, tmp_path):
    # the demo's defaults carry tile_overlap 8 for its 136 px tiles; an 8 px tile takes its own overlap
    out = tmp_path / "o"
    assert main(["dehaze", str(src), "-o", str(out), "--tile", "8", "--quiet"]) == 0
    assert (out / "a.png").is_file()


def test_a_legacy_checkpoint_holding_python_objects_is_called_that(tmp_path, src, capsys):
    torch.save({"args": argparse.Namespace(lr=1), "params": {}}, tmp_path / "legacy.pth",
               _use_new_zipfile_serialization=False)
    res = hub.resolve("demo")
    rc = main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--stage1", str(tmp_path / "legacy.pth"),
               "--denoiser", str(res.denoiser), "--quiet"])
    assert rc != 0
    _error_line(capsys.readouterr().err, "holds Python objects")


def test_numpy_seeds_and_option_dicts_are_accepted():
    pipe = dd.DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    x = torch.rand(1, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    a = pipe(x, seed=np.int64(3), progress=False, options={"steps": np.int64(2)})
    b = pipe(x, seed=3, progress=False, steps=2)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.options == b.options


def test_the_demo_denoiser_beside_another_stage1_file_gives_the_demo_output(src, tmp_path):
    res = hub.resolve("demo")
    dd.save_stage1(dd.load_stage1(res.stage1).float(), tmp_path / "s1_fp32.pth")
    assert main(["dehaze", str(src), "-o", str(tmp_path / "named"), "--weights", "demo", "--quiet"]) == 0
    assert main(["dehaze", str(src), "-o", str(tmp_path / "files"), "--stage1", str(tmp_path / "s1_fp32.pth"),
                 "--denoiser", str(res.denoiser), "--quiet"]) == 0
    named, files = (np.asarray(Image.open(tmp_path / d / "a.png")) for d in ("named", "files"))
    assert np.array_equal(named, files)


def test_the_output_record_is_inside_the_png(src, tmp_path):
    out = tmp_path / "o"
    assert main(["dehaze", str(src), "-o", str(out), "--steps", "2", "--seed", "4", "--quiet"]) == 0
    record = read_png_text(out / "a.png")["dehazeddpm"]
    assert '"seed": 4' in record and '"steps": 2' in record and hub.resolve("demo").denoiser.name not in record
    assert os.listdir(out) == ["a.png"]  # nothing else left behind


def test_web_pages_placed_in_the_cache_are_never_trusted(tmp_path, monkeypatch, src, capsys):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    folder = tmp_path / "cache" / "nh-haze"
    folder.mkdir(parents=True)
    for name in ("NH_net_g_80000.pth", "NH_I230000_E4600_gen.pth"):
        (folder / name).write_bytes(b"<!DOCTYPE html><html>Quota exceeded</html>\n")  # 55 bytes, as Drive sends
    assert main(["dehaze", str(src), "-o", str(tmp_path / "o"), "--weights", "nh-haze", "--quiet"]) != 0
    _error_line(capsys.readouterr().err, "not a stage1 checkpoint", "dehazeddpm download nh-haze --force")
    assert main(["download", "nh-haze", "--forget-hash", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "ready" not in err and "not a stage1 checkpoint" in err
    assert hub.recorded_hashes() == {}
    choice = dd.choose_weights(device="cpu")  # the notebooks' rule goes on with the demo, and says why
    assert choice.name == "demo" and "cannot be used" in choice.reason and not (tmp_path / "o").exists()


@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_short_chains_through_the_cli(tmp_path, steps):
    from dehazeddpm.data import make_eval_set
    src = tmp_path / "in"
    hazy, _ = make_eval_set(tmp_path / "eval", size=48)[0]
    src.mkdir()
    (src / "a.png").write_bytes(hazy.read_bytes())
    out = tmp_path / f"s{steps}"
    assert main(["dehaze", str(src), "-o", str(out / "j"), "--steps", "0", "--quiet"]) == 0
    assert main(["dehaze", str(src), "-o", str(out / "d"), "--steps", str(steps), "--quiet"]) == 0
    j, d = (np.asarray(Image.open(out / k / "a.png"), dtype=np.float64) for k in ("j", "d"))
    psnr = 10 * np.log10(255.0 ** 2 / np.mean((j - d) ** 2))
    assert psnr > 22  # refines J; a 1-step chain once wrote saturated noise (8 dB) here
