"""The weights registry, cache location, status report, resolve() offline, and the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dehazeddpm import hub as W
from dehazeddpm.diffusion import RELEASED_SCHEDULE
from dehazeddpm.models import DEMO_UNET, RELEASED_UNET, UNetConfig

REPO = Path(__file__).resolve().parents[1]
REQUIRED = {"description", "dataset", "condition", "citation", "stage1", "denoiser",
            "unet_config", "schedule"}
FOLDER_ID = "1I7sH6vb9oWOZeIVu6-xh9Xm5lnwdzHa7"


@pytest.fixture(autouse=True)
def _tmp_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")  # nothing here may use the network


REGISTRY = REPO / "dehazeddpm" / "hub" / "weights.json"


def _raw() -> dict:
    return json.loads(REGISTRY.read_text())


# --------------------------------------------------------------------------------------------
# Registry file
# --------------------------------------------------------------------------------------------

def test_the_one_registry_is_inside_the_hub():
    assert W.REGISTRY_PATH == Path(W.__file__).parent / "weights.json" == REGISTRY
    package = Path(W.__file__).parents[1]  # the package's own files, whatever build/ or dist/ hold
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("weights.json")) == ["hub/weights.json"]


def test_every_entry_has_the_required_fields():
    raw = _raw()["entries"]
    assert {"nh-haze", "dense-haze", "demo"} <= set(raw)
    for name, entry in raw.items():
        assert REQUIRED <= set(entry), name
        assert entry["condition"] == "J+T"
        for role in ("stage1", "denoiser"):
            spec = entry[role]
            assert spec["source"] in W.SOURCES
            assert spec["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", spec["sha256"]), (name, role)
            assert "size" in spec and (spec["size"] is None or spec["size"] > 0)
    reg = W.load_registry()
    assert set(reg) == set(raw)
    assert all(isinstance(e, W.WeightsEntry) for e in reg.values())


def test_demo_entry_is_the_demo_unet_constant():
    e = W.get_entry("demo")
    assert UNetConfig.from_dict(e.unet_config) == DEMO_UNET and e.schedule == RELEASED_SCHEDULE


@pytest.mark.parametrize("name,stage1,denoiser", [
    ("nh-haze", "NH_net_g_80000.pth", "NH_I230000_E4600_gen.pth"),
    ("dense-haze", "DENSE_net_g_120000.pth", "DENSE_I130000_E2600_gen.pth"),
])
def test_released_entries(name, stage1, denoiser):
    e = W.get_entry(name)
    assert UNetConfig.from_dict(e.unet_config) == RELEASED_UNET  # the registry holds the one constant's values
    assert e.schedule == RELEASED_SCHEDULE
    assert e.condition == "J+T" and "arXiv:2308.11949" in e.citation and "Hu Yu" in e.citation
    assert e.stage1.filename == stage1 and e.stage1.source == "url"
    assert e.stage1.url == f"https://github.com/yuhuUSTC/DehazeDDPM/raw/main/pretrained_PreNet_pth/{stage1}"
    assert e.denoiser.filename == denoiser and e.denoiser.source == "gdrive-folder"
    assert e.denoiser.id == FOLDER_ID == W.RELEASE_DRIVE_FOLDER_ID
    assert FOLDER_ID in e.denoiser.manual_page
    # No published hashes: they must stay unknown rather than invented.
    assert e.stage1.sha256 is None and e.denoiser.sha256 is None
    assert e.dataset == {"nh-haze": "NH-HAZE", "dense-haze": "Dense-Haze"}[name]


def test_released_config_builds_the_unet_config():
    from dehazeddpm.models.unet import UNetConfig
    cfg = UNetConfig.from_dict(W.get_entry("nh-haze").unet_config)
    assert cfg.channel_mults == (1, 2, 4, 8, 8) and cfg.condition == "J+T"


def test_demo_entry_is_bundled():
    e = W.get_entry("demo")
    assert (e.stage1.source, e.stage1.path) == ("package", "assets/demo_stage1.pth")
    assert (e.denoiser.source, e.denoiser.path) == ("package", "assets/demo_denoiser.pth")


def test_the_bundled_denoiser_carries_the_registry_defaults():
    """An export writes the entry's defaults into the denoiser file (so a copy the registry does not
    recognise runs like ``--weights demo``): a change of the defaults needs the recipe's export."""
    from dehazeddpm.io.checkpoints import checkpoint_metadata
    from dehazeddpm.options import SamplingOptions

    entry = W.get_entry("demo")
    saved = checkpoint_metadata(Path(W.__file__).parents[1] / entry.denoiser.path)["defaults"]
    assert SamplingOptions.from_mapping(saved) == entry.defaults


