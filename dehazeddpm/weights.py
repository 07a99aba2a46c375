"""Weights registry, cache and downloads.

``weights.json`` (shipped inside the package) lists each named set of weights: a stage-1 file
(``netH``, MPRfusion: predicts J, T, A) and a denoiser file (``netG``, the SR3 UNet inside the
diffusion wrapper), plus the UNet config and noise schedule they were trained with.

Files come from one of four sources: ``url`` (plain HTTP(S), fetched with urllib), ``gdrive``
(one Google Drive file, through gdown), ``gdrive-folder`` (a file picked by name out of a shared
Drive folder, through gdown) or ``package`` (bundled with this package, never downloaded).

Downloads stream to a temporary file beside the destination and are moved into place only
after the byte count and sha256 check out, so the cache never holds a half-written file. The
released files have no published sha256: the first download records one in
``<cache>/recorded_hashes.json`` and every later use must match it.

Environment: ``DEHAZEDDPM_CACHE`` (cache folder), ``DEHAZEDDPM_OFFLINE=1`` (never use the
network).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import inspect
import json
import os
import re
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

__all__ = [
    "REGISTRY_PATH", "RELEASE_DRIVE_FOLDER_ID", "SOURCES",
    "WeightsError", "DownloadError", "WeightsMissingError", "HashMismatchError",
    "BundledWeightsMissingError", "UnknownWeightsError",
    "FileSpec", "WeightsEntry", "ResolvedWeights",
    "load_registry", "get_entry", "cache_dir", "cache_path", "is_offline", "sha256_file",
    "recorded_hashes_path", "recorded_hashes", "forget_recorded_hash",
    "download_file", "download_gdrive", "download_gdrive_folder", "translate_gdown_error",
    "gdrive_file_id", "resolve", "weights_status", "device_info", "package_version",
    "register_cli",
]

REGISTRY_PATH = Path(__file__).parent / "weights.json"
RELEASE_DRIVE_FOLDER_ID = "1I7sH6vb9oWOZeIVu6-xh9Xm5lnwdzHa7"
SOURCES = ("url", "gdrive", "gdrive-folder", "package")
ROLES = ("stage1", "denoiser")
RECORDED_HASHES_FILE = "recorded_hashes.json"

_COLAB_DRIVE = Path("/content/drive/MyDrive")
_CHUNK = 1 << 20
_USER_AGENT = "dehazeddpm-weights (Python urllib)"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_TRUTHY = {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------

class WeightsError(RuntimeError):
    """Base class for every expected failure of this module (the CLI prints these as one line)."""


class DownloadError(WeightsError):
    """A file could not be fetched, or what arrived is not the expected file."""


class WeightsMissingError(DownloadError):
    """A file is not on disk and may not be downloaded (offline mode or ``download=False``)."""


class HashMismatchError(DownloadError):
    """A file's sha256 differs from the registry's or from the one recorded on first download."""


class BundledWeightsMissingError(WeightsError):
    """A ``package`` file is absent from this build of the package."""


class UnknownWeightsError(WeightsError, LookupError):
    """No registry entry has the requested name."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

_SPEC_KEYS = {"filename", "source", "url", "id", "path", "page", "sha256", "size"}
_ENTRY_REQUIRED = ("description", "dataset", "condition", "citation", "stage1", "denoiser",
                   "unet_config", "schedule")
_ENTRY_OPTIONAL = ("notes", "ddim_defaults", "stage1_size")
# pipeline arguments an entry may set for its DDIM sampling (a weights file's measured best use)
DDIM_DEFAULT_KEYS = ("start_strength", "eta")


@dataclass(frozen=True)
class FileSpec:
    """Where one weights file comes from and how to recognise it."""

    filename: str
    source: str  # one of SOURCES
    url: Optional[str] = None  # "url" source; a "gdrive" source may give a Drive link instead of id
    id: Optional[str] = None  # Drive file id ("gdrive") or folder id ("gdrive-folder")
    path: Optional[str] = None  # path inside the package ("package" source)
    page: Optional[str] = None  # where a person can download the file by hand
    sha256: Optional[str] = None
    size: Optional[int] = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "file spec") -> "FileSpec":
        """Validate and build a spec from its JSON object."""
        if not isinstance(data, Mapping):
            raise WeightsError(f"{where}: expected an object, got {type(data).__name__}")
        unknown = sorted(set(data) - _SPEC_KEYS)
        if unknown:
            raise WeightsError(f"{where}: unknown keys {unknown}; allowed: {sorted(_SPEC_KEYS)}")
        filename = data.get("filename")
        # The filename becomes a path in the cache: it must not be able to leave it.
        if (not isinstance(filename, str) or not filename or filename in (".", "..")
                or "/" in filename or "\\" in filename):
            raise WeightsError(f"{where}: 'filename' must be a plain file name, got {filename!r}")
        source = data.get("source")
        if source not in SOURCES:
            raise WeightsError(f"{where}: 'source' must be one of {list(SOURCES)}, got {source!r}")
        sha = data.get("sha256")
        if sha is not None and (not isinstance(sha, str) or not _HEX64.match(sha)):
            raise WeightsError(f"{where}: 'sha256' must be null or 64 hex digits, got {sha!r}")
        size = data.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise WeightsError(f"{where}: 'size' must be null or a non-negative integer")
        spec = cls(filename=filename, source=source, url=data.get("url"), id=data.get("id"),
                   path=data.get("path"), page=data.get("page"),
                   sha256=sha.lower() if sha else None, size=size)
        if source == "url" and not (spec.url or "").startswith(("http://", "https://")):
            raise WeightsError(f"{where}: a 'url' source needs an http(s) 'url'")
        if source == "gdrive" and not (spec.id or spec.url):
            raise WeightsError(f"{where}: a 'gdrive' source needs a Drive file 'id' or 'url'")
        if source == "gdrive-folder" and not spec.id:
            raise WeightsError(f"{where}: a 'gdrive-folder' source needs the folder 'id'")
        if source == "package" and not spec.path:
            raise WeightsError(f"{where}: a 'package' source needs 'path' (relative to the package)")
        return spec

    @property
    def manual_page(self) -> str:
        """A web address a person can use to fetch the file by hand."""
        if self.page:
            return self.page
        if self.source == "url":
            return str(self.url)
        if self.source == "gdrive-folder":
            return f"https://drive.google.com/drive/folders/{self.id}"
        if self.source == "gdrive":
            return f"https://drive.google.com/file/d/{gdrive_file_id(self.id or self.url or '')}/view"
        return f"the dehazeddpm package ({self.path})"


