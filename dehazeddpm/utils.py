"""Small helpers every layer shares: atomic writes, resizing to a side, padding, overlapping
windows, env flags.

Layer: foundation. Imports only the standard library, numpy and torch; every other module of
the package may import it.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Callable, List, Mapping, Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["TRUTHY", "atomic_write", "check_keys", "env_flag", "from_dict", "smoke_mode", "write_json", "pad_to_multiple", "ramp_window", "remove_stale_temporaries",
           "resize", "scaled_shape", "temporary_name", "tile_starts", "torchrun_env"]

PathLike = Union[str, "os.PathLike[str]"]
TRUTHY = frozenset({"1", "true", "yes", "on"})
# Temporaries are hidden (leading dot) and end in this marker plus the writer's pid and a random
# token, so globbing and image discovery never pick them up and a later run can tell whose they are.
TEMP_MARKER = ".tmp-"


def env_flag(name: str) -> bool:
    """True when the environment variable ``name`` is set to 1/true/yes/on (any case)."""
    return os.environ.get(name, "").strip().lower() in TRUTHY


def smoke_mode() -> bool:
    """Smoke mode (tiny images, few steps: a CPU in seconds): ``DEHAZEDDPM_SMOKE`` when it is set
    (``0`` turns it off), else on under CI (``CI`` set to a true value). The one place it is read."""
    if os.environ.get("DEHAZEDDPM_SMOKE", "").strip():
        return env_flag("DEHAZEDDPM_SMOKE")
    return env_flag("CI")


def check_keys(data: Any, known: Any, where: str, error: type = ValueError) -> None:
    """Raise ``error`` naming ``where`` unless ``data`` is a mapping whose keys are all in ``known``."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a mapping of settings, got {type(data).__name__}")
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise error(f"{where}: unknown keys {unknown}; known: {sorted(known)}")


def from_dict(cls: Any, data: Mapping[str, Any], where: str, **aliases: str) -> Any:
    """``cls(**data)`` for a dataclass ``cls``, strictly: ``data`` must be a mapping, and a key that
    is not a field (after renaming the ``aliases``, old spelling -> field name) is a ValueError
    naming ``where``, the unknown keys and the known ones. The one "from a dict" of every config."""
    check_keys(data, [*(f.name for f in dataclasses.fields(cls) if f.init), *aliases], where)
    return cls(**{aliases.get(k, k): v for k, v in data.items()})