def test_sampling_defaults_are_validated():
    from dehazeddpm.options import SamplingOptions
    assert W.get_entry("demo").defaults == SamplingOptions(sampler="ddim", start_strength=0.3, eta=1.0,
                                                           stage1_size=128, stage1_detail=3, denoise_size=128,
                                                           tile_size=256, samples=2)  # Rules S2, S3, W1 and W3 (W5b: no mirror)
    # released weights sample as the reference does: from pure noise, stage 1 at full resolution
    assert W.get_entry("nh-haze").defaults == SamplingOptions() == W.get_entry("dense-haze").defaults
    base = dict(_raw()["entries"]["demo"])
    assert W.WeightsEntry.from_dict("demo", dict(base, defaults={"eta": 0})).defaults == SamplingOptions(eta=0)
    for bad, field in (({"start_strength": 0}, "start_strength"), ({"start_strength": 1.5}, "start_strength"),
                       ({"start_strength": "0.3"}, "start_strength"), ({"eta": -0.1}, "eta"), ({"eta": 1.5}, "eta"),
                       ({"eta": True}, "eta"), ({"colour": 10}, "colour"), ({"stage1_size": -3}, "stage1_size"),
                       ({"stage1_size": 1.5}, "stage1_size"), ({"stage1_size": True}, "stage1_size"),
                       ({"sampler": "euler"}, "sampler"), ({"samples": 0}, "samples"),
                       ({"steps": 2.5}, "steps"), ([0.3], "object")):
        with pytest.raises(W.WeightsError, match=f"'demo'.*defaults.*{field}"):
            W.WeightsEntry.from_dict("demo", dict(base, defaults=bad))


def test_unknown_name_lists_known_names():
    with pytest.raises(W.UnknownWeightsError) as err:
        W.get_entry("nh_hazy")
    for known in ("nh-haze", "dense-haze", "demo"):
        assert known in str(err.value)
    assert isinstance(err.value, LookupError) and isinstance(err.value, W.WeightsError)
    assert W.get_entry("NH_HAZE").name == "nh-haze"


def _write_registry(tmp_path, mutate) -> Path:
    raw = _raw()
    mutate(raw["entries"]["nh-haze"])
    path = tmp_path / "reg.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("mutate,match", [
    (lambda e: e["stage1"].update(sha256="abc"), "64 hex"),
    (lambda e: e["stage1"].update(filename="../x.pth"), "plain file name"),
    (lambda e: e["stage1"].update(source="ftp"), "source"),
    (lambda e: e.pop("citation"), "missing fields"),
    (lambda e: e.update(colour="blue"), "unknown keys"),
    (lambda e: e["denoiser"].pop("id"), "folder 'id'"),
])
def test_invalid_registry_is_rejected(tmp_path, mutate, match):
    with pytest.raises(W.WeightsError, match=match):
        W.load_registry(_write_registry(tmp_path, mutate))


# --------------------------------------------------------------------------------------------
# Cache location and offline flag
# --------------------------------------------------------------------------------------------

def test_cache_dir_honours_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(tmp_path / "elsewhere"))
    assert W.cache_dir() == tmp_path / "elsewhere"
    assert W.cache_path("nh-haze", "f.pth") == tmp_path / "elsewhere" / "nh-haze" / "f.pth"


@pytest.mark.skipif(Path("/content/drive/MyDrive").is_dir(), reason="Colab Drive mounted")
def test_cache_dir_defaults_to_xdg(tmp_path, monkeypatch):
    monkeypatch.delenv("DEHAZEDDPM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert W.cache_dir() == tmp_path / "xdg" / "dehazeddpm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert W.cache_dir() == tmp_path / "home" / ".cache" / "dehazeddpm"


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("", False), ("0", False)])
def test_is_offline(monkeypatch, value, expected):
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", value)
    assert W.is_offline() is expected


