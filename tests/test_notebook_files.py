"""Where a notebook's files go: scratch that leaves nothing behind, and what the user keeps."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import dehazeddpm.viz.session as session_mod
from dehazeddpm.viz import NotebookSession, remove_stale_scratch

# A kernel in a child process: the scratch root is per process, and what happens at its exit
# (or when it is killed) is what these tests are about.
KERNEL = textwrap.dedent("""
    import os, signal, sys
    import torch
    from dehazeddpm.viz import NotebookSession
    s = NotebookSession(None, torch.device("cpu"), smoke=False)
    a, b, c = s.scratch("pairs"), s.scratch("pairs"), s.scratch("eval")
    (a / "x.png").write_bytes(b"1")
    print(a, b, c, sep="\\n", flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
""")


def _kernel(tmp: Path, how: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.run([sys.executable, "-c", KERNEL, how], env=env, capture_output=True, text=True, timeout=120)


def _ours(tmp: Path) -> list:
    return sorted(p.name for p in tmp.glob(session_mod.SCRATCH_PREFIX + "*"))


def test_scratch_is_one_folder_per_name_and_goes_when_the_kernel_exits(tmp_path):
    r = _kernel(tmp_path, "exit")
    assert r.returncode == 0, r.stderr
    a, b, c = (Path(line) for line in r.stdout.split())
    assert a == b != c and a.parent == c.parent and a.parent.parent == tmp_path
    assert a.name == "pairs" and c.name == "eval"
    assert _ours(tmp_path) == [] and not a.parent.exists()


@pytest.mark.skipif(os.name != "posix", reason="stale folders are found by their owner's pid")
def test_a_killed_kernels_scratch_is_removed_by_the_next_kernel_and_nothing_else(tmp_path):
    r = _kernel(tmp_path, "kill")
    assert r.returncode == -9
    left = Path(r.stdout.split()[0]).parent
    assert (left / "pairs" / "x.png").exists()  # no finalizer ran
    # beside it: a folder whose owner is alive (this test) and one with no owner file
    alive = tmp_path / (session_mod.SCRATCH_PREFIX + "alive")
    alive.mkdir()
    (alive / "owner.pid").write_text(str(os.getppid()))
    unknown = tmp_path / (session_mod.SCRATCH_PREFIX + "unknown")
    unknown.mkdir()
    r = _kernel(tmp_path, "exit")
    assert r.returncode == 0, r.stderr
    assert not left.exists()
    assert _ours(tmp_path) == sorted([alive.name, unknown.name])
    assert remove_stale_scratch(tmp_path) == 0


def test_keep_goes_to_drive_when_mounted_else_the_current_folder_and_in_smoke_mode_to_scratch(
        tmp_path, monkeypatch):
    monkeypatch.setattr(session_mod.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(session_mod, "_scratch_root", None)
    monkeypatch.chdir(tmp_path)
    drive = tmp_path / "MyDrive"
    monkeypatch.setattr(session_mod, "COLAB_DRIVE", drive)
    cpu = torch.device("cpu")
    user, ci = NotebookSession(None, cpu, smoke=False), NotebookSession(None, cpu, smoke=True)
    assert user.keep("dehazeddpm_finetune") == tmp_path / "dehazeddpm_finetune"
    drive.mkdir()
    assert user.keep("dehazeddpm_finetune") == drive / "dehazeddpm_finetune"
    kept = ci.keep("dehazeddpm_dehazed.png")
    assert kept.parent == ci.scratch("kept") and kept.parent.parent.parent == tmp_path / "tmp"
    assert not (drive / "dehazeddpm_dehazed.png").exists()
    # the temporary folder emptied under a running kernel: made again, not an error
    root = ci.scratch("pairs").parent
    for p in sorted(root.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    root.rmdir()
    assert ci.scratch("pairs").is_dir() and (root / "owner.pid").read_text() == str(os.getpid())


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/abs", 3, None])
def test_a_name_with_a_path_in_it_is_refused(name):
    s = NotebookSession(None, torch.device("cpu"), smoke=False)
    for make in (s.scratch, s.keep):
        with pytest.raises(ValueError, match="plain file or folder name"):
            make(name)
