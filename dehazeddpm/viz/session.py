"""A notebook's preamble as one call: the weights, the pipeline, the device and smoke mode.

>>> session = dd.notebook_session(WEIGHTS, STAGE1_FILE, DENOISER_FILE)   # doctest: +SKIP
>>> pipe, SMOKE = session.pipe, session.smoke                             # doctest: +SKIP
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Union

import torch

from ..inference.choice import WeightsChoice, choose_weights
from ..inference.device import default_device
from ..utils import smoke_mode

__all__ = ["NotebookSession", "notebook_session"]


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
