"""Device and precision policy: which device, which arithmetic, and when to tile the denoiser.

Kept apart from the pipeline so the rules can be read, tested and benchmarked on their own.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, ContextManager, Dict, Iterator, Optional

import torch
from torch import nn

__all__ = ["PrecisionDenoiser", "busy_elsewhere", "denoiser_layout", "choose_threads", "cpu_threads", "pin_threads", "tiles_per_call", "CPU_FULL_IMAGE_PIXELS", "CPU_TILE_BATCH_PIXELS", "CUDA_BYTES_PER_PIXEL_CHANNEL", "CUDA_MEMORY_FRACTION", "DEFAULT_TILE",
           "autocast", "choose_tile", "cpu_has_fast_bf16", "default_device", "device_info", "resolve_precision",
           "stage1_precision", "sync"]

# Tile choice (tile_size=None). CPU: the full image up to this many pixels, else DEFAULT_TILE tiles.
CPU_FULL_IMAGE_PIXELS = 1024 * 1024
# Tiles per UNet call on a CPU: as many as hold this many pixels (8 tiles of 128 px). Measured on the
# demo UNet at 512x384 in bf16: 4 to 10 tiles per call 1.3x faster than 1, all 20 at once slower
# again (the activations leave the cache); docs/benchmarks.md.
CPU_TILE_BATCH_PIXELS = 8 * 128 * 128
DEFAULT_TILE = 512
# CUDA: rough peak activation bytes per pixel and per UNet base channel (fp16 autocast, batch 1,
# skip connections kept alive); the full image is used when the estimate is below
# CUDA_MEMORY_FRACTION of the free memory reported by torch.cuda.mem_get_info.
CUDA_BYTES_PER_PIXEL_CHANNEL = 48
CUDA_MEMORY_FRACTION = 0.7

_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX tiles)."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(p()) for p in probes if callable(p))


def resolve_precision(precision: Optional[str], device: torch.device) -> str:
    """The denoiser's arithmetic that a ``precision`` option means on ``device``: "fp32", "bf16"
    or "fp16".

    "auto" (or None): fp16 autocast on CUDA (the T4 Colab lends has no fast bf16); bf16 on a CPU
    with native bf16 instructions, where it is faster at no cost in PSNR/SSIM
    (experiments/precision); fp32 elsewhere. fp16 on a CPU is refused: CPUs have no fast fp16 matrix
    units, so it would only be slower and less accurate.
    """
    if precision in (None, "auto"):
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision 'fp16' needs a CUDA device; on a CPU use 'bf16' or 'fp32'")
    return precision


def stage1_precision(denoiser_precision: str) -> str:
    """Stage 1 follows the denoiser into fp16 (CUDA) only: bf16 costs its J accuracy
    (experiments/precision), and it is a small part of a call's time on a CPU."""
    return "fp16" if denoiser_precision == "fp16" else "fp32"


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The autocast context for a resolved precision ("fp32": none)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_DTYPES[precision])


def choose_tile(h: int, w: int, device: torch.device, inner_channel: int, batch: int = 1) -> Optional[int]:
    """Tile side for an h x w (padded) image sampled ``batch`` times at once, or None for the full image.

    CPU: the full image up to ``CPU_FULL_IMAGE_PIXELS`` (1024 x 1024), else ``DEFAULT_TILE``.
    CUDA: the full image when ``h * w * inner_channel * CUDA_BYTES_PER_PIXEL_CHANNEL`` is below
    ``CUDA_MEMORY_FRACTION`` of the free memory, else the largest power-of-two tile (>= 256)
    whose estimate fits, times 4 tiles per batch.
    """
    if device.type != "cuda":
        return None if h * w * batch <= CPU_FULL_IMAGE_PIXELS else DEFAULT_TILE
    free, _ = torch.cuda.mem_get_info(device)
    per_px = int(inner_channel) * CUDA_BYTES_PER_PIXEL_CHANNEL * int(batch)
    budget = free * CUDA_MEMORY_FRACTION
    if h * w * per_px <= budget:
        return None
    tile = 2048
    while tile > 256 and 4 * tile * tile * per_px > budget:
        tile //= 2
    return tile


