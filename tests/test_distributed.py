"""The torchrun paths, run for real: two CPU ranks over gloo, launched the way users launch them."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import _assert_same_state

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is needed")


@pytest.fixture(autouse=True)
def _own_tmpdir(monkeypatch, tmp_path):
    # torchrun's agent makes a log folder in the temporary folder and never removes it
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))


def _torchrun(*args: str, mark: str = "", timeout: int = 240, wait: bool = True):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEHAZEDDPM_OFFLINE": "1", "DEHAZEDDPM_TEST_MARK": mark,
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "dehazeddpm", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _config(tmp_path: Path, name: str, **kw) -> Path:
    cfg = {"stage": "stage1", "out_dir": str(tmp_path / name), "crop": 32, "batch_size": 2, "steps": 4,
           "num_val": 1, "progress": False, "save_every": 2, "seed": 1, **kw}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def _models_equal(a: Path, b: Path) -> bool:
    sa, sb = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    return sa.keys() == sb.keys() and all(torch.equal(v, sb[k]) for k, v in sa.items())


def test_training_on_two_ranks_keeps_them_identical_and_writes_once(tmp_path):
    r = _torchrun("train", "stage1", "--config", str(_config(tmp_path, "run")))
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "run"
    assert sorted(os.listdir(out)) == ["latest_stage1.json", "resume_stage1.pt", "resume_stage1.rank1.pt", "stage1_000002.json",
                                       "stage1_000002.pth", "stage1_final.json", "stage1_final.pth",
                                       "val_stage1_000004.png"]  # checkpoints and the pointer by rank 0 only
    assert json.loads((out / "latest_stage1.json").read_text())["checkpoint"] == "stage1_final.pth"
    assert _models_equal(out / "resume_stage1.pt", out / "resume_stage1.rank1.pt")  # DDP kept them in step
    assert r.stdout.count("checkpoint:") == 1


def test_two_rank_training_resumes_exactly(tmp_path):
    assert _torchrun("train", "stage1", "--config", str(_config(tmp_path, "straight"))).returncode == 0
    half = _config(tmp_path, "halves", steps=2)
    assert _torchrun("train", "stage1", "--config", str(half)).returncode == 0
    r = _torchrun("train", "stage1", "--config", str(half), "--steps", "4", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("resume_stage1.pt", "resume_stage1.rank1.pt"):
        _assert_same_state(tmp_path / "straight" / name, tmp_path / "halves" / name)


def test_denoiser_training_on_two_ranks(tmp_path):
    from dehazeddpm.io import save_stage1
    from dehazeddpm.models import Stage1Net
    torch.manual_seed(0)
    s1 = save_stage1(Stage1Net(), tmp_path / "s1.pth")
    unet = {"in_channel": 7, "out_channel": 3, "inner_channel": 8, "norm_groups": 4, "channel_mults": [1, 2],
            "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 32}
    cfg = _config(tmp_path, "den", stage="denoiser", stage1_checkpoint=str(s1), unet=unet, steps=2, save_every=0,
                  val_sampler_steps=2)
    r = _torchrun("train", "denoiser", "--config", str(cfg))
    assert r.returncode == 0, r.stderr[-3000:]
    assert _models_equal(tmp_path / "den" / "resume_denoiser.pt", tmp_path / "den" / "resume_denoiser.rank1.pt")


def test_dehaze_on_two_ranks_writes_every_output_once(tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(src / f"img{i}.png")
    r = _torchrun("dehaze", str(src), "-o", str(out), "--steps", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(os.listdir(out)) == [f"img{i}.png" for i in range(5)]
    # the two ranks' summaries (their stderr interleaves with rank 0's progress bar)
    counts = dict((int(rank), int(n)) for n, rank in
                  re.findall(r"dehazeddpm dehaze: (\d+) written, \d+ already done, \d+ failed \(rank (\d) of 2\)", r.stderr))
    assert counts == {0: 3, 1: 2}, r.stderr[-2000:]  # sorted inputs r::2: three for rank 0, two for rank 1, none twice


def _pid_of_rank(mark: str, rank: int) -> int:
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DEHAZEDDPM_TEST_MARK={mark}".encode() in env and f"LOCAL_RANK={rank}".encode() in env:
            return int(proc.name)
    return 0


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank's process through /proc")
def test_a_rank_that_dies_fails_the_run_with_a_clear_line(tmp_path):
    mark = uuid.uuid4().hex
    cfg = _config(tmp_path, "long", steps=10_000, save_every=1)
    proc = _torchrun("train", "stage1", "--config", str(cfg), mark=mark, wait=False)
    try:
        deadline = time.monotonic() + 120
        saved = [tmp_path / "long" / n for n in ("resume_stage1.pt", "resume_stage1.rank1.pt")]
        while not all(p.is_file() for p in saved) and time.monotonic() < deadline:
            time.sleep(0.2)
        pid = _pid_of_rank(mark, 1)
        assert pid, "rank 1 never started"
        os.kill(pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0
    line = next((ln for ln in err.splitlines() if ln.startswith("dehazeddpm train: error:")), err[-3000:])
    assert "rank 0 of 2 stopped" in line and "--resume continues" in line
    # what was saved is whole: the run resumes from it
    assert torch.load(tmp_path / "long" / "resume_stage1.pt", weights_only=True)["step"] >= 1


def test_a_rank_without_rank_0_says_so_within_its_timeout(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"stage": "stage1", "out_dir": str(tmp_path / "run"), "crop": 32, "batch_size": 1,
                               "steps": 1, "num_val": 1, "progress": False}))
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "DEHAZEDDPM_RENDEZVOUS_TIMEOUT": "2"}
    r = subprocess.run([sys.executable, "-m", "dehazeddpm", "train", "stage1", "--config", str(cfg)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "frame #" not in r.stderr, r.stderr
    assert "waiting up to 2 s for rank 0" in r.stderr and "no rank 0 answered" in r.stderr
