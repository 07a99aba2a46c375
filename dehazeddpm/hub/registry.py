"""The weights registry: ``weights.json`` beside this file, parsed and validated.

Each entry names a stage-1 file (reference ``netH``, MPRfusion: predicts J, T, A) and a denoiser
file (reference ``netG``, the SR3 UNet inside the diffusion wrapper), the UNet config and noise
schedule they were trained with, and the sampling defaults measured best for them.

A file comes from one of four sources: ``url`` (plain HTTP(S)), ``gdrive`` (one Google Drive
file), ``gdrive-folder`` (a file picked by name out of a shared Drive folder) or ``package``
(bundled with this package, never downloaded).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..options import SamplingOptions
from ..utils import check_keys
from .errors import UnknownWeightsError, WeightsError

__all__ = ["REGISTRY_PATH", "RELEASE_DRIVE_FOLDER_ID", "ROLES", "SOURCES", "FileSpec", "WeightsEntry",
           "gdrive_file_id", "get_entry", "load_registry", "registry_names"]

REGISTRY_PATH = Path(__file__).parent / "weights.json"
RELEASE_DRIVE_FOLDER_ID = "1I7sH6vb9oWOZeIVu6-xh9Xm5lnwdzHa7"
SOURCES = ("url", "gdrive", "gdrive-folder", "package")
ROLES = ("stage1", "denoiser")
PACKAGE_ROOT = Path(__file__).resolve().parents[1]

_SPEC_KEYS = {"filename", "source", "url", "id", "path", "page", "sha256", "size"}
_ENTRY_REQUIRED = ("description", "dataset", "condition", "citation", "stage1", "denoiser",
                   "unet_config", "schedule")
_ENTRY_OPTIONAL = ("notes", "defaults")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
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


def normalise_sha256(sha256: Optional[str]) -> Optional[str]:
    """A sha256 as 64 lower-case hex digits (None stays None); anything else is a ValueError."""
    if sha256 is None:
        return None
    if not isinstance(sha256, str) or not _HEX64.match(sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return sha256.lower()


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
        check_keys(data, _SPEC_KEYS, where, WeightsError)
        filename = data.get("filename")
        # The filename becomes a path in the cache: it must not be able to leave it.
        if (not isinstance(filename, str) or not filename or filename in (".", "..")
                or "/" in filename or "\\" in filename):
            raise WeightsError(f"{where}: 'filename' must be a plain file name, got {filename!r}")
        source = data.get("source")
        if source not in SOURCES:
            raise WeightsError(f"{where}: 'source' must be one of {list(SOURCES)}, got {source!r}")
        try:
            sha = normalise_sha256(data.get("sha256"))
        except ValueError:
            raise WeightsError(f"{where}: 'sha256' must be null or 64 hex digits, got {data.get('sha256')!r}") from None
        size = data.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise WeightsError(f"{where}: 'size' must be null or a non-negative integer")
        spec = cls(filename=filename, source=source, url=data.get("url"), id=data.get("id"),
                   path=data.get("path"), page=data.get("page"), sha256=sha, size=size)
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

    @property
    def package_file(self) -> Path:
        """Where a ``package`` file lies in this installation."""
        return PACKAGE_ROOT / str(self.path)


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
    # what a pipeline call uses for options it leaves at None (measured best for these weights)
    defaults: SamplingOptions = field(default_factory=SamplingOptions)

    @property
    def files(self) -> Dict[str, FileSpec]:
        return {"stage1": self.stage1, "denoiser": self.denoiser}

    @classmethod
    def from_dict(cls, name: str, data: Mapping[str, Any]) -> "WeightsEntry":
        """Validate and build an entry from its JSON object."""
        where = f"weights entry {name!r}"
        check_keys(data, (*_ENTRY_REQUIRED, *_ENTRY_OPTIONAL), where, WeightsError)
        missing = [k for k in _ENTRY_REQUIRED if k not in data]
        if missing:
            raise WeightsError(f"{where}: missing fields {missing}")
        for key in ("unet_config", "schedule"):
            if not isinstance(data[key], Mapping):
                raise WeightsError(f"{where}: {key!r} must be an object")
        defaults = data.get("defaults") or {}
        if not isinstance(defaults, Mapping):
            raise WeightsError(f"{where}: 'defaults' must be an object of sampling options")
        try:
            options = SamplingOptions.from_mapping(defaults, f"{where} defaults")
        except ValueError as exc:
            raise WeightsError(f"{where}: defaults: {exc}") from None
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
            defaults=options,
        )


def load_registry(path: Union[str, os.PathLike, None] = None) -> Dict[str, WeightsEntry]:
    """Parse ``weights.json`` (the packaged one unless ``path`` is given) into entries by name."""
    path = Path(path) if path is not None else REGISTRY_PATH
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"weights registry not found at {path}") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(f"weights registry {path} is not valid JSON: {exc}") from None
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise WeightsError(f"weights registry {path} has no 'entries' object")
    return {name: WeightsEntry.from_dict(name, body) for name, body in entries.items()}


def registry_names() -> list:
    """The entry names of the packaged registry (empty if it cannot be read)."""
    try:
        return sorted(load_registry())
    except WeightsError:
        return []


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