@dataclass(frozen=True)
class WeightsEntry:
    """One named model: its two weights files and the settings they need."""

    name: str
    description: str
    stage1: FileSpec
    denoiser: FileSpec
    unet_config: Dict[str, Any]
    schedule: Dict[str, Any]
    dataset: str
    citation: str
    condition: str = "J+T"
    notes: Optional[str] = None
    ddim_defaults: Dict[str, Any] = field(default_factory=dict)
    # shorter side stage 1 runs at (working_size.stage1_at_size); None: full resolution
    stage1_size: Optional[int] = None

    @property
    def files(self) -> Dict[str, FileSpec]:
        return {"stage1": self.stage1, "denoiser": self.denoiser}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "WeightsEntry":
        """Validate and build an entry from its JSON object."""
        where = f"weights entry {name!r}"
        if not isinstance(data, Mapping):
            raise WeightsError(f"{where}: expected an object")
        missing = [k for k in _ENTRY_REQUIRED if k not in data]
        if missing:
            raise WeightsError(f"{where}: missing fields {missing}")
        unknown = sorted(set(data) - set(_ENTRY_REQUIRED) - set(_ENTRY_OPTIONAL))
        if unknown:
            raise WeightsError(f"{where}: unknown fields {unknown}")
        for key in ("unet_config", "schedule"):
            if not isinstance(data[key], Mapping):
                raise WeightsError(f"{where}: {key!r} must be an object")
        ddim_defaults = data.get("ddim_defaults") or {}
        if not isinstance(ddim_defaults, Mapping) or set(ddim_defaults) - set(DDIM_DEFAULT_KEYS):
            raise WeightsError(f"{where}: 'ddim_defaults' must be an object with keys from {list(DDIM_DEFAULT_KEYS)}")
        strength = ddim_defaults.get("start_strength", 1.0)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
            raise WeightsError(f"{where}: ddim_defaults.start_strength must be in (0, 1], got {strength!r}")
        eta = ddim_defaults.get("eta", 0.0)
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1:
            raise WeightsError(f"{where}: ddim_defaults.eta must be in [0, 1], got {eta!r}")
        stage1_size = data.get("stage1_size")
        if stage1_size is not None and (isinstance(stage1_size, bool) or not isinstance(stage1_size, int)
                                        or stage1_size < 1):
            raise WeightsError(f"{where}: 'stage1_size' must be null or a positive integer, got {stage1_size!r}")
        return cls(
            name=name,
            description=str(data["description"]),
            stage1=FileSpec.from_dict(data["stage1"], f"{where} stage1"),
            denoiser=FileSpec.from_dict(data["denoiser"], f"{where} denoiser"),
            unet_config=dict(data["unet_config"]),
            schedule=dict(data["schedule"]),
            dataset=str(data["dataset"]),
            citation=str(data["citation"]),
            condition=str(data["condition"]),
            notes=data.get("notes"),
            ddim_defaults=dict(ddim_defaults),
            stage1_size=stage1_size,
        )


@dataclass(frozen=True)
class ResolvedWeights:
    """Local paths of an entry's two files, and whether each matched a known sha256."""

    entry: WeightsEntry
    stage1: Path
    denoiser: Path
    stage1_verified: bool
    denoiser_verified: bool
    notes: Dict[str, str] = field(default_factory=dict)  # role -> one-line status for people

    @property
    def verified(self) -> bool:
        return self.stage1_verified and self.denoiser_verified

    @property
    def unet_config(self) -> Dict[str, Any]:
        return dict(self.entry.unet_config)

    @property
    def schedule(self) -> Dict[str, Any]:
        return dict(self.entry.schedule)

    @property
    def ddim_defaults(self) -> Dict[str, Any]:
        return dict(self.entry.ddim_defaults)

    @property
    def stage1_size(self) -> Optional[int]:
        return self.entry.stage1_size


