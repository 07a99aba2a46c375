"""What each stage minimises, the denoiser's condition, and the learning-rate schedule."""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch
import torch.nn.functional as F

from ..diffusion.loss import FREQUENCY_WEIGHT, diffusion_loss
from ..diffusion.schedule import NoiseSchedule
from ..io.images import denoiser_condition, to_signed
from ..models.stage1 import Stage1Net
from .config import DEFAULT_LOSS_WEIGHTS, TrainConfig

__all__ = ["denoiser_loss", "learning_rate", "stage1_condition", "stage1_loss"]


def stage1_loss(net: torch.nn.Module, batch: Dict[str, Any], weights: Dict[str, float],
                device: "torch.device | str" = "cpu") -> torch.Tensor:
    """L1(J, gt) + L1(coarse, gt) + L1(I, hazy) [+ L1(T, transmission) + L1(A, airlight) when the
    batch has them] [+ L1 of J's and gt's per-image mean colours, "colour"]; each term times
    ``weights[name]``. batch["hazy"/"gt"]: (B, 3, H, W) in [0, 1]."""
    hazy, gt = batch["hazy"].to(device), batch["gt"].to(device)
    o = net(hazy)
    w = {**DEFAULT_LOSS_WEIGHTS, **weights}
    loss = w["J"] * F.l1_loss(o.J, gt) + w["coarse"] * F.l1_loss(o.coarse, gt) + w["I"] * F.l1_loss(o.I, hazy)
    if "transmission" in batch and w["T"]:
        loss = loss + w["T"] * F.l1_loss(o.T, batch["transmission"].to(device))
    if "airlight" in batch and w["A"]:
        loss = loss + w["A"] * F.l1_loss(o.A, batch["airlight"].to(device))
    if w.get("colour"):
        # a cast is a shift of the whole image's colour, worth little in the per-pixel term
        loss = loss + w["colour"] * F.l1_loss(o.J.mean(dim=(2, 3)), gt.mean(dim=(2, 3)))
    return loss


@torch.no_grad()
def stage1_condition(stage1: Stage1Net, hazy01: torch.Tensor) -> torch.Tensor:
    """The denoiser condition cat([to_signed(J), to_signed(T)]): (B, 4, H, W) in [-1, 1]."""
    o = stage1(hazy01)
    return denoiser_condition(o.J, o.T)


def denoiser_loss(unet: torch.nn.Module, stage1: Stage1Net, batch: Dict[str, Any], schedule: NoiseSchedule,
                  generator: Optional[torch.Generator] = None, device: "torch.device | str" = "cpu",
                  frequency_weight: float = FREQUENCY_WEIGHT) -> torch.Tensor:
    """``diffusion_loss`` on x0 = to_signed(gt) given the frozen stage 1's condition of batch["hazy"]
    (or batch["condition"] when a :class:`ConditionPool` computed it already)."""
    gt = batch["gt"].to(device)
    cond = batch["condition"].to(device) if "condition" in batch else stage1_condition(stage1, batch["hazy"].to(device))
    return diffusion_loss(unet, to_signed(gt), cond, generator=generator, schedule=schedule,
                          frequency_weight=frequency_weight)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Learning rate of optimiser step ``step`` (0-based) under ``cfg.lr_schedule``."""
    if cfg.lr_schedule == "constant" or cfg.steps <= 1:
        return cfg.lr
    floor = cfg.lr / 20  # not zero: the last steps still learn
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * min(step, cfg.steps - 1) / (cfg.steps - 1)))


# -- the loop ---------------------------------------------------------------------------------------
