"""``dehazeddpm download`` and ``dehazeddpm info``: fetch a registry entry, show what is where."""
from __future__ import annotations

import argparse
import os
from typing import Any, Optional

from ..hub import (
    ROLES,
    WeightsError,
    cache_dir,
    forget_recorded_hash,
    is_offline,
    recorded_hashes_path,
    registry_names,
    resolve,
    weights_status,
)
from ..version import __version__
from .common import CommandError

__all__ = ["register"]


def _gib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def _size(n: Optional[float]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def info(args: argparse.Namespace) -> int:
    from ..inference.device import device_info

    try:
        dev = device_info()
        if dev["type"] == "cuda":
            device = f"cuda: {dev['name']} ({_gib(dev['free_bytes'])} free of {_gib(dev['total_bytes'])})"
        else:
            device = dev["name"]
        cache = cache_dir()
        origin = "DEHAZEDDPM_CACHE" if os.environ.get("DEHAZEDDPM_CACHE") else "default"
        print(f"dehazeddpm   {__version__}")
        print(f"torch        {dev['torch']}")
        print(f"device       {device}")
        print(f"cache dir    {cache}  ({origin})")
        print(f"offline      {'yes (DEHAZEDDPM_OFFLINE)' if is_offline() else 'no'}")
        print(f"hashes       {recorded_hashes_path(cache)}")
        rows = weights_status(hash_files=not args.no_hash)
    except WeightsError as exc:
        raise CommandError(str(exc), code=1) from None
    print("weights:")
    header = ("NAME", "FILE", "STATUS", "SIZE", "FILENAME")
    table = [header] + [(r["name"], r["role"], r["status"], _size(r["size"]), r["filename"]) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0


def download(args: argparse.Namespace) -> int:
    try:
        if args.forget_hash:
            for key in forget_recorded_hash(args.name):
                print(f"forgot the recorded sha256 of {key}")
        resolved = resolve(args.name, download=True, progress=not args.quiet, force=args.force)
    except WeightsError as exc:
        raise CommandError(str(exc), code=1) from None
    for role in ROLES:
        print(f"{role:9s} {getattr(resolved, role)}  [{resolved.notes[role]}]")
    return 0


def register(subparsers: Any) -> None:
    """Add ``download`` and ``info`` to the ``dehazeddpm`` parser."""
    names = ", ".join(registry_names()) or "see weights.json"
    p = subparsers.add_parser(
        "download", help="download a named set of weights into the cache",
        description=f"Download both weights files of a registry entry ({names}) into the "
                    "cache, or check the cached copies.")
    p.add_argument("name", help=f"registry name ({names})")
    p.add_argument("--force", action="store_true", help="download again even when the files are cached")
    p.add_argument("--forget-hash", action="store_true",
                   help="drop the sha256 recorded on first download before downloading")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=download, parser=p)

    i = subparsers.add_parser(
        "info", help="show versions, device, cache and weights status",
        description="Show package and torch versions, the device, the cache folder, the "
                    "offline flag and which weights are present and verified.")
    i.add_argument("--no-hash", action="store_true",
                   help="do not hash cached files (faster; status shows 'unverified')")
    i.set_defaults(func=info, parser=i)