# --------------------------------------------------------------------------------------------
# Status and resolve() on files placed in a temporary cache
# --------------------------------------------------------------------------------------------

def _put(tmp_path, name, filename, body: bytes) -> Path:
    path = tmp_path / "cache" / name / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def _record(tmp_path, key, digest):
    path = tmp_path / "cache" / "recorded_hashes.json"
    data = json.loads(path.read_text()) if path.exists() else {"schema_version": 1, "files": {}}
    data["files"][key] = {"sha256": digest, "size": 0, "origin": "test"}
    path.write_text(json.dumps(data))


def test_weights_status_reports_present_missing_and_mismatch(tmp_path):
    nh = _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", b"stage one")
    dense = _put(tmp_path, "dense-haze", "DENSE_net_g_120000.pth", b"changed")
    _put(tmp_path, "dense-haze", "DENSE_I130000_E2600_gen.pth", b"denoiser")
    _record(tmp_path, "dense-haze/DENSE_net_g_120000.pth", hashlib.sha256(b"original").hexdigest())
    _record(tmp_path, "dense-haze/DENSE_I130000_E2600_gen.pth", hashlib.sha256(b"denoiser").hexdigest())

    rows = {(r["name"], r["role"]): r for r in W.weights_status()}
    assert len(rows) == 2 * len(W.load_registry())
    r = rows["nh-haze", "stage1"]
    assert r["present"] and r["status"] == "unverified" and r["size"] == len(b"stage one")
    assert r["path"] == str(nh) and r["sha256"] == hashlib.sha256(b"stage one").hexdigest()
    assert "no sha256" in r["detail"]
    r = rows["nh-haze", "denoiser"]
    assert not r["present"] and r["status"] == "missing" and r["size"] is None
    r = rows["dense-haze", "stage1"]
    assert r["present"] and r["status"] == "hash mismatch" and r["path"] == str(dense)
    r = rows["dense-haze", "denoiser"]
    assert r["status"] == "unverified" and "recorded on first download" in r["detail"]
    demo = rows["demo", "stage1"]
    assert demo["status"] == ("not bundled" if not demo["present"] else demo["status"])

    fast = {(r["name"], r["role"]): r for r in W.weights_status(hash_files=False)}
    assert fast["dense-haze", "stage1"]["status"] == "unverified"
    assert fast["dense-haze", "stage1"]["sha256"] is None


def test_weights_status_verified_against_registry_hash(tmp_path):
    body = b"known file"
    raw = _raw()
    raw["entries"]["nh-haze"]["stage1"]["sha256"] = hashlib.sha256(body).hexdigest()
    (tmp_path / "reg.json").write_text(json.dumps(raw))
    reg = W.load_registry(tmp_path / "reg.json")
    _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", body)
    rows = {(r["name"], r["role"]): r for r in W.weights_status(reg)}
    assert rows["nh-haze", "stage1"]["status"] == "verified"
    _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", b"known filf")
    rows = {(r["name"], r["role"]): r for r in W.weights_status(reg)}
    assert rows["nh-haze", "stage1"]["status"] == "hash mismatch"