def _read_registry_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    # A git checkout without symlink support (Windows) stores the link as a one-line text file
    # holding its target; follow it so the packaged copy still works there.
    stripped = text.strip()
    if stripped and not stripped.startswith("{") and "\n" not in stripped and len(stripped) < 512:
        target = (path.parent / stripped)
        if target.is_file():
            return target.read_text(encoding="utf-8")
    return text


def load_registry(path: Union[str, os.PathLike, None] = None) -> Dict[str, WeightsEntry]:
    """Parse ``weights.json`` (the packaged copy unless ``path`` is given) into entries by name."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = json.loads(_read_registry_text(path))
    except FileNotFoundError:
        raise WeightsError(f"weights registry not found at {path}") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights registry {path} is not valid JSON: {exc}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise WeightsError(f"weights registry {path} has no 'entries' object")
    return {name: WeightsEntry.from_dict(name, body) for name, body in entries.items()}


def _normalise_name(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_entry(name: str, registry: Optional[Mapping[str, WeightsEntry]] = None) -> WeightsEntry:
    """The registry entry called ``name`` (case and ``_``/``-`` insensitive)."""
    registry = load_registry() if registry is None else registry
    if name in registry:
        return registry[name]
    wanted = _normalise_name(str(name))
    for key, entry in registry.items():
        if _normalise_name(key) == wanted:
            return entry
    raise UnknownWeightsError(
        f"unknown weights {name!r}; known names: {', '.join(sorted(registry))}")


# --------------------------------------------------------------------------------------------
# Cache location, offline flag, hashes
# --------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    """Where downloaded weights live.

    ``DEHAZEDDPM_CACHE`` if set; else, when Google Drive is mounted on Colab, a Drive folder
    (so weights survive the VM); else ``$XDG_CACHE_HOME/dehazeddpm`` (``~/.cache/dehazeddpm``).
    """
    env = os.environ.get("DEHAZEDDPM_CACHE")
    if env:
        return Path(env).expanduser()
    if _COLAB_DRIVE.is_dir():
        return _COLAB_DRIVE / "dehazeddpm_cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "dehazeddpm"


def cache_path(entry_name: str, filename: str, cache: Optional[Path] = None) -> Path:
    """Cache location of one file of one entry: ``<cache>/<entry>/<filename>``."""
    return (cache if cache is not None else cache_dir()) / entry_name / filename


def is_offline() -> bool:
    """True when ``DEHAZEDDPM_OFFLINE`` is set to 1/true/yes/on: never touch the network."""
    return os.environ.get("DEHAZEDDPM_OFFLINE", "").strip().lower() in _TRUTHY


def sha256_file(path: Union[str, os.PathLike]) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


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
    return dict(files) if isinstance(files, dict) else {}


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{secrets.token_hex(4)}")
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        _unlink(tmp)


def _record_hash(cache: Path, key: str, digest: str, size: int, origin: str) -> None:
    files = recorded_hashes(cache)
    files[key] = {"sha256": digest, "size": size, "origin": origin,
                  "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    _write_json_atomic(recorded_hashes_path(cache), {"schema_version": 1, "files": files})


def forget_recorded_hash(name: str, role: Optional[str] = None,
                         cache: Optional[Path] = None) -> List[str]:
    """Drop the recorded sha256 of an entry's files (e.g. after the authors replaced a file)."""
    cache = cache if cache is not None else cache_dir()
    entry = get_entry(name)
    keys = [_record_key(entry.name, spec.filename)
            for r, spec in entry.files.items() if role in (None, r)]
    files = recorded_hashes(cache)
    dropped = [k for k in keys if files.pop(k, None) is not None]
    if dropped:
        _write_json_atomic(recorded_hashes_path(cache), {"schema_version": 1, "files": files})
    return dropped


def _record_key(entry_name: str, filename: str) -> str:
    return f"{entry_name}/{filename}"


# --------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------

def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # a leftover we cannot remove must not hide the real error
        pass


def _temp_sibling(dest: Path) -> Path:
    return dest.with_name(f"{dest.name}.part-{secrets.token_hex(4)}")


def _manual_hint(dest: Path, where: str) -> str:
    return (f"Download it by hand from {where} and place it at {dest}, "
            "or pass the path of your local copy instead.")


def _check_existing(dest: Path, expected: Optional[str]) -> Optional[str]:
    """Cache-hit test: ``""`` if dest exists and no hash is expected, its digest if it matches."""
    if not dest.is_file():
        return None
    if expected is None:
        return ""
    digest = sha256_file(dest)
    if digest != expected:
        raise HashMismatchError(
            f"cached file {dest} is corrupt: its sha256 is {digest}, expected {expected}. "
            f"Delete it (rm '{dest}') and run the download again.")
    return digest


def _refuse_offline(dest: Path, where: str) -> None:
    if is_offline():
        raise WeightsMissingError(
            f"offline mode (DEHAZEDDPM_OFFLINE=1): {dest.name} is not at {dest} and will not be "
            f"downloaded. Unset DEHAZEDDPM_OFFLINE to download it, or {_manual_hint(dest, where)}")


def _looks_wrong(path: Path) -> Optional[str]:
    """Why a downloaded weights file is obviously not one (a web page, an LFS pointer)."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip()
    low = head.lower()
    if low.startswith((b"<!doctype html", b"<html")) or (low.startswith(b"<") and b"<html" in low):
        return "the server sent a web page instead of the file (quota, login or error page)"
    if head.startswith(b"version https://git-lfs"):
        return "the server sent a Git LFS pointer instead of the file"
    return None


def _finish(tmp: Path, dest: Path, expected: Optional[str], digest: Optional[str],
            where: str) -> str:
    """Check a complete temp file and move it into place; returns its sha256."""
    digest = digest or sha256_file(tmp)
    if expected is not None and digest != expected:
        raise HashMismatchError(
            f"{dest.name} from {where} has sha256 {digest}, expected {expected}: the file is "
            f"corrupt or was replaced upstream. Nothing was written to {dest}. "
            + _manual_hint(dest, where))
    if expected is None:
        problem = _looks_wrong(tmp)
        if problem:
            raise DownloadError(f"{dest.name} from {where}: {problem}. " + _manual_hint(dest, where))
    try:
        os.replace(tmp, dest)
    except OSError as exc:
        raise DownloadError(f"could not move the download into place at {dest}: {exc}") from None
    return digest


class _Truncated(Exception):
    pass


class _LocalIOError(Exception):
    pass


def _retryable_status(code: int) -> bool:
    # 408/429 are the server asking us to come back later; other 4xx will not change.
    return code >= 500 or code in (408, 429)


def _progress_bar(total: Optional[int], desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                leave=False, file=sys.stderr)


def _stream_once(url: str, tmp: Path, timeout: float, progress: bool) -> Tuple[str, int]:
    """One GET of ``url`` into ``tmp``; returns (sha256, bytes). Raises on any shortfall."""
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        try:
            expected_len: Optional[int] = int(resp.headers.get("Content-Length", ""))
        except ValueError:
            expected_len = None
        h = hashlib.sha256()
        received = 0
        bar = _progress_bar(expected_len, tmp.name.split(".part-")[0], progress)
        try:
            try:
                f = open(tmp, "wb")
            except OSError as exc:
                raise _LocalIOError(exc) from exc
            with f:
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    try:
                        f.write(chunk)
                    except OSError as exc:
                        raise _LocalIOError(exc) from exc
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    raise _LocalIOError(exc) from exc
        finally:
            if bar is not None:
                bar.close()
    if expected_len is not None and received != expected_len:
        raise _Truncated(f"connection closed after {received} of {expected_len} bytes")
    return h.hexdigest(), received


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _Truncated):
        return f"truncated body ({exc})"
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"network error ({exc.reason})"
    if isinstance(exc, http.client.IncompleteRead):
        return f"truncated body ({len(exc.partial)} bytes, then the connection closed)"
    text = str(exc) or "no details"
    return f"{type(exc).__name__}: {text}"


def _fetch_url(url: str, dest: Path, expected: Optional[str], *, retries: int, timeout: float,
               progress: bool, backoff: float, force: bool = False,
               page: Optional[str] = None) -> str:
    """Download ``url`` to ``dest`` (see :func:`download_file`); returns the file's sha256."""
    where = page or url
    if not force:
        hit = _check_existing(dest, expected)
        if hit is not None:
            return hit
    if not url.lower().startswith(("http://", "https://")):
        raise DownloadError(f"unsupported URL {url!r}: only http(s) downloads are supported")
    _refuse_offline(dest, where)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DownloadError(f"cannot create the folder {dest.parent}: {exc}") from None
    attempts = max(0, int(retries)) + 1
    last = "no attempt made"
    for attempt in range(attempts):
        tmp = _temp_sibling(dest)
        try:
            digest, _ = _stream_once(url, tmp, timeout, progress)
            return _finish(tmp, dest, expected, digest, where)
        except urllib.error.HTTPError as exc:
            last = _describe(exc)
            if not _retryable_status(exc.code):
                raise DownloadError(f"download of {url} failed: {last}. "
                                    + _manual_hint(dest, where)) from None
        except _LocalIOError as exc:
            raise DownloadError(f"could not write the download next to {dest}: {exc}") from None
        except (urllib.error.URLError, http.client.HTTPException, _Truncated, OSError) as exc:
            # OSError covers timeouts and resets; URLError covers refused connections and DNS.
            last = _describe(exc)
        finally:
            _unlink(tmp)
        if attempt + 1 < attempts and backoff > 0:
            time.sleep(backoff * (2 ** attempt))
    raise DownloadError(f"download of {url} failed after {attempts} attempt(s): {last}. "
                        + _manual_hint(dest, where))


def download_file(url: str, dest: Union[str, os.PathLike], sha256: Optional[str] = None, *,
                  retries: int = 3, timeout: float = 60, progress: bool = True,
                  backoff: float = 0.5) -> Path:
    """Download ``url`` to ``dest`` atomically, checking ``sha256`` when given.

    An existing ``dest`` that matches (or any existing ``dest`` when no hash is given) is
    returned without touching the network; one with a wrong hash raises. Network errors,
    5xx replies and truncated bodies are retried ``retries`` times with exponential
    ``backoff`` seconds; a 4xx reply or a hash mismatch fails at once. Every failure raises
    :class:`DownloadError` and leaves neither ``dest`` nor a temporary file behind.
    """
    dest = Path(dest)
    expected = _normalise_sha(sha256)
    _fetch_url(url, dest, expected, retries=retries, timeout=timeout, progress=progress,
               backoff=backoff)
    return dest


