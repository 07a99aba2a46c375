"""colab_setup.setup() outside Colab: harmless, informative, never raises."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import colab_setup  # noqa: E402

# An audit hook sees every socket connect / name lookup in this process, whoever makes it.
_NET_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"}
_watch = {"on": False, "seen": []}


def _audit(event, args):
    if _watch["on"] and event in _NET_EVENTS:
        _watch["seen"].append((event, args))


sys.addaudithook(_audit)


@pytest.fixture
def network_watch():
    _watch["seen"].clear()
    _watch["on"] = True
    yield _watch["seen"]
    _watch["on"] = False


@pytest.fixture(autouse=True)
def _tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "cache"))


@pytest.mark.skipif(colab_setup.in_colab(), reason="running on Colab")
def test_setup_outside_colab(monkeypatch, tmp_path, capsys, network_watch):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    info = colab_setup.setup(weights=None, install=False)
    assert info["in_colab"] is False
    assert info["package"]["importable"] is True and info["package"]["installed_now"] is False
    assert info["weights"] is None
    assert info["device"] in ("cpu", "cuda", "mps")
    assert not any(k in info for k in ("fp16", "tile_size", "steps", "smoke"))  # the package's policy, not a second one
    assert info["cache_dir"] == str(tmp_path / "cache") and info["offline"] is True
    assert info["drive_mounted"] is False
    out = capsys.readouterr().out
    assert "device:" in out and "suggested" not in out
    assert network_watch == []


@pytest.mark.skipif(colab_setup.in_colab(), reason="running on Colab")
def test_setup_offline_reports_missing_weights(monkeypatch, tmp_path, network_watch):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    info = colab_setup.setup(weights="nh-haze", install=False, quiet=True)
    w = info["weights"]
    assert w["name"] == "nh-haze" and w["ok"] is False and w["missing"] is True
    assert "offline" in w["error"] and "NH_net_g_80000.pth" in w["error"]
    assert w["stage1"] is None and w["denoiser"] is None
    assert network_watch == []
    assert not (tmp_path / "cache" / "nh-haze").exists()


@pytest.mark.skipif(colab_setup.in_colab(), reason="running on Colab")
def test_setup_reports_unknown_weights_and_ignores_mount(monkeypatch, network_watch):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    info = colab_setup.setup(weights="no-such-model", mount_drive=True, install=False, quiet=True)
    assert info["weights"]["ok"] is False and "known names" in info["weights"]["error"]
    assert info["drive_mounted"] is False
    assert any("mount_drive ignored" in w for w in info["warnings"])
    assert network_watch == []


def test_setup_uses_cached_weights(monkeypatch, tmp_path, released_cache):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    folder = tmp_path / "cache" / "nh-haze"
    folder.mkdir(parents=True)
    for name in ("NH_net_g_80000.pth", "NH_I230000_E4600_gen.pth"):  # what a hand-placed web page looks like
        (folder / name).write_bytes(b"<html>" + name.encode())
    bad = colab_setup.setup(weights="nh-haze", install=False, quiet=True)["weights"]
    assert bad["ok"] is False and "not a stage1 checkpoint" in bad["error"]
    for name in ("NH_net_g_80000.pth", "NH_I230000_E4600_gen.pth"):  # the real files, placed by hand
        (folder / name).unlink()
        (folder / name).symlink_to(released_cache / "nh-haze" / name)
    info = colab_setup.setup(weights="nh-haze", install=False, quiet=True)
    w = info["weights"]
    assert w["ok"] is True and w["missing"] is False
    assert w["stage1"] == str(folder / "NH_net_g_80000.pth")
    assert "recorded on first download" in w["notes"]["denoiser"]
