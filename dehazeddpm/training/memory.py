"""What a training config needs in memory, before it runs out of it.

The fixed part is counted: weights, gradients and Adam's two moments (fp32, whatever the
precision: autocast keeps the weights in fp32), the EMA copy, the frozen stage 1. The activations
of one step are measured: a forward and backward pass of the config's network at batch 1, summing
the bytes of every tensor autograd saves for the backward pass (each storage once, the parameters
themselves not), in the config's precision, at two crops, ``measure_crop`` (default the config's)
and half of it. A straight line through the two splits them into a part that grows with the
pixels (per sample: it scales with the batch) and one that does not (autocast's low-precision
copies of the weights), so other crops and batches follow. On CUDA the peak allocated memory of
the larger measured step is reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Set, Tuple

import torch

from ..inference.device import autocast, resolve_precision
from ..models.stage1 import Stage1Net
from ..models.unet import UNet, UNetConfig
from .config import TrainConfig

__all__ = ["MemoryEstimate", "activation_bytes", "estimate_memory", "format_bytes"]

GB = 1024 ** 3


def format_bytes(n: float) -> str:
    """``1.23 GB`` / ``456 MB``."""
    return f"{n / GB:.2f} GB" if n >= GB / 10 else f"{n / 1024 ** 2:.0f} MB"


@dataclass
class MemoryEstimate:
    """Bytes of one training step of a config. ``fixed``: what does not depend on the batch, by
    name; ``activations_per_sample`` at ``crop``; ``measured_at``: the larger crop it was measured at."""

    stage: str
    parameters: int
    precision: str
    device: str
    crop: int
    measured_at: int
    fixed: Dict[str, int]
    activations_per_sample: int
    cuda_peak: Optional[int] = None

    def total(self, batch: int) -> int:
        """Bytes of a step at ``batch`` samples per pass."""
        return sum(self.fixed.values()) + batch * self.activations_per_sample

    def largest_batch(self, budget: float) -> int:
        """The most samples per pass whose step fits ``budget`` bytes (0: not even one)."""
        room = budget - sum(self.fixed.values())
        return max(0, int(room // self.activations_per_sample))

    def describe(self, batch: int, accumulate: int = 1, budget: Optional[float] = None) -> str:
        """The lines ``dehazeddpm train --estimate`` prints."""
        lines = [f"{self.stage}: {self.parameters / 1e6:.1f} M trainable parameters, precision {self.precision} "
                 f"on {self.device}",
                 "fixed: " + ", ".join(f"{k} {format_bytes(v)}" for k, v in self.fixed.items()),
                 f"activations of one step: {format_bytes(self.activations_per_sample)} per sample at {self.crop} px "
                 + (f"(measured at {self.measured_at} px, scaled by the pixels)" if self.measured_at != self.crop
                    else "(measured)"),
                 f"one step at batch {batch}" + (f" (x {accumulate} accumulated)" if accumulate > 1 else "")
                 + f": {format_bytes(self.total(batch))}"]
        if self.cuda_peak is not None:
            lines.append(f"CUDA peak of the measured step: {format_bytes(self.cuda_peak)}")
        if budget is not None:
            most = self.largest_batch(budget)
            effective = batch * accumulate
            hint = "" if not most else f"; for {effective} samples per step use batch_size {min(most, effective)} " \
                                       f"with accumulate {-(-effective // min(most, effective))}"
            lines.append(f"largest batch that fits {format_bytes(budget)}: {most}{hint}")
        return "\n".join(lines)


def activation_bytes(step: Callable[[], None], skip: Set[int] = frozenset()) -> int:
    """Bytes of the distinct storages autograd saves while ``step()`` runs its forward pass,
    leaving out the storages whose addresses are in ``skip`` (the parameters)."""
    seen: Dict[Tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[(storage.data_ptr(), t.device.index or 0)] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values())


def _network(cfg: TrainConfig) -> torch.nn.Module:
    if cfg.stage == "stage1":
        return Stage1Net()
    net = UNet.from_config(UNetConfig.from_dict(cfg.unet))
    net.checkpoint_blocks = cfg.checkpoint_blocks
    return net


def estimate_memory(cfg: TrainConfig, device: Optional[torch.device] = None,
                    measure_crop: Optional[int] = None) -> MemoryEstimate:
    """Measure and count what one training step of ``cfg`` needs (see the module docstring).
    ``measure_crop`` (a multiple of 16, default the config's crop) runs the measured step smaller."""
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.precision == "fp16" and device.type == "cpu":
        # estimating a GPU's fp16 run on a CPU: bf16 has the same bytes per value
        precision, label = "bf16", "fp16 (measured as bf16 on this CPU: the same bytes)"
    else:
        precision = label = resolve_precision(cfg.precision, device)
    net = _network(cfg).to(device).train()
    n_params = sum(p.numel() for p in net.parameters() if p.requires_grad)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())
    fixed = {"weights": weights, "gradients": weights, "Adam state": 2 * weights}
    if cfg.ema_decay:
        fixed["EMA"] = weights
    if cfg.stage == "denoiser":
        fixed["frozen stage 1"] = sum(p.numel() * 4 for p in Stage1Net().parameters())
    crop = int(measure_crop or cfg.crop)
    g = torch.Generator().manual_seed(0)

    def step(c: int) -> None:
        if cfg.stage == "stage1":
            with autocast(precision, device):
                out = net(torch.rand(1, 3, c, c, generator=g).to(device))
            loss = sum(t.float().mean() for t in (out.J, out.coarse, out.I))
        else:
            x = torch.rand(1, net.config.in_channel, c, c, generator=g).to(device) * 2 - 1
            with autocast(precision, device):
                loss = net(x, torch.full((1,), 0.5, device=device)).float().abs().mean()
        loss.backward()
        net.zero_grad(set_to_none=True)

    params = {p.untyped_storage().data_ptr() for p in net.parameters()}
    crops = (crop // 2, crop) if crop >= 32 else (crop, 2 * crop)
    saved = []
    for c in crops:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with torch.enable_grad():  # whatever the caller (a notebook) set
            saved.append(activation_bytes(lambda: step(c), skip=params))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    per_pixel = (saved[1] - saved[0]) / (crops[1] ** 2 - crops[0] ** 2)
    fixed["autocast weight copies"] = max(0, int(saved[1] - per_pixel * crops[1] ** 2))
    per_sample = int(per_pixel * cfg.crop ** 2)
    return MemoryEstimate(cfg.stage, n_params, label, str(device), cfg.crop, crop, fixed, per_sample, peak)