def _normalise_sha(sha256: Optional[str]) -> Optional[str]:
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return sha256.lower()


_DRIVE_ID_PATTERNS = (
    re.compile(r"/file/d/([\w-]+)"),
    re.compile(r"/folders/([\w-]+)"),
    re.compile(r"[?&]id=([\w-]+)"),
)


def gdrive_file_id(id_or_url: str) -> str:
    """The Drive id inside a Drive link (``/file/d/ID``, ``?id=ID``, ``/folders/ID``), or the id."""
    text = id_or_url.strip()
    if "/" not in text and "?" not in text:
        return text
    for pattern in _DRIVE_ID_PATTERNS:
        m = pattern.search(text)
        if m:
            return m.group(1)
    raise ValueError(f"cannot find a Google Drive id in {id_or_url!r}")


_QUOTA_MARKERS = ("too many users", "cannot retrieve the public link", "many accesses", "quota")


def translate_gdown_error(exc: Optional[BaseException], *, filename: str, dest: Union[str, os.PathLike],
                          file_id: Optional[str] = None, page: Optional[str] = None) -> DownloadError:
    """Turn a gdown failure (an exception, or ``None`` for "returned no file") into a
    :class:`DownloadError` that explains the Drive quota and the manual way round it."""
    dest = Path(dest)
    page = page or f"https://drive.google.com/drive/folders/{RELEASE_DRIVE_FOLDER_ID}"
    manual = (f"To get it by hand: open {page} , download {filename} and put it at {dest} "
              "(or pass the path of your copy instead).")
    what = f"{filename}" + (f" (Drive id {file_id})" if file_id else "")
    said = " ".join(str(exc).split())[:400] if exc is not None else ""
    names = {cls.__name__ for cls in type(exc).__mro__} if exc is not None else set()
    if exc is None or "FileURLRetrievalError" in names or any(m in said.lower() for m in _QUOTA_MARKERS):
        reason = (f"gdown said: {said}" if said
                  else "gdown returned without a file")
        return DownloadError(
            f"Google Drive would not serve {what}; {reason}. Drive limits how often a shared "
            "file may be downloaded ('Too many users have viewed or downloaded this file "
            "recently') and then serves a warning page instead of the file; the limit resets "
            f"after a while (often within 24 h). {manual}")
    return DownloadError(
        f"downloading {what} from Google Drive failed: {type(exc).__name__}: {said or 'no details'}. "
        f"Check the connection and try again. {manual}")


def _import_gdown():
    try:
        import gdown  # noqa: F401  (lazy: only Drive downloads need it)
    except ImportError:
        raise DownloadError("Google Drive downloads need gdown: pip install 'gdown>=5'") from None
    return gdown


def _temp_dir(dest: Path) -> Path:
    path = dest.with_name(f".{dest.name}.part-{secrets.token_hex(4)}")
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise DownloadError(f"cannot create a temporary folder next to {dest}: {exc}") from None
    return path


def _gdown_file(downloader: Callable[..., Any], file_id: str, out: Path, *, quiet: bool,
                dest: Path, page: Optional[str]) -> Path:
    try:
        result = downloader(id=file_id, output=str(out), quiet=quiet)
    except Exception as exc:  # gdown raises many kinds (requests, its own); all mean "no file"
        raise translate_gdown_error(exc, filename=dest.name, dest=dest, file_id=file_id,
                                    page=page) from exc
    if result is None or not out.is_file():
        raise translate_gdown_error(None, filename=dest.name, dest=dest, file_id=file_id, page=page)
    return out


def _fetch_gdrive(file_id: str, dest: Path, expected: Optional[str], *, progress: bool,
                  page: Optional[str], downloader: Optional[Callable[..., Any]],
                  force: bool = False) -> str:
    file_id = gdrive_file_id(file_id)
    where = page or f"https://drive.google.com/file/d/{file_id}/view"
    if not force:
        hit = _check_existing(dest, expected)
        if hit is not None:
            return hit
    _refuse_offline(dest, where)
    if downloader is None:
        downloader = _import_gdown().download
    dest.parent.mkdir(parents=True, exist_ok=True)
    # gdown writes its own partial files beside its output: a private folder catches them all.
    work = _temp_dir(dest)
    try:
        out = _gdown_file(downloader, file_id, work / dest.name, quiet=not progress, dest=dest,
                          page=where)
        return _finish(out, dest, expected, None, where)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_gdrive(file_id: str, dest: Union[str, os.PathLike], sha256: Optional[str] = None, *,
                    progress: bool = True, page: Optional[str] = None,
                    downloader: Optional[Callable[..., Any]] = None) -> Path:
    """Download one Google Drive file (id or link) to ``dest`` through gdown.

    Same rules as :func:`download_file` (cache hit, offline refusal, atomic move, hash check,
    no leftovers). ``downloader`` defaults to ``gdown.download`` and is called as
    ``downloader(id=..., output=..., quiet=...)``; ``page`` is the address shown for manual
    download when Drive refuses.
    """
    dest = Path(dest)
    _fetch_gdrive(file_id, dest, _normalise_sha(sha256), progress=progress, page=page,
                  downloader=downloader)
    return dest