def torchrun_env(env: Optional[Mapping[str, str]] = None) -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``;
    (0, 1, 0) when they are unset. A value that is not a valid integer, or a rank outside the
    world, is a ValueError naming the variable."""
    env = os.environ if env is None else env

    def read(name: str, default: int) -> int:
        text = (env.get(name) or "").strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"{name}={text!r} is not an integer (set by torchrun; unset it to run one process)") from None

    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, WORLD_SIZE) = [0, {world}), got {rank}")
    if local < 0:
        raise ValueError(f"LOCAL_RANK must be >= 0, got {local}")
    return rank, world, local


# Longest file name most file systems accept, in bytes.
MAX_NAME_BYTES = 255


def temporary_name(path: PathLike) -> Path:
    """A hidden sibling of ``path`` for a write in progress: ``.NAME.tmp-PID-TOKEN``; a NAME too
    long for that to fit the file system's 255 bytes is shortened to its start and a digest."""
    path = Path(path)
    tail = f"{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(4)}"
    name = path.name
    if len(f".{name}{tail}".encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha1(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        room = MAX_NAME_BYTES - len(f".-{digest}{tail}".encode())
        name = name.encode("utf-8", "surrogateescape")[:room].decode("utf-8", "ignore") + "-" + digest
    return path.with_name(f".{name}{tail}")


def atomic_write(path: PathLike, write: Callable[[Path], None], *, fsync: bool = True) -> Path:
    """Make ``path`` appear complete or not at all: ``write(tmp)`` fills a hidden temporary in
    the same folder, which is then renamed over ``path``.

    The rename is atomic because both names are on one filesystem, so a reader (or a resumed
    run) sees the old file or the whole new one, never a partial one. Parent folders are
    created. On any error, KeyboardInterrupt included, the temporary is removed and the error
    re-raised; ``path`` is untouched. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    return path



def write_json(path: PathLike, data: Any) -> Path:
    """``data`` as indented JSON at ``path`` (one trailing newline), atomically; non-JSON values
    (paths, dtypes) are written as their ``str``. Returns ``path``."""
    import json

    text = json.dumps(data, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))

def scaled_shape(h: int, w: int, size: int, *, side: str = "shorter") -> Tuple[int, int]:
    """(h', w') with the ``side`` ("shorter" or "longer") equal to ``size``, aspect ratio kept,
    each side at least 1."""
    if size < 1:
        raise ValueError(f"size must be a positive integer, got {size}")
    if side not in ("shorter", "longer"):
        raise ValueError(f"side must be 'shorter' or 'longer', got {side!r}")
    scale = size / (min(h, w) if side == "shorter" else max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(x: torch.Tensor, hw: Tuple[int, int], mode: str = "antialias") -> torch.Tensor:
    """Resize a (B, C, H, W) tensor to ``hw``. ``"antialias"``: bilinear with antialiasing (a
    proper low-pass for any factor, down or up); other modes are ``F.interpolate``'s ("area" is
    a box average, which never overshoots), corners unaligned."""
    if tuple(x.shape[-2:]) == tuple(hw):
        return x
    if mode == "antialias":
        return F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    if mode in ("nearest", "area"):
        return F.interpolate(x, size=hw, mode=mode)
    return F.interpolate(x, size=hw, mode=mode, align_corners=False)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad the right and bottom of a (..., H, W) tensor up to a multiple of ``multiple``.

    Reflect padding, or replicate where the image is too small to reflect (reflect needs the
    pad to be shorter than the side). Returns the padded tensor and the original (H, W).
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


# Weights never reach zero: every pixel stays covered with a positive total weight, and pixels
# at the outer image border (covered by a single tile) keep their full prediction.
MIN_BLEND_WEIGHT = 1e-3


def tile_starts(length: int, tile: int, overlap: int) -> List[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)`` with at least ``overlap``.

    The first tile starts at 0 and the last one is flush with the end (``length - tile``), so the
    whole axis is covered; a single ``[0]`` when the axis fits one tile.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def ramp_window(size: int, overlap: int, *, at_start: bool, at_end: bool) -> torch.Tensor:
    """1-D blending weights of length ``size`` (float32, in [MIN_BLEND_WEIGHT, 1]).

    A raised-cosine ramp over ``overlap`` pixels on each side that borders another tile; sides on
    the image border (``at_start``/``at_end``) stay at 1 since nothing is blended there.
    """
    w = torch.ones(size, dtype=torch.float64)
    n = min(overlap, size // 2)
    if n > 0:
        pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # in (0, 1): never exactly 0
        ramp = 0.5 - 0.5 * torch.cos(math.pi * pos)
        if not at_start:
            w[:n] = ramp
        if not at_end:
            w[size - n:] = ramp.flip(0)
    return w.clamp(min=MIN_BLEND_WEIGHT).float()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (signal 0 probes without sending)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def writer_pid(name: str) -> Optional[int]:
    """The pid recorded in a temporary's name made by :func:`temporary_name`, else None."""
    if not name.startswith(".") or TEMP_MARKER not in name:
        return None
    tail = name.rsplit(TEMP_MARKER, 1)[1]
    pid, _, token = tail.partition("-")
    return int(pid) if pid.isdigit() and token else None


def remove_stale_temporaries(folder: PathLike) -> List[Path]:
    """Delete the temporaries in ``folder`` whose writer is no longer running (a run killed with
    SIGKILL or a power cut cannot clean up after itself). Returns what was removed.

    Only names made by :func:`temporary_name` are touched, and only when the pid in the name is
    not a live process here, so a concurrent run's write in progress is left alone.
    """
    folder = Path(folder)
    removed: List[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for p in entries:
        pid = writer_pid(p.name)
        if pid is None or pid_alive(pid):
            continue
        try:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed
