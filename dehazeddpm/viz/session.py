"""A notebook's preamble as one call: the weights, the pipeline, the device and smoke mode; and
where the notebook's files go.

>>> session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # doctest: +SKIP
>>> pipe, SMOKE = session.pipe, session.smoke                             # doctest: +SKIP
>>> workdir = session.scratch('pairs')           # rebuilt on demand, gone when the kernel exits
>>> out = session.keep('dehazeddpm_dehazed.png')  # what the user made: kept after the kernel
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch

from ..hub import COLAB_DRIVE
from ..inference.choice import WeightsChoice, choose_weights
from ..inference.device import default_device
from ..utils import smoke_mode

__all__ = ["SCRATCH_PREFIX", "NotebookSession", "notebook_session", "remove_stale_scratch"]

SCRATCH_PREFIX = "dehazeddpm_notebook_"
_OWNER_FILE = "owner.pid"
# One temporary folder per process (the kernel), made on first use. Module-level, not per
# session, so running the session cell again does not delete files later cells still point at.
# TemporaryDirectory's finalizer removes it when the kernel exits; a kernel that is killed
# (nbval, a runtime restart) runs no finalizer, so the next one removes what it left.
_scratch_root: Optional[tempfile.TemporaryDirectory] = None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM), or cannot tell: keep its folder
        return True
    return True


def remove_stale_scratch(parent: Union[str, os.PathLike, None] = None) -> int:
    """Remove the scratch folders (:meth:`NotebookSession.scratch`) of kernels that no longer run,
    in ``parent`` (default: the system's temporary folder). A folder whose owner cannot be read,
    or whose owner is alive, is left alone. POSIX only (elsewhere nothing is removed). Returns
    how many were removed."""
    if os.name != "posix":  # os.kill(pid, 0) means Ctrl-C on Windows
        return 0
    removed = 0
    for folder in Path(parent if parent is not None else tempfile.gettempdir()).glob(SCRATCH_PREFIX + "*"):
        try:
            pid = int((folder / _OWNER_FILE).read_text())
        except (OSError, ValueError):  # not one of ours, or still being made
            continue
        if pid != os.getpid() and not _process_alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _folder_name(name: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"expected a plain file or folder name (no path separators), got {name!r}")
    return name


@dataclass
class NotebookSession:
    """What a notebook runs on: the weights ``choice`` (its ``pipe``), the ``device`` and whether
    ``smoke`` mode is on (tiny images and few steps: CI, or ``DEHAZEDDPM_SMOKE=1``)."""

    choice: WeightsChoice
    device: torch.device
    smoke: bool

    @property
    def pipe(self):
        """The chosen :class:`~dehazeddpm.inference.DehazePipeline`."""
        return self.choice.pipe

    def scratch(self, name: str) -> Path:
        """A folder for files the notebook can rebuild (the bundled eval pairs): ``name`` inside
        one temporary folder per kernel, created if missing. The same name gives the same folder
        on every call, so running a cell again reuses it instead of leaving another behind. The
        temporary folder goes when the kernel exits, or, if the kernel was killed, when the next
        kernel makes its own (:func:`remove_stale_scratch`)."""
        global _scratch_root
        name = _folder_name(name)
        if _scratch_root is None:
            remove_stale_scratch()
            _scratch_root = tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX)
        root = Path(_scratch_root.name)
        owner = root / _OWNER_FILE
        if not owner.is_file():  # new, or someone emptied the temporary folder: (re)claim it
            root.mkdir(parents=True, exist_ok=True)
            owner.write_text(str(os.getpid()))
        path = root / name
        path.mkdir(exist_ok=True)
        return path

    def keep(self, name: str) -> Path:
        """Where the notebook puts what the user made and keeps (a dehazed image, a fine-tuning
        run folder): ``name`` in Google Drive's MyDrive when it is mounted (a disconnect loses
        nothing), else in the current folder (on Colab, ``/content``: the Files pane). In smoke
        mode (CI), inside :meth:`scratch`, so test runs leave nothing behind. Only the path is
        made; writing there is the caller's."""
        name = _folder_name(name)
        if self.smoke:
            return self.scratch("kept") / name
        return (COLAB_DRIVE if COLAB_DRIVE.is_dir() else Path.cwd()) / name

    def __str__(self) -> str:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            where = f"{torch.cuda.get_device_name(self.device)} ({free / 2**30:.1f} GB free of {total / 2**30:.1f} GB)"
        else:
            where = f"{self.device.type} (no CUDA GPU: the released weights are slow here)"
        lines = [f"device: {where}", str(self.choice)]
        if self.smoke:
            lines.append("smoke mode (CI or DEHAZEDDPM_SMOKE=1): tiny images and few steps, so the notebook runs "
                         "on a CPU in seconds; numbers in this mode say nothing about quality")
        return "\n".join(lines)


def notebook_session(weights: Optional[str] = "auto", stage1: Union[str, os.PathLike, None] = "",
                     denoiser: Union[str, os.PathLike, None] = "", *,
                     device: Union[str, torch.device, None] = None, quiet: bool = False) -> NotebookSession:
    """Choose the weights by :func:`~dehazeddpm.inference.choose_weights`'s rule (empty strings,
    as a Colab form leaves them, count as not given), turn off autograd (notebooks only run
    models), and print what was chosen and why unless ``quiet``."""
    dev = torch.device(device) if device is not None else default_device()
    torch.set_grad_enabled(False)
    session = NotebookSession(choose_weights(weights or None, stage1=stage1 or None, denoiser=denoiser or None,
                                             device=dev), dev, smoke_mode())
    if not quiet:
        print(session)
    return session