def test_resolve_offline_uses_cache_and_records_hash(tmp_path, released_cache):
    """Files placed in the cache by hand are checked (a loadable checkpoint of the right role for
    the entry) before their sha256 is recorded; afterwards the recorded hash guards them."""
    s1 = _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", b"s1")
    den = _put(tmp_path, "nh-haze", "NH_I230000_E4600_gen.pth", b"den")
    with pytest.raises(W.WeightsError, match="not a stage1 checkpoint"):
        W.resolve("nh-haze")
    assert W.recorded_hashes() == {}
    s1.unlink()
    s1.symlink_to(released_cache / "nh-haze" / "NH_I230000_E4600_gen.pth")  # the denoiser, in stage 1's place
    with pytest.raises(W.WeightsError, match="not a stage1 checkpoint.*stage-2"):
        W.resolve("nh-haze")
    for path in (s1, den):
        path.unlink()
        path.symlink_to(released_cache / "nh-haze" / path.name)
    res = W.resolve("nh-haze")
    assert (res.stage1, res.denoiser) == (s1, den)
    assert not res.verified
    digest = W.sha256_file(den)
    assert res.notes["denoiser"] == f"unverified (sha256 recorded on first download: {digest})"
    record = W.recorded_hashes()["nh-haze/NH_I230000_E4600_gen.pth"]
    assert record["sha256"] == digest and "placed in the cache by hand" in str(record)
    assert UNetConfig.from_dict(res.unet_config) == RELEASED_UNET

    den.unlink()
    den.write_bytes(b"DEN")  # damaged after the first use
    with pytest.raises(W.HashMismatchError, match="corrupt.*--force --forget-hash"):
        W.resolve("nh-haze")
    assert W.forget_recorded_hash("nh-haze", "denoiser") == ["nh-haze/NH_I230000_E4600_gen.pth"]
    with pytest.raises(W.WeightsError, match="not a denoiser checkpoint"):  # forgetting the hash trusts nothing
        W.resolve("nh-haze")


def test_resolve_missing_offline_and_without_download(tmp_path):
    with pytest.raises(W.DownloadError) as err:
        W.resolve("dense-haze")
    msg = str(err.value)
    assert isinstance(err.value, W.WeightsMissingError)
    assert "offline" in msg and "dehazeddpm download dense-haze" in msg
    assert str(tmp_path / "cache" / "dense-haze" / "DENSE_net_g_120000.pth") in msg
    with pytest.raises(W.WeightsMissingError, match="switched off"):
        W.resolve("dense-haze", download=False)


def test_resolve_user_paths_win(tmp_path):
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"a")
    b.write_bytes(b"b")
    res = W.resolve("nh-haze", stage1=a, denoiser=str(b))
    assert (res.stage1, res.denoiser) == (a, b)
    assert res.notes["stage1"].startswith("user-supplied")
    with pytest.raises(W.WeightsMissingError, match="not found"):
        W.resolve("nh-haze", stage1=tmp_path / "nope.pth", denoiser=b)


def test_resolve_bundled_file_missing(tmp_path):
    demo = W.get_entry("demo")
    entry = W.WeightsEntry(
        name="demo-missing", description="", dataset="", citation="",
        stage1=W.FileSpec("x.pth", "package", path="assets/definitely_absent.pth"),
        denoiser=demo.denoiser, unet_config=demo.unet_config, schedule=demo.schedule)
    with pytest.raises(W.BundledWeightsMissingError, match="not bundled in this build"):
        W.resolve(entry)


def test_force_offline_keeps_the_cached_copy(tmp_path):
    s1 = _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", b"s1")
    _put(tmp_path, "nh-haze", "NH_I230000_E4600_gen.pth", b"den")
    with pytest.raises(W.WeightsMissingError, match="left as it is"):
        W.resolve("nh-haze", force=True)
    assert s1.read_bytes() == b"s1"


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _cli(tmp_path, *args):
    env = dict(os.environ, DEHAZEDDPM_CACHE=str(tmp_path / "cache"), DEHAZEDDPM_OFFLINE="1",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dehazeddpm", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def test_cli_info(tmp_path):
    _put(tmp_path, "nh-haze", "NH_net_g_80000.pth", b"s1")
    proc = _cli(tmp_path, "info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert str(tmp_path / "cache") in out
    assert "torch" in out and "device" in out and "offline      yes" in out
    line = next(ln for ln in out.splitlines() if "NH_net_g_80000.pth" in ln)
    assert "unverified" in line and "nh-haze" in line
    assert "NH_I230000_E4600_gen.pth" in out and "missing" in out


def test_cli_download_offline_fails_cleanly(tmp_path):
    proc = _cli(tmp_path, "download", "nh-haze")
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "offline" in err and "NH_net_g_80000.pth" in err
    proc = _cli(tmp_path, "download", "nope")
    assert proc.returncode != 0 and "known names" in proc.stderr and "Traceback" not in proc.stderr