def _accepts_keyword(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _fetch_gdrive_folder(folder_id: str, filename: str, dest: Path, expected: Optional[str], *,
                         progress: bool, page: Optional[str],
                         folder_downloader: Optional[Callable[..., Any]],
                         file_downloader: Optional[Callable[..., Any]],
                         force: bool = False) -> str:
    folder_id = gdrive_file_id(folder_id)
    where = page or f"https://drive.google.com/drive/folders/{folder_id}"
    if not force:
        hit = _check_existing(dest, expected)
        if hit is not None:
            return hit
    _refuse_offline(dest, where)
    if folder_downloader is None:
        gdown = _import_gdown()
        folder_downloader = gdown.download_folder
        file_downloader = file_downloader or gdown.download
    dest.parent.mkdir(parents=True, exist_ok=True)
    quiet = not progress
    work = _temp_dir(dest)
    try:
        if file_downloader is not None and _accepts_keyword(folder_downloader, "skip_download"):
            # List the folder and fetch only the wanted file: the folder holds several
            # multi-GB checkpoints and every extra file eats into Drive's download quota.
            try:
                listing = folder_downloader(id=folder_id, output=str(work), quiet=quiet,
                                            skip_download=True)
            except Exception as exc:
                raise translate_gdown_error(exc, filename=filename, dest=dest,
                                            file_id=folder_id, page=where) from exc
            if listing is None:
                raise translate_gdown_error(None, filename=filename, dest=dest,
                                            file_id=folder_id, page=where)
            found = {PurePosixPath(str(getattr(item, "path", ""))).name: getattr(item, "id", None)
                     for item in listing}
            if not found.get(filename):
                raise DownloadError(
                    f"the Google Drive folder {where} has no file named {filename} "
                    f"(it lists: {', '.join(sorted(found)) or 'nothing'}). "
                    + _manual_hint(dest, where))
            out = _gdown_file(file_downloader, found[filename], work / filename, quiet=quiet,
                              dest=dest, page=where)
        else:
            try:
                result = folder_downloader(id=folder_id, output=str(work), quiet=quiet)
            except Exception as exc:
                raise translate_gdown_error(exc, filename=filename, dest=dest,
                                            file_id=folder_id, page=where) from exc
            if result is None:
                raise translate_gdown_error(None, filename=filename, dest=dest,
                                            file_id=folder_id, page=where)
            matches = sorted(p for p in work.rglob("*") if p.is_file() and p.name == filename)
            if not matches:
                present = sorted(p.name for p in work.rglob("*") if p.is_file())
                raise DownloadError(
                    f"the Google Drive folder {where} has no file named {filename} "
                    f"(it holds: {', '.join(present) or 'nothing'}). " + _manual_hint(dest, where))
            out = matches[0]
        return _finish(out, dest, expected, None, where)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def download_gdrive_folder(folder_id: str, filename: str, dest: Union[str, os.PathLike],
                           sha256: Optional[str] = None, *, progress: bool = True,
                           page: Optional[str] = None,
                           folder_downloader: Optional[Callable[..., Any]] = None,
                           file_downloader: Optional[Callable[..., Any]] = None) -> Path:
    """Fetch the file called ``filename`` out of a shared Drive folder into ``dest``.

    With gdown's ``skip_download`` (present in current gdown) the folder is only listed and
    the one file downloaded; otherwise the whole folder goes to a temporary folder and the
    wanted file is moved into place. The callables default to ``gdown.download_folder`` /
    ``gdown.download``; everything else as in :func:`download_gdrive`.
    """
    dest = Path(dest)
    _fetch_gdrive_folder(folder_id, filename, dest, _normalise_sha(sha256), progress=progress,
                         page=page, folder_downloader=folder_downloader,
                         file_downloader=file_downloader)
    return dest


def _fetch_spec(spec: FileSpec, dest: Path, expected: Optional[str], *, progress: bool,
                force: bool) -> str:
    if spec.source == "url":
        return _fetch_url(str(spec.url), dest, expected, retries=3, timeout=60,
                          progress=progress, backoff=0.5, force=force, page=spec.page)
    if spec.source == "gdrive":
        return _fetch_gdrive(str(spec.id or spec.url), dest, expected, progress=progress,
                             page=spec.manual_page, downloader=None, force=force)
    if spec.source == "gdrive-folder":
        return _fetch_gdrive_folder(str(spec.id), spec.filename, dest, expected,
                                    progress=progress, page=spec.manual_page,
                                    folder_downloader=None, file_downloader=None, force=force)
    raise WeightsError(f"source {spec.source!r} cannot be downloaded")


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------

def _package_file(spec: FileSpec) -> Path:
    return Path(__file__).parent / str(spec.path)


def _resolve_one(entry: WeightsEntry, role: str, spec: FileSpec,
                 local: Union[str, os.PathLike, None], *, download: bool, progress: bool,
                 force: bool) -> Tuple[Path, bool, str]:
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"{role} weights file not found: {path}")
        return path, False, "user-supplied (not checked)"

    if spec.source == "package":
        path = _package_file(spec)
        if not path.is_file():
            raise BundledWeightsMissingError(
                f"the {entry.name} weights are not bundled in this build of dehazeddpm "
                f"(expected {path}). Install a build that ships dehazeddpm/{spec.path}, pass "
                f"{role}=<path> yourself, or use released weights: "
                + ", ".join(n for n in _safe_registry_names() if n != entry.name))
        if spec.sha256 is None:
            return path, False, "bundled (no sha256 in the registry yet)"
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise HashMismatchError(
                f"bundled file {path} has sha256 {digest}, the registry says {spec.sha256}: "
                "the installation is damaged; reinstall dehazeddpm.")
        return path, True, f"verified (sha256 {digest})"

    cache = cache_dir()
    dest = cache_path(entry.name, spec.filename, cache)
    key = _record_key(entry.name, spec.filename)
    recorded = (recorded_hashes(cache).get(key) or {}).get("sha256")
    expected = spec.sha256 or recorded
    expected_kind = "registry sha256" if spec.sha256 else "sha256 recorded on first download"

    if dest.is_file() and not force:
        digest = sha256_file(dest)
        if expected and digest != expected:
            raise HashMismatchError(
                f"cached {entry.name} {role} file {dest} is corrupt: sha256 {digest} differs "
                f"from the {expected_kind} {expected}. Delete it (rm '{dest}') and run "
                f"`dehazeddpm download {entry.name}`, or run `dehazeddpm download "
                f"{entry.name} --force`.")
    else:
        if force and dest.is_file() and (not download or is_offline()):
            raise WeightsMissingError(
                f"cannot download {entry.name} {role} again ({spec.filename}): "
                + ("offline mode (DEHAZEDDPM_OFFLINE=1)" if download else "downloading is switched off")
                + f"; the cached copy at {dest} was left as it is.")
        if not download or is_offline():
            why = ("offline mode (DEHAZEDDPM_OFFLINE=1)" if download
                   else "downloading is switched off")
            raise WeightsMissingError(
                f"{why}: {entry.name} {role} weights {spec.filename} are not in the cache "
                f"({dest}). Run `dehazeddpm download {entry.name}` with network access, or "
                f"download the file by hand from {spec.manual_page} and place it at {dest}, "
                f"or pass {role}=<path of your copy>.")
        try:
            digest = _fetch_spec(spec, dest, expected, progress=progress, force=force)
        except HashMismatchError as exc:
            if spec.sha256 or not recorded:
                raise
            raise HashMismatchError(
                f"{exc} The sha256 was recorded in {recorded_hashes_path(cache)} on the first "
                f"download; if the authors replaced the file on purpose, run `dehazeddpm "
                f"download {entry.name} --force --forget-hash`.") from None
        if not digest:  # another process finished the same download first
            digest = sha256_file(dest)

    if spec.sha256:
        return dest, True, f"verified (sha256 {digest})"
    if not recorded:
        origin = spec.manual_page
        _record_hash(cache, key, digest, dest.stat().st_size, origin)
    return dest, False, f"unverified (sha256 recorded on first download: {digest})"


