"""Local paths of an entry's two weights files: bundled, cached, or downloaded now.

:func:`resolve` is what ``DehazePipeline.from_pretrained`` and ``dehazeddpm download`` call;
:func:`weights_status` is what ``dehazeddpm info`` shows.
"""
from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from ..io.checkpoints import CheckpointError, read_checkpoint
from ..options import SamplingOptions
from ..utils import remove_stale_temporaries
from .cache import (
    cache_dir,
    cache_path,
    is_offline,
    record_hash,
    record_key,
    recorded_hashes,
    recorded_hashes_path,
    sha256_file,
)
from .download import fetch_url
from .errors import BundledWeightsMissingError, HashMismatchError, WeightsError, WeightsMissingError
from .gdrive import fetch_gdrive, fetch_gdrive_folder
from .registry import FileSpec, WeightsEntry, get_entry, load_registry, registry_names

__all__ = ["ResolvedWeights", "entry_for_file", "entry_for_files", "load_denoiser", "remove_leftovers", "resolve", "verify_checkpoint", "weights_status"]


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
    def defaults(self) -> SamplingOptions:
        return self.entry.defaults


def verify_checkpoint(path: Path, entry: Optional[WeightsEntry] = None, role: Optional[str] = None) -> None:
    """Raise ValueError unless ``path`` is a torch checkpoint that loads with ``weights_only=True``
    into a dict and, given the ``entry`` and ``role`` it is for, loads strictly into that role's
    network (the entry's UNet for a denoiser): what a weights file without a published sha256
    must be before it is kept and its hash recorded, whether downloaded or placed by hand."""
    from ..io.checkpoints import load_denoiser, load_stage1

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in z.namelist()):
                raise ValueError("a zip archive without the data.pkl of a torch checkpoint")
    try:
        read_checkpoint(path)
        if role == "stage1":
            load_stage1(path)
        elif role == "denoiser" and entry is not None:
            load_denoiser(path, **entry.unet_config)
    except (CheckpointError, ValueError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None


def _fetch_spec(entry: WeightsEntry, role: str, spec: FileSpec, dest: Path, expected: Optional[str], *,
                progress: bool, force: bool) -> str:
    verify = (lambda path: verify_checkpoint(path, entry, role)) if expected is None else None
    if spec.source == "url":
        return fetch_url(str(spec.url), dest, expected, retries=3, timeout=60, progress=progress, backoff=0.5,
                         force=force, page=spec.page, verify=verify)
    if spec.source == "gdrive":
        return fetch_gdrive(str(spec.id or spec.url), dest, expected, progress=progress, page=spec.manual_page,
                            downloader=None, force=force, verify=verify)
    if spec.source == "gdrive-folder":
        return fetch_gdrive_folder(str(spec.id), spec.filename, dest, expected, progress=progress,
                                   page=spec.manual_page, folder_downloader=None, file_downloader=None,
                                   force=force, verify=verify)
    raise WeightsError(f"source {spec.source!r} cannot be downloaded")


def remove_leftovers(folder: Path) -> None:
    """Partial downloads of runs that were killed: this package's temporaries of dead processes,
    and the ``NAME.part-XXXXXXXX`` files of versions before 0.2."""
    remove_stale_temporaries(folder)
    for p in folder.glob("*.part-*"):
        if re.fullmatch(r".+\.part-[0-9a-f]{8}", p.name):
            try:
                p.unlink()
            except OSError:
                pass


def _resolve_one(entry: WeightsEntry, role: str, spec: FileSpec,
                 local: Union[str, os.PathLike, None], *, download: bool, progress: bool,
                 force: bool) -> Tuple[Path, bool, str]:
    if local is not None:
        path = Path(local).expanduser()
        if not path.is_file():
            raise WeightsMissingError(f"{role} weights file not found: {path}")
        return path, False, "user-supplied (not checked)"
    if spec.source == "package":
        return _bundled_file(entry, role, spec)
    return _cached_file(entry, role, spec, download=download, progress=progress, force=force)


def _bundled_file(entry: WeightsEntry, role: str, spec: FileSpec) -> Tuple[Path, bool, str]:
    """A file shipped inside the package, checked against the registry's sha256."""
    path = spec.package_file
    if not path.is_file():
        raise BundledWeightsMissingError(
            f"the {entry.name} weights are not bundled in this build of dehazeddpm "
            f"(expected {path}). Install a build that ships dehazeddpm/{spec.path}, pass "
            f"{role}=<path> yourself, or use released weights: "
            + ", ".join(n for n in registry_names() if n != entry.name))
    if spec.sha256 is None:
        return path, False, "bundled (no sha256 in the registry yet)"
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise HashMismatchError(
            f"bundled file {path} has sha256 {digest}, the registry says {spec.sha256}: "
            "the installation is damaged; reinstall dehazeddpm.")
    return path, True, f"verified (sha256 {digest})"


def _check_placed(entry: WeightsEntry, role: str, dest: Path, page: str) -> str:
    """Check a file placed in the cache by hand (no hash known yet); returns the origin to record."""
    try:
        verify_checkpoint(dest, entry, role)
    except ValueError as exc:
        raise WeightsError(
            f"the cached {entry.name} {role} file {dest} is not a {role} checkpoint of these weights ({exc}); "
            f"nothing was recorded. Run `dehazeddpm download {entry.name} --force` to replace it, or place the "
            f"right file there (from {page}).") from None
    return "placed in the cache by hand, checked as a loadable checkpoint"


def _cached_file(entry: WeightsEntry, role: str, spec: FileSpec, *, download: bool, progress: bool,
                 force: bool) -> Tuple[Path, bool, str]:
    """A file of the weights cache: checked if present, else downloaded (and its hash recorded)."""
    cache = cache_dir()
    dest = cache_path(entry.name, spec.filename, cache)
    key = record_key(entry.name, spec.filename)
    recorded = (recorded_hashes(cache).get(key) or {}).get("sha256")
    expected = spec.sha256 or recorded
    expected_kind = "registry sha256" if spec.sha256 else "sha256 recorded on first download"

    origin = spec.manual_page
    if dest.is_file() and not force:
        digest = sha256_file(dest)
        if expected and digest != expected:
            again = f"dehazeddpm download {entry.name} --force" + ("" if spec.sha256 else " --forget-hash")
            raise HashMismatchError(
                f"cached {entry.name} {role} file {dest} is corrupt: sha256 {digest} differs "
                f"from the {expected_kind} {expected}. Run `{again}` to fetch it again"
                + ("" if spec.sha256 else " and record the new file's hash") + ".")
        if not expected:  # placed in the cache by hand: check it before its hash is trusted
            origin = _check_placed(entry, role, dest, origin)
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
            remove_leftovers(dest.parent)
            digest = _fetch_spec(entry, role, spec, dest, expected, progress=progress, force=force)
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
        record_hash(cache, key, digest, dest.stat().st_size, origin)
    return dest, False, f"unverified (sha256 recorded on first download: {digest})"


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
        path = spec.package_file
        recorded = None
    else:
        path = cache_path(entry.name, spec.filename, cache)
        recorded = (records.get(record_key(entry.name, spec.filename)) or {}).get("sha256")
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


def _known_digest(entry: WeightsEntry, spec: FileSpec, records: Mapping[str, Any]) -> Optional[str]:
    return spec.sha256 or (records.get(record_key(entry.name, spec.filename)) or {}).get("sha256")


def entry_for_file(path: Union[str, os.PathLike], role: str,
                   registry: Optional[Mapping[str, WeightsEntry]] = None) -> Optional[WeightsEntry]:
    """The registry entry whose ``role`` file (``"stage1"`` or ``"denoiser"``) this one file is, by
    its own sha256 (the registry's, or the one recorded when it was first downloaded), or None."""
    registry = load_registry() if registry is None else registry
    records = recorded_hashes()
    digest = sha256_file(path)
    for entry in registry.values():
        if _known_digest(entry, getattr(entry, role), records) == digest:
            return entry
    return None


def entry_for_files(stage1: Union[str, os.PathLike], denoiser: Union[str, os.PathLike],
                    registry: Optional[Mapping[str, WeightsEntry]] = None) -> Optional[WeightsEntry]:
    """The registry entry whose two files these are, each recognised by its own sha256, or None."""
    entry = entry_for_file(denoiser, "denoiser", registry)
    return entry if entry is not None and entry_for_file(stage1, "stage1", registry) is entry else None


def load_denoiser(src: Union[str, os.PathLike], *, device: Any = None, **config: Any):
    """:func:`dehazeddpm.io.load_denoiser`, with the UNet settings of a registry file (the bundled
    demo, or released files downloaded before) taken from its entry when the file is recognised by
    its sha256; ``config`` keywords still win."""
    from ..io.checkpoints import load_denoiser as load

    if isinstance(src, (str, os.PathLike)) and Path(src).is_file():
        entry = entry_for_file(src, "denoiser")
        if entry is not None:
            config = {**entry.unet_config, **config}
    return load(src, device=device, **config)