def tiles_per_call(tile: int, items: int, device: torch.device, auto_tile: bool) -> int:
    """Tiles per UNet call for ``tile``-pixel tiles of ``items`` images (samples) each. CUDA: 4 for
    an automatic tile (:func:`choose_tile` sized it for 4), 1 for a tile the call chose (it usually
    asks for the least memory). CPU: as many as hold ``CPU_TILE_BATCH_PIXELS`` pixels (at least
    one): fewer, larger calls pay the threads' synchronisation less often."""
    if device.type == "cuda":
        return 4 if auto_tile else 1
    return max(1, CPU_TILE_BATCH_PIXELS // (int(tile) ** 2 * max(1, int(items))))


def busy_elsewhere(samples: int = 5) -> float:
    """Runnable threads on this machine besides the caller: the median of a few reads of
    ``procs_running`` in Linux's /proc/stat (an instant count, unlike the load average), less the
    reading thread; elsewhere the 1-minute load average; 0 when neither can be read."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/stat") as f:
                line = next(ln for ln in f if ln.startswith("procs_running"))
            counts.append(int(line.split()[1]) - 1)
        except (OSError, StopIteration, ValueError, IndexError):
            break
        time.sleep(0.002)
    if counts:
        return float(sorted(counts)[len(counts) // 2])
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return 0.0


def choose_threads(device: torch.device, most: Optional[int] = None) -> Optional[int]:
    """The intra-op threads a CPU call runs with (None on other devices): ``DEHAZEDDPM_THREADS``
    when set, else as many of ``most`` (default: torch's current setting) as there are cores not
    busy with other work. On a shared CPU, threads beyond the free cores wait on each other at
    every small kernel: measured here, a tiled 64 px call took 36-54 s with 2 threads beside a busy
    process and 1.3 s with 1 (docs/benchmarks.md)."""
    if device.type != "cpu":
        return None
    forced = os.environ.get("DEHAZEDDPM_THREADS", "").strip()
    if forced:
        try:
            n = int(forced)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"DEHAZEDDPM_THREADS must be a positive integer, got {forced!r}")
        return n
    most = most or torch.get_num_threads()
    free = (os.cpu_count() or most) - busy_elsewhere()
    return max(1, min(most, int(math.floor(free + 0.5))))


def pin_threads(n: int) -> None:
    """Every later CPU call in this process runs on exactly ``n`` intra-op threads (torch's setting
    and ``DEHAZEDDPM_THREADS``), whatever else the machine runs. Measurements pin the count: bf16
    results differ in the last bit between 1 and 2 threads, so a count chosen from the momentary
    load (:func:`choose_threads`) makes a comparison of two calls depend on what else was running."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive integer, got {n!r}")
    os.environ["DEHAZEDDPM_THREADS"] = str(n)
    torch.set_num_threads(n)


@contextlib.contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Within the block torch uses ``n`` intra-op threads (None: unchanged); restored after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def device_info() -> Dict[str, Any]:
    """The accelerator torch would use: type, name, free/total memory in bytes when known."""
    info: Dict[str, Any] = {"type": "cpu", "name": "cpu", "free_bytes": None, "total_bytes": None,
                            "torch": torch.__version__}
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        info.update(type="cuda", name=torch.cuda.get_device_name(idx))
        try:
            free, total = torch.cuda.mem_get_info(idx)
            info.update(free_bytes=int(free), total_bytes=int(total))
        except RuntimeError:
            info["total_bytes"] = int(torch.cuda.get_device_properties(idx).total_memory)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        info.update(type="mps", name="Apple MPS")
    return info


def denoiser_layout(precision: str, device: torch.device) -> torch.memory_format:
    """The memory format the denoiser runs in: channels_last (its convolutions 1.6x faster per
    evaluation on this CPU in bf16, and what cuDNN's tensor cores want), except fp32 on a CPU,
    where the contiguous layout keeps a batch of tiles bit-equal to one tile at a time (oneDNN's
    channels_last GroupNorm rounds by batch size)."""
    return torch.contiguous_format if device.type == "cpu" and precision == "fp32" else torch.channels_last


class PrecisionDenoiser(nn.Module):
    """Run a denoiser under a resolved precision's autocast ("fp32": none) with its inputs in
    :func:`denoiser_layout`; returns float32 eps. Same call signature and ``config`` as the
    wrapped model."""

    def __init__(self, model: nn.Module, precision: str, device: torch.device):
        super().__init__()
        self.model, self.precision, self.device = model, precision, device

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, x_in: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        x_in = x_in.contiguous(memory_format=denoiser_layout(self.precision, self.device))
        with autocast(self.precision, self.device):
            return self.model(x_in, noise_level).float()