def _safe_registry_names() -> List[str]:
    try:
        return sorted(load_registry())
    except WeightsError:
        return []


def resolve(name_or_entry: Union[str, WeightsEntry], *,
            stage1: Union[str, os.PathLike, None] = None,
            denoiser: Union[str, os.PathLike, None] = None,
            download: bool = True, progress: bool = True, force: bool = False) -> ResolvedWeights:
    """Local paths of both weights files of an entry.

    User-supplied ``stage1``/``denoiser`` paths win (and are not hash-checked); bundled files
    are taken from the package; others come from the cache, downloaded when missing if
    ``download`` is true and not offline. ``force`` re-downloads cached files (still checked
    against the recorded sha256). Cached files are hashed on every call so that a damaged
    file is caught before it is loaded.
    """
    entry = name_or_entry if isinstance(name_or_entry, WeightsEntry) else get_entry(name_or_entry)
    results = {}
    for role, local in (("stage1", stage1), ("denoiser", denoiser)):
        results[role] = _resolve_one(entry, role, entry.files[role], local, download=download,
                                     progress=progress, force=force)
    return ResolvedWeights(
        entry=entry,
        stage1=results["stage1"][0], denoiser=results["denoiser"][0],
        stage1_verified=results["stage1"][1], denoiser_verified=results["denoiser"][1],
        notes={role: r[2] for role, r in results.items()},
    )


def _file_status(entry: WeightsEntry, role: str, spec: FileSpec, cache: Path,
                 records: Mapping[str, Mapping[str, Any]], hash_files: bool) -> Dict[str, Any]:
    if spec.source == "package":
        path = _package_file(spec)
        recorded = None
    else:
        path = cache_path(entry.name, spec.filename, cache)
        recorded = (records.get(_record_key(entry.name, spec.filename)) or {}).get("sha256")
    row: Dict[str, Any] = {
        "name": entry.name, "role": role, "filename": spec.filename, "source": spec.source,
        "path": str(path), "present": path.is_file(), "size": None, "sha256": None,
        "expected_sha256": spec.sha256 or recorded,
    }
    if not row["present"]:
        row["status"] = "not bundled" if spec.source == "package" else "missing"
        row["detail"] = ("not shipped in this build" if spec.source == "package"
                         else f"not downloaded (source: {spec.manual_page})")
        return row
    row["size"] = path.stat().st_size
    expected = row["expected_sha256"]
    if not hash_files:
        row["status"] = "unverified"
        row["detail"] = "present (hash not checked)"
        return row
    digest = sha256_file(path)
    row["sha256"] = digest
    if expected and digest != expected:
        row["status"] = "hash mismatch"
        kind = "registry" if spec.sha256 else "recorded on first download"
        row["detail"] = f"sha256 {digest} != {expected} ({kind})"
    elif spec.sha256:
        row["status"] = "verified"
        row["detail"] = f"sha256 {digest}"
    else:
        row["status"] = "unverified"
        row["detail"] = (f"sha256 recorded on first download: {digest}" if recorded
                         else "no sha256 known or recorded")
    return row


