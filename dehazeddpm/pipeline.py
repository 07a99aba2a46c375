"""One-call dehazing: hazy image in, dehazed PIL image (and stage-1 intermediates) out.

>>> pipe = DehazePipeline.from_pretrained("demo")          # doctest: +SKIP
>>> res = pipe("hazy.png", seed=0)                          # doctest: +SKIP
>>> res.image.save("clear.png"); res.T                      # doctest: +SKIP

Stage 1 (``Stage1Net``) maps the hazy image ([0, 1]) to J, T, A, I; stage 2 samples the clear
image with the SR3 denoiser conditioned on ``cat([J, T])`` mapped to [-1, 1]. Defaults favour
speed: DDIM over :data:`DEFAULT_STEPS` respaced steps, from pure noise with eta 0 unless the
weights' registry entry sets ``ddim_defaults`` (``demo``: from J noised to 0.3, eta 1). An entry's
``stage1_size`` (``demo``: 128) runs stage 1 at that shorter side (:mod:`working_size`).
``sampler="ddpm", steps=None`` is the reference test path (ancestral sampling over the full
training schedule).
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from .checkpoints import load_denoiser, load_schedule, load_stage1
from .imageio import ImageSource, load_image, to_pil, to_signed, to_unit
from .samplers import SAMPLERS, ddim_sample, ddpm_sample, q_sample, zero_mean
from .schedule import NoiseSchedule, ScheduleConfig
from .stage1 import SIZE_MULTIPLE as STAGE1_MULTIPLE
from .stage1 import Stage1Net
from .tiling import TiledDenoiser
from .unet import UNet
from .working_size import stage1_at_size, working_shape

# 20 DDIM (eta 0) steps: the usual quality plateau for SR3-type conditional models respaced with
# DDIM; 100x fewer UNet evaluations than the 2000-step reference path (see docs/benchmarks.md).
DEFAULT_STEPS = 20
# Trajectory frames are kept on the CPU, downscaled to this longest side and capped in number.
TRAJECTORY_MAX_SIDE = 256
TRAJECTORY_MAX_FRAMES = 100
# Tile choice (tile_size=None). CPU: the full image up to this many pixels, else 512 tiles.
CPU_FULL_IMAGE_PIXELS = 1024 * 1024
DEFAULT_TILE = 512
# CUDA: rough peak activation bytes per pixel and per UNet base channel (fp16 autocast, batch 1,
# skip connections kept alive); the full image is used when the estimate is below
# CUDA_MEMORY_FRACTION of the free memory reported by torch.cuda.mem_get_info.
CUDA_BYTES_PER_PIXEL_CHANNEL = 48
CUDA_MEMORY_FRACTION = 0.7
# fusion="transmission": weight of J rises smoothly from 0 at T <= low to 1 at T >= high.
FUSION_T_LOW = 0.5
FUSION_T_HIGH = 0.9
FUSIONS = (None, "transmission")


class CountingDenoiser(nn.Module):
    """Wrap a denoiser and count its evaluations (``.calls``); same call signature and ``config``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.calls = 0

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x, noise_level)


class TrajectoryFrame(NamedTuple):
    """One sampling step: ``x_t`` and predicted ``x0`` as (1, 3, h, w) CPU tensors in image space
    (``to_unit`` of diffusion space; ``x0`` clamped to [0, 1], ``x_t`` not clamped since noisy)."""

    step: int
    t: int
    x_t: torch.Tensor
    x0: torch.Tensor


@dataclass
class DehazeResult:
    """What :meth:`DehazePipeline.__call__` returns. Tensors are (1, C, H, W), CPU, float32, [0, 1]
    at the input size, except ``A`` (1, 3, 1, 1)."""

    image: Image.Image
    J: torch.Tensor
    T: torch.Tensor
    A: torch.Tensor
    I: torch.Tensor
    trajectory: Optional[List[TrajectoryFrame]] = None
    timings: Dict[str, float] = field(default_factory=dict)
    steps: int = 0          # denoiser steps actually run
    tile_size: Optional[int] = None  # tile used for the denoiser (None: full image)


