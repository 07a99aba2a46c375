"""The shared helpers: atomic writes and their leftovers, shapes, padding, env flags, torchrun."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from dehazeddpm import physics
from dehazeddpm.diffusion import GaussianNoise, MeanFreeNoise, zero_mean
from dehazeddpm.utils import (
    atomic_write,
    env_flag,
    pad_to_multiple,
    remove_stale_temporaries,
    scaled_shape,
    temporary_name,
    write_json,
)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path):
    path = tmp_path / "sub" / "f.txt"
    atomic_write(path, lambda tmp: tmp.write_text("one"))
    assert path.read_text() == "one" and os.listdir(path.parent) == ["f.txt"]

    def fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, fail)
    assert path.read_text() == "one" and os.listdir(path.parent) == ["f.txt"]  # nothing left behind


def test_write_json_is_atomic_indented_and_keeps_an_old_file_on_failure(tmp_path):
    from pathlib import Path

    path = tmp_path / "deep" / "r.json"
    assert write_json(path, {"a": [1, 2], "p": Path("x/y")}) == path
    assert path.read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "p": "x/y"\n}\n'
    with pytest.raises(ValueError):  # a circular structure cannot be written: the old file stays
        loop: dict = {}
        loop["self"] = loop
        write_json(path, loop)
    assert '"p": "x/y"' in path.read_text() and os.listdir(path.parent) == ["r.json"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".out.png.tmp-{dead_pid}-abcd"
    stale.write_bytes(b"")
    live = temporary_name(tmp_path / "other.png")  # this process: a write in progress
    live.write_bytes(b"x")
    (tmp_path / "keep.png").write_bytes(b"y")
    (tmp_path / ".hidden").write_bytes(b"z")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "keep.png", ".hidden"])


def test_scaled_shape_and_padding():
    assert scaled_shape(500, 741, 128) == (128, 190)
    assert scaled_shape(500, 741, 256, side="longer") == (173, 256)
    assert scaled_shape(1, 1000, 4) == (4, 4000)
    with pytest.raises(ValueError):
        scaled_shape(10, 10, 0)
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    y, hw = pad_to_multiple(x, 16)
    assert hw == (3, 4) and y.shape == (1, 1, 16, 16) and torch.equal(y[..., :3, :4], x)


def test_env_flag(monkeypatch):
    for value, expected in (("1", True), ("Yes", True), ("on", True), ("0", False), ("", False)):
        monkeypatch.setenv("DEHAZEDDPM_TEST_FLAG", value)
        assert env_flag("DEHAZEDDPM_TEST_FLAG") is expected
    monkeypatch.delenv("DEHAZEDDPM_TEST_FLAG")
    assert env_flag("DEHAZEDDPM_TEST_FLAG") is False


def test_scattering_model_round_trip():
    g = torch.Generator().manual_seed(0)
    J, T = torch.rand(1, 3, 8, 8, generator=g), 0.2 + 0.8 * torch.rand(1, 1, 8, 8, generator=g)
    A = torch.tensor([0.9, 0.8, 0.7]).view(1, 3, 1, 1)
    I = physics.rehaze(J, T, A)
    torch.testing.assert_close(physics.invert(I, T, A), J)
    torch.testing.assert_close(physics.transmission(torch.zeros(2), 1.5), torch.ones(2))


def test_mean_free_noise_is_the_same_draw_without_its_mean():
    plain = GaussianNoise(torch.Generator().manual_seed(3))((2, 3, 8, 8))
    free = MeanFreeNoise(torch.Generator().manual_seed(3))((2, 3, 8, 8))
    torch.testing.assert_close(free, zero_mean(plain))
    torch.testing.assert_close(free.mean(dim=(-2, -1)), torch.zeros(2, 3), atol=1e-6, rtol=0)
