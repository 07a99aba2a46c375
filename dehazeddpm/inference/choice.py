"""Which weights a notebook (or a script) should run, and a one-line reason people can read.

:func:`choose_weights` applies one rule everywhere, so every notebook says the same thing:

1. checkpoint files the user named (``stage1`` and ``denoiser``, or ``DEHAZEDDPM_STAGE1`` and
   ``DEHAZEDDPM_DENOISER``);
2. a registry name the user named (``name``, or ``DEHAZEDDPM_WEIGHTS``; ``"auto"`` names none);
3. released weights already in the cache (``nh-haze``, then ``dense-haze``), on any device;
4. on a GPU, online and not in smoke mode: the released ``nh-haze`` weights, downloaded now;
5. else the bundled ``demo`` weights (offline, on a CPU, in smoke mode, or when a download fails).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import torch

from ..hub import UnknownWeightsError, WeightsError, cache_path, get_entry, is_offline, registry_names, resolve
from ..io.checkpoints import CheckpointError
from ..utils import smoke_mode
from .pipeline import DehazePipeline

__all__ = ["RELEASED", "WeightsChoice", "choose_weights", "smoke_mode"]

RELEASED = ("nh-haze", "dense-haze")


@dataclass
class WeightsChoice:
    """The pipeline chosen, its weights' name (``"files"`` for user checkpoints), why, and the two
    checkpoint files it was loaded from (for notebooks that open them, e.g. to replay the
    reference's loader)."""

    pipe: DehazePipeline
    name: str
    reason: str
    stage1_file: Optional[Path] = None
    denoiser_file: Optional[Path] = None

    @property
    def released(self) -> bool:
        """Whether these are the paper's released weights (not the small bundled demo)."""
        return self.name in RELEASED

    def __str__(self) -> str:
        return f"weights: {self.name} ({self.reason})"


def _cached(name: str) -> bool:
    entry = get_entry(name)
    return all(cache_path(entry.name, spec.filename).is_file() for spec in (entry.stage1, entry.denoiser))


def choose_weights(name: Optional[str] = None, *, stage1: Union[str, os.PathLike, None] = None,
                   denoiser: Union[str, os.PathLike, None] = None,
                   device: Union[str, torch.device, None] = None) -> WeightsChoice:
    """The pipeline to use, by the rule of the module docstring (``device``: default CUDA if any;
    empty strings, as a notebook form leaves them, count as not given)."""
    stage1 = stage1 or os.environ.get("DEHAZEDDPM_STAGE1") or None
    denoiser = denoiser or os.environ.get("DEHAZEDDPM_DENOISER") or None
    if not name or name == "auto":  # a form left at "auto" defers to the environment
        name = os.environ.get("DEHAZEDDPM_WEIGHTS") or None
    name = None if name == "auto" else name
    if name is not None and name not in registry_names():  # a typo is an error, not the demo
        raise UnknownWeightsError(f"unknown weights {name!r}; known names: {', '.join(registry_names())}")
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if bool(stage1) != bool(denoiser):
        raise ValueError("give both checkpoint files (stage1 and denoiser), or neither")
    if stage1 and denoiser:
        pipe = DehazePipeline.from_files(stage1, denoiser, dev)
        return WeightsChoice(pipe, "files", f"your checkpoint files; {pipe.config_source}", Path(stage1), Path(denoiser))
    problems: List[str] = []
    if name:
        try:
            return _registry_choice(name, dev, "the weights you named", download=True)
        except (WeightsError, CheckpointError) as exc:
            if name == "demo":
                raise
            # a notebook's run-all goes on, and the line says what happened
            problems.append(f"the {name} weights you named could not be had ({' '.join(str(exc).split())[:300]})")
    for released in RELEASED:
        if _cached(released):
            try:
                return _registry_choice(released, dev, "the paper's released weights, found in the cache", download=False)
            except (WeightsError, CheckpointError) as exc:
                problems.append(f"the cached {released} weights cannot be used ({' '.join(str(exc).split())[:200]})")
    if dev.type == "cuda" and not smoke_mode() and not is_offline():
        try:
            return _registry_choice("nh-haze", dev, "the paper's released weights, on this GPU", download=True)
        except (WeightsError, CheckpointError) as exc:
            problems.append(f"the released weights could not be had ({' '.join(str(exc).split())[:300]})")
    why = ("smoke mode" if smoke_mode() else "offline" if is_offline() else
           "no GPU here" if dev.type != "cuda" else "the released weights are not available")
    reason = (f"the small bundled demo weights ({why}; they run on a CPU in seconds but are not the paper's "
              "model)")
    if problems:
        reason += "; " + "; ".join(problems)
    return _registry_choice("demo", dev, reason, download=False)


def _registry_choice(name: str, dev: torch.device, reason: str, *, download: bool) -> WeightsChoice:
    files = resolve(name, download=download)
    pipe = DehazePipeline.from_pretrained(name, dev, stage1=files.stage1, denoiser=files.denoiser, download=False)
    return WeightsChoice(pipe, name, reason, Path(files.stage1), Path(files.denoiser))
