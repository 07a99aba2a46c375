"""Where downloaded weights live, and the sha256 values recorded the first time each arrived.

The released files have no published sha256: the first download records one in
``<cache>/recorded_hashes.json`` and every later use must match it.

Environment: ``DEHAZEDDPM_CACHE`` (cache folder), ``DEHAZEDDPM_OFFLINE=1`` (never use the network).
"""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..utils import atomic_write, env_flag
from .errors import WeightsError
from .registry import get_entry

__all__ = ["COLAB_DRIVE", "RECORDED_HASHES_FILE", "cache_dir", "cache_path", "forget_recorded_hash", "is_offline", "record_hash",
           "record_key", "recorded_hashes", "recorded_hashes_path", "sha256_file"]

RECORDED_HASHES_FILE = "recorded_hashes.json"
OFFLINE_ENV = "DEHAZEDDPM_OFFLINE"
CACHE_ENV = "DEHAZEDDPM_CACHE"
COLAB_DRIVE = Path("/content/drive/MyDrive")  # where Colab mounts Google Drive
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where downloaded weights live.

    ``DEHAZEDDPM_CACHE`` if set; else, when Google Drive is mounted on Colab, a Drive folder
    (so weights survive the VM); else ``$XDG_CACHE_HOME/dehazeddpm`` (``~/.cache/dehazeddpm``).
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        path = Path(env).expanduser()
        if path.exists() and not path.is_dir():
            raise WeightsError(f"{CACHE_ENV}={env} is a file, not a folder: point it at a folder for the weights")
        return path
    if COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "dehazeddpm_cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dehazeddpm"


def cache_path(entry_name: str, filename: str, cache: Optional[Path] = None) -> Path:
    """Cache location of one file of one entry: ``<cache>/<entry>/<filename>``."""
    return (cache if cache is not None else cache_dir()) / entry_name / filename


def is_offline() -> bool:
    """True when ``DEHAZEDDPM_OFFLINE`` is set to 1/true/yes/on: never touch the network."""
    return env_flag(OFFLINE_ENV)


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def record_key(entry_name: str, filename: str) -> str:
    """The key of one file in the recorded hashes: ``"<entry>/<filename>"``."""
    return f"{entry_name}/{filename}"


def recorded_hashes_path(cache: Optional[Path] = None) -> Path:
    """The JSON file holding sha256 values recorded on first download."""
    return (cache if cache is not None else cache_dir()) / RECORDED_HASHES_FILE


def recorded_hashes(cache: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """Recorded hashes by ``"<entry>/<filename>"``; empty when nothing was recorded yet."""
    path = recorded_hashes_path(cache)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"cannot read the recorded hashes {path}: {exc}. Delete it to start afresh "
            "(the next use records the hashes again).") from None
    files = data.get("files") if isinstance(data, dict) else None
    good = isinstance(files, dict) and all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values())
    if not good:
        raise WeightsError(f"the recorded hashes {path} do not have the structure this package writes "
                           "({'files': {'<entry>/<file>': {'sha256': ...}}}). Delete it to start afresh "
                           "(the next use records the hashes again).")
    return dict(files)


def _write_records(cache: Path, files: Dict[str, Any]) -> None:
    text = json.dumps({"schema_version": 1, "files": files}, indent=2, sort_keys=True) + "\n"
    atomic_write(recorded_hashes_path(cache), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _records_lock(cache: Path):
    """Serialises read-modify-write of the recorded hashes across processes (parallel downloads)."""
    from filelock import FileLock

    cache.mkdir(parents=True, exist_ok=True)
    return FileLock(str(recorded_hashes_path(cache)) + ".lock", timeout=120)


def record_hash(cache: Path, key: str, digest: str, size: int, origin: str) -> None:
    """Record the sha256 of a file that arrived without a published one."""
    with _records_lock(cache):
        files = recorded_hashes(cache)
        files[key] = {"sha256": digest, "size": size, "origin": origin,
                      "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_records(cache, files)


def forget_recorded_hash(name: str, role: Optional[str] = None, cache: Optional[Path] = None) -> List[str]:
    """Drop the recorded sha256 of an entry's files (e.g. after the authors replaced a file)."""
    cache = cache if cache is not None else cache_dir()
    entry = get_entry(name)
    keys = [record_key(entry.name, spec.filename) for r, spec in entry.files.items() if role in (None, r)]
    with _records_lock(cache):
        files = recorded_hashes(cache)
        dropped = [k for k in keys if files.pop(k, None) is not None]
        if dropped:
            _write_records(cache, files)
    return dropped