def smoothstep(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """0 for x <= low, 1 for x >= high, 3u^2 - 2u^3 in between (C1-smooth, no banding)."""
    u = ((x - low) / (high - low)).clamp(0, 1)
    return u * u * (3 - 2 * u)


def fuse_transmission(J: torch.Tensor, T: torch.Tensor, diffusion: torch.Tensor,
                      low: float = FUSION_T_LOW, high: float = FUSION_T_HIGH) -> torch.Tensor:
    """``w * J + (1 - w) * diffusion`` with ``w = smoothstep(T)``, all in [0, 1].

    Thin haze (high T) keeps stage 1's faithful J; thick haze (low T), where J has little signal,
    takes the diffusion sample. J, diffusion: (B, 3, H, W); T: (B, 1, H, W).
    """
    w = smoothstep(T, low, high)
    return w * J + (1 - w) * diffusion


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad (right/bottom) to a multiple of ``multiple``: reflect, or replicate when the image is
    too small to reflect (reflect needs pad < size). Returns the padded tensor and (h, w)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def _stage1_size(value: Optional[int]) -> Optional[int]:
    """A ``stage1_size`` argument as a positive int, or None for full resolution (None or 0)."""
    if value is None:
        return None
    if isinstance(value, bool) or int(value) < 0:
        raise ValueError(f"stage1_size must be >= 0 (0 or None: full resolution), got {value!r}")
    return int(value) or None


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _FastDenoiser(nn.Module):
    """Runs the UNet under fp16 autocast with channels_last inputs (CUDA only)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, x_in: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.float16):
            return self.model(x_in.contiguous(memory_format=torch.channels_last), noise_level).float()


class DehazePipeline:
    """Stage 1 + diffusion stage 2, with padding, tiling, seeding and precision handled.

    Args:
        stage1: a ``Stage1Net`` (hazy [0, 1] -> J, coarse, T, A, I).
        denoiser: the SR3 ``UNet`` (input ``cat([condition, x_t])``, condition [J, T] or J).
        schedule: the training ``NoiseSchedule`` (respaced per call).
        device: default CUDA when available, else CPU. On CUDA the denoiser runs in fp16
            autocast with channels_last; on CPU everything is float32.
        compile: wrap the denoiser in ``torch.compile`` (worth it for many images of one size).
        ddim_defaults: values for DDIM arguments a call leaves at None (``{"start_strength": 0.3,
            "eta": 1.0}`` for the ``demo`` weights, from their registry entry); empty: start from
            pure noise with eta 0.
        stage1_size: run stage 1 at this shorter side and bring J and T back to the image's size
            (:func:`working_size.stage1_at_size`; ``demo``: 128, the size its stage 1 was trained
            at). None or 0: stage 1 sees the image at full resolution, as in the reference.
    """

    def __init__(self, stage1: Stage1Net, denoiser: UNet, schedule: NoiseSchedule,
                 device: Union[str, torch.device, None] = None, *, compile: bool = False,
                 ddim_defaults: Optional[Dict[str, Any]] = None, stage1_size: Optional[int] = None):
        self.device = torch.device(device) if device is not None else _default_device()
        # what a DDIM call uses for arguments left at None (from the weights' registry entry)
        self.ddim_defaults: Dict[str, Any] = dict(ddim_defaults or {})
        self.stage1_size: Optional[int] = _stage1_size(stage1_size)
        self.stage1 = stage1.to(self.device).eval()
        self.denoiser = denoiser.to(self.device).eval()
        self.schedule = schedule
        if self.device.type == "cuda":
            self.stage1 = self.stage1.to(memory_format=torch.channels_last)
            self.denoiser = self.denoiser.to(memory_format=torch.channels_last)
        self._compiled: Optional[nn.Module] = torch.compile(self.denoiser) if compile else None

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str = "demo", device: Union[str, torch.device, None] = None, *,
                        stage1: Union[str, os.PathLike, None] = None,
                        denoiser: Union[str, os.PathLike, None] = None,
                        download: bool = True, progress: bool = True, compile: bool = False) -> "DehazePipeline":
        """Weights of a registry entry (``demo``, ``nh-haze``, ``dense-haze``) via ``weights.resolve``.

        The UNet is built with the entry's ``unet_config`` and sampled with the entry's schedule,
        ``ddim_defaults`` and ``stage1_size`` (the ``demo`` entry starts DDIM from J noised
        part-way and runs stage 1 at 128 px: see the README); ``stage1``/``denoiser`` paths
        override the entry's files.
        """
        from .weights import resolve  # the registry (and its downloaders) only when asked for
        res = resolve(name, stage1=stage1, denoiser=denoiser, download=download, progress=progress)
        net1 = load_stage1(res.stage1)
        unet = load_denoiser(res.denoiser, **res.unet_config)
        schedule = NoiseSchedule.from_config(res.schedule)
        return cls(net1, unet, schedule, device, compile=compile, ddim_defaults=res.ddim_defaults,
                   stage1_size=res.stage1_size)

    @classmethod
    def from_files(cls, stage1: Union[str, os.PathLike], denoiser: Union[str, os.PathLike],
                   device: Union[str, torch.device, None] = None, *,
                   schedule: Optional[NoiseSchedule] = None, compile: bool = False,
                   unet_config: Optional[Dict[str, Any]] = None) -> "DehazePipeline":
        """From two checkpoint files; the UNet config is read off the tensor shapes (``unet_config``
        overrides what shapes cannot show, e.g. ``{"norm_groups": 8}``; default 32 as released) and
        the schedule from the denoiser file's buffers (else ``schedule``, else the released
        2000-step linear one)."""
        net1 = load_stage1(stage1)
        unet = load_denoiser(denoiser, **(unet_config or {}))
        sched = schedule or load_schedule(denoiser) or NoiseSchedule.from_config(ScheduleConfig())
        return cls(net1, unet, sched, device, compile=compile)

    # -- helpers ----------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Both networks' input sides must be multiples of this: lcm(16, UNet multiple)."""
        return math.lcm(STAGE1_MULTIPLE, int(self.denoiser.config.size_multiple))

    def choose_tile(self, h: int, w: int) -> Optional[int]:
        """Tile side for an h x w (padded) image, or None for the full image.

        CPU: full image up to ``CPU_FULL_IMAGE_PIXELS`` (1024 x 1024), else ``DEFAULT_TILE``.
        CUDA: full image when ``h * w * inner_channel * CUDA_BYTES_PER_PIXEL_CHANNEL`` is below
        ``CUDA_MEMORY_FRACTION`` of the free memory, else the largest power-of-two tile (>= 256)
        whose estimate fits, times 4 tiles per batch.
        """
        if self.device.type != "cuda":
            return None if h * w <= CPU_FULL_IMAGE_PIXELS else DEFAULT_TILE
        free, _ = torch.cuda.mem_get_info(self.device)
        per_px = int(self.denoiser.config.inner_channel) * CUDA_BYTES_PER_PIXEL_CHANNEL
        budget = free * CUDA_MEMORY_FRACTION
        if h * w * per_px <= budget:
            return None
        tile = 2048
        while tile > 256 and 4 * tile * tile * per_px > budget:
            tile //= 2
        return tile

    def _precision(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # -- inference --------------------------------------------------------------------------------
    def run_stage1(self, x01: torch.Tensor, size: Optional[int] = None
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1 on a (1, 3, H, W) [0, 1] image; returns float32 (J, T, A, I) at H x W, in [0, 1].

        size: None runs the net on the image as given; otherwise on a copy with that shorter
        side (:func:`working_size.stage1_at_size`).
        """
        x = x01.to(self.device)

        def net(img: torch.Tensor):
            if self.device.type == "cuda":
                img = img.contiguous(memory_format=torch.channels_last)
            out = self.stage1(img)
            return type(out)(*(t.float() for t in out))

        with torch.inference_mode(), self._precision():
            out = net(x) if size is None else stage1_at_size(net, x, size)
        return out.J, out.T, out.A, out.I

    @torch.inference_mode()
    def __call__(self, image: ImageSource, sampler: str = "ddim", steps: Optional[int] = None,
                 eta: Optional[float] = None, seed: Optional[int] = None, tile_size: Optional[int] = None,
                 tile_overlap: Optional[int] = None, start_strength: Optional[float] = None,
                 trajectory_every: Optional[int] = None, progress: bool = True,
                 fusion: Optional[str] = None, zero_mean_noise: Optional[bool] = None,
                 stage1_size: Optional[int] = None,
                 callback: Optional[Callable[[int, int, torch.Tensor, torch.Tensor], None]] = None) -> DehazeResult:
        """Dehaze one image (path, PIL, numpy or tensor; any mode, any size >= 1x1).

        sampler/steps: ``"ddim"`` (default, ``steps=None`` -> DEFAULT_STEPS) or ``"ddpm"``
            (``steps=None`` -> the full schedule, the reference path); ``steps=0`` returns J.
        eta: DDIM's noise scale, 0 (deterministic) to 1 (the ancestral sampler respaced). None:
            the weights' ``ddim_defaults`` (``demo``: 1), else 0. The ancestral sampler ignores it.
        seed: draws from a ``torch.Generator`` on the pipeline device (deterministic per device);
            None uses the global RNG.
        tile_size/tile_overlap: denoiser tiling (None: chosen by :meth:`choose_tile`; a size >=
            the image runs it whole).
        start_strength: < 1 starts from J noised to that fraction of the chain instead of pure
            noise and runs only those steps (SDEdit-style refinement of J). None: 1.0 (pure
            noise), or for ``"ddim"`` the weights' ``ddim_defaults`` (``demo``: 0.3).
        trajectory_every: keep (step, t, x_t, x0) every that many steps (plus the last), on CPU,
            downscaled to <= TRAJECTORY_MAX_SIDE, at most TRAJECTORY_MAX_FRAMES frames.
        fusion: ``"transmission"`` blends J back in where haze is thin (:func:`fuse_transmission`).
        zero_mean_noise: draw DDIM's noise without its per-channel mean (:func:`samplers.zero_mean`,
            which says why). None: on for ``"ddim"``; ``"ddpm"`` never uses it (the reference path).
        stage1_size: shorter side stage 1 runs at (:mod:`working_size`); None: the pipeline's
            ``stage1_size`` (``demo``: 128); 0: full resolution.
        callback: extra ``callback(step, t, x_t, x0)`` on padded diffusion-space tensors.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}")
        if fusion not in FUSIONS:
            raise ValueError(f"unknown fusion {fusion!r}; choose from {FUSIONS}")
        if start_strength is None:
            start_strength = float(self.ddim_defaults.get("start_strength", 1.0)) if sampler == "ddim" else 1.0
        if not 0 < start_strength <= 1:
            raise ValueError(f"start_strength must be in (0, 1], got {start_strength}")
        if eta is None:
            eta = float(self.ddim_defaults.get("eta", 0.0))
        if not 0 <= eta <= 1:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        size1 = self.stage1_size if stage1_size is None else _stage1_size(stage1_size)
        if zero_mean_noise is None:
            zero_mean_noise = sampler == "ddim"
        elif zero_mean_noise and sampler == "ddpm":
            raise ValueError("zero_mean_noise is a DDIM option; the ancestral sampler stays the reference")
        timings: Dict[str, float] = {}
        t_start = time.perf_counter()

        x = load_image(image).float()
        padded, (h, w) = pad_to_multiple(x.to(self.device), self.size_multiple)
        _sync(self.device)
        timings["load"] = time.perf_counter() - t_start

        t0 = time.perf_counter()
        if size1 and working_shape(h, w, size1) != (h, w):
            J, T, A, I = self.run_stage1(x, size=size1)
            # J and T come back at h x w; the denoiser needs them padded like the input
            J, T, I = (pad_to_multiple(t, self.size_multiple)[0] for t in (J, T, I))
        else:
            J, T, A, I = self.run_stage1(padded)
        _sync(self.device)
        timings["stage1"] = time.perf_counter() - t0

        def crop(t: torch.Tensor) -> torch.Tensor:
            return t[..., :h, :w].detach().float().cpu()

        Jc, Tc, Ac, Ic = crop(J), crop(T), A.detach().float().cpu(), crop(I)
        if steps == 0:
            timings["total"] = time.perf_counter() - t_start
            return DehazeResult(image=to_pil(Jc), J=Jc, T=Tc, A=Ac, I=Ic,
                                trajectory=[] if trajectory_every else None, timings=timings, steps=0)

        # Schedule: respace (DDIM default), then truncate for a partial start.
        n_full = len(self.schedule)
        if steps is None:
            steps = DEFAULT_STEPS if sampler == "ddim" else n_full
        sched = self.schedule.respace(min(int(steps), n_full))
        if start_strength < 1:
            sched = sched.truncate(start_strength)

        t0 = time.perf_counter()
        n_cond = int(self.denoiser.config.in_channel - self.denoiser.config.out_channel)
        condition = to_signed(torch.cat([J, T], 1) if n_cond == 4 else J)
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(int(seed))
        noise = torch.randn((1, 3) + tuple(padded.shape[-2:]), generator=generator,
                            device=self.device, dtype=torch.float32)
        if zero_mean_noise:
            noise = zero_mean(noise)
        if start_strength < 1:
            x_T = q_sample(sched.noise_levels[-1].item(), to_signed(J), noise)
        else:
            x_T = noise

        model: nn.Module = self._compiled or self.denoiser
        ph, pw = padded.shape[-2:]
        tile = tile_size if tile_size is not None else self.choose_tile(ph, pw)
        if tile is not None and (tile >= ph and tile >= pw):
            tile = None
        if tile is not None:
            # Auto-chosen CUDA tiles were sized for 4 per batch; otherwise 1 tile at a time, the
            # least memory (what an explicit tile_size usually asks for).
            batch = 4 if (tile_size is None and self.device.type == "cuda") else 1
            model = TiledDenoiser(model, tile, tile_overlap, tile_batch=batch)
        if self.device.type == "cuda":
            model = _FastDenoiser(model)

        frames: Optional[List[TrajectoryFrame]] = [] if trajectory_every else None
        every = 0
        if trajectory_every:
            every = max(int(trajectory_every), math.ceil(len(sched) / (TRAJECTORY_MAX_FRAMES - 1)))

        def on_step(step: int, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
            if callback is not None:
                callback(step, t, x_t, x0)
            if frames is not None and (step % every == 0 or step == len(sched) - 1):
                frames.append(TrajectoryFrame(step, t, _thumb(to_unit(x_t[..., :h, :w])),
                                              _thumb(to_unit(x0[..., :h, :w]).clamp(0, 1))))

        if sampler == "ddpm":
            out = ddpm_sample(model, x_T, sched, condition, generator=generator, callback=on_step,
                              progress=progress)
        else:
            out = ddim_sample(model, x_T, sched, condition, eta=eta, generator=generator,
                              callback=on_step, progress=progress, zero_mean_noise=zero_mean_noise)
        diffusion = to_unit(out).clamp(0, 1)
        _sync(self.device)
        timings["denoise"] = time.perf_counter() - t0

        result = crop(diffusion)
        if fusion == "transmission":
            result = fuse_transmission(Jc, Tc, result)
        timings["total"] = time.perf_counter() - t_start
        return DehazeResult(image=to_pil(result), J=Jc, T=Tc, A=Ac, I=Ic, trajectory=frames,
                            timings=timings, steps=len(sched), tile_size=tile)


def _thumb(x: torch.Tensor, max_side: int = TRAJECTORY_MAX_SIDE) -> torch.Tensor:
    """Downscale (area) so the longest side is <= max_side; returns a float32 CPU copy."""
    h, w = x.shape[-2:]
    scale = max_side / max(h, w)
    x = x.float()
    if scale < 1:
        x = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="area")
    return x.detach().cpu().clone()


__all__ = ["DEFAULT_STEPS", "DehazePipeline", "DehazeResult", "TrajectoryFrame", "fuse_transmission",
           "pad_to_multiple", "smoothstep"]
