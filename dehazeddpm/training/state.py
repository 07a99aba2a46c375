"""The state a run keeps beyond its weights: the EMA, every RNG, the resume file, provenance."""
from __future__ import annotations

import platform
import random
import time
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..utils import write_json
from .config import TrainConfig

__all__ = ["EMA", "latest_path", "provenance", "resume_path", "rng_state", "set_rng_state", "write_json"]


class EMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow, strict=True)


def rng_state(gen: torch.Generator) -> Dict[str, Any]:
    """Every RNG the training loop touches, as tensors and plain ints (loadable with weights_only)."""
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    st: Dict[str, Any] = {"torch": torch.get_rng_state(), "loss_gen": gen.get_state(),
                          "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
                          "numpy_rest": [int(np_pos), int(np_has_gauss), float(np_gauss)],
                          "python": [int(py_version), list(py_state), py_gauss]}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: Dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    gen.set_state(st["loss_gen"])
    pos, has_gauss, gauss = st["numpy_rest"]
    np.random.set_state(("MT19937", st["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, state, py_gauss = st["python"]
    random.setstate((version, tuple(state), py_gauss))
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def resume_path(cfg: TrainConfig, rank: int = 0) -> Path:
    """``out_dir/resume_<stage>.pt`` (rank suffix beyond rank 0: RNG states differ per rank)."""
    return Path(cfg.out_dir) / (f"resume_{cfg.stage}.pt" if rank == 0 else f"resume_{cfg.stage}.rank{rank}.pt")


def latest_path(cfg: TrainConfig) -> Path:
    """``out_dir/latest_<stage>.json``: the step the run's resume file holds, its name and the last
    checkpoint's, rewritten (atomically) after every save."""
    return Path(cfg.out_dir) / f"latest_{cfg.stage}.json"


def provenance() -> Dict[str, Any]:
    """Versions and host facts recorded next to every checkpoint."""
    from ..version import __version__
    return {"dehazeddpm": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