def weights_status(registry: Optional[Mapping[str, WeightsEntry]] = None, *,
                   hash_files: bool = True) -> List[Dict[str, Any]]:
    """One row per entry and file: present, path, size, and verified / unverified /
    hash mismatch / missing / not bundled (``status``) with a ``detail`` line."""
    registry = load_registry() if registry is None else registry
    cache = cache_dir()
    records = recorded_hashes(cache)
    return [_file_status(entry, role, spec, cache, records, hash_files)
            for entry in registry.values() for role, spec in entry.files.items()]


# --------------------------------------------------------------------------------------------
# Environment report and CLI
# --------------------------------------------------------------------------------------------

def package_version() -> str:
    """The dehazeddpm version, from the package or its installed metadata."""
    try:
        import dehazeddpm
        version = getattr(dehazeddpm, "__version__", None)
        if version:
            return str(version)
    except Exception:  # a half-written package must not break `info`
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version as dist_version
        return dist_version("dehazeddpm")
    except PackageNotFoundError:
        return "unknown (not installed)"


def device_info() -> Dict[str, Any]:
    """The accelerator torch would use: type, name, free/total memory in bytes when known."""
    info: Dict[str, Any] = {"type": "cpu", "name": "cpu", "free_bytes": None,
                            "total_bytes": None, "torch": None}
    try:
        import torch
    except ImportError:
        return info
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        info.update(type="cuda", name=torch.cuda.get_device_name(idx))
        try:
            free, total = torch.cuda.mem_get_info(idx)
            info.update(free_bytes=int(free), total_bytes=int(total))
        except RuntimeError:
            info["total_bytes"] = int(torch.cuda.get_device_properties(idx).total_memory)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info.update(type="mps", name="Apple MPS")
    return info


def _gib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        dev = device_info()
        if dev["type"] == "cuda":
            device = f"cuda: {dev['name']} ({_gib(dev['free_bytes'])} free of {_gib(dev['total_bytes'])})"
        else:
            device = dev["name"]
        cache = cache_dir()
        origin = "DEHAZEDDPM_CACHE" if os.environ.get("DEHAZEDDPM_CACHE") else "default"
        print(f"dehazeddpm   {package_version()}")
        print(f"torch        {dev['torch'] or 'not installed'}")
        print(f"device       {device}")
        print(f"cache dir    {cache}  ({origin})")
        print(f"offline      {'yes (DEHAZEDDPM_OFFLINE)' if is_offline() else 'no'}")
        print(f"hashes       {recorded_hashes_path(cache)}")
        rows = weights_status(hash_files=not args.no_hash)
    except WeightsError as exc:
        print(f"dehazeddpm info: error: {exc}", file=sys.stderr)
        return 1
    print("weights:")
    header = ("NAME", "FILE", "STATUS", "SIZE", "FILENAME")
    table = [header] + [(r["name"], r["role"], r["status"], _size(r["size"]), r["filename"])
                        for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    try:
        if args.forget_hash:
            for key in forget_recorded_hash(args.name):
                print(f"forgot the recorded sha256 of {key}")
        resolved = resolve(args.name, download=True, progress=not args.quiet, force=args.force)
    except WeightsError as exc:
        print(f"dehazeddpm download: error: {exc}", file=sys.stderr)
        return 1
    for role in ROLES:
        print(f"{role:9s} {getattr(resolved, role)}  [{resolved.notes[role]}]")
    return 0


def register_cli(subparsers: Any) -> None:
    """Add the ``download`` and ``info`` sub-commands to the ``dehazeddpm`` parser."""
    names = ", ".join(_safe_registry_names()) or "see weights.json"
    p = subparsers.add_parser(
        "download", help="download a named set of weights into the cache",
        description=f"Download both weights files of a registry entry ({names}) into the "
                    "cache, or check the cached copies.")
    p.add_argument("name", help=f"registry name ({names})")
    p.add_argument("--force", action="store_true",
                   help="download again even when the files are cached")
    p.add_argument("--forget-hash", action="store_true",
                   help="drop the sha256 recorded on first download before downloading")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_download)

    i = subparsers.add_parser(
        "info", help="show versions, device, cache and weights status",
        description="Show package and torch versions, the device, the cache folder, the "
                    "offline flag and which weights are present and verified.")
    i.add_argument("--no-hash", action="store_true",
                   help="do not hash cached files (faster; status shows 'unverified')")
    i.set_defaults(func=_cmd_info)
