"""One-call dehazing: hazy image in, dehazed PIL image (and stage-1 intermediates) out.

>>> pipe = DehazePipeline.from_pretrained("demo")          # doctest: +SKIP
>>> res = pipe("hazy.png", seed=0)                          # doctest: +SKIP
>>> res.image.save("clear.png"); res.T                      # doctest: +SKIP

Stage 1 (``Stage1Net``) maps the hazy image ([0, 1]) to J, T, A, I; stage 2 samples the clear
image with the SR3 denoiser conditioned on ``cat([J, T])`` mapped to [-1, 1]. A call's options
(:class:`~dehazeddpm.options.SamplingOptions`) are resolved once, from its keywords over the
weights' registry defaults; then the call prepares the condition and the denoiser and hands
them to :func:`dehazeddpm.diffusion.sample`, the sampling entry point training uses too.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, NamedTuple, Optional, Tuple, Union

import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from ..diffusion.samplers import Callback, sample, sampling_schedule
from ..diffusion.schedule import RELEASED_SCHEDULE, NoiseSchedule
from ..diffusion.wrappers import ConditionedDenoiser
from ..io.checkpoints import load_denoiser, load_schedule, load_stage1
from ..io.images import ImageSource, denoiser_condition, load_image, to_pil, to_signed, to_unit
from ..models.attention import set_attention_window
from ..models.stage1 import SIZE_MULTIPLE as STAGE1_MULTIPLE
from ..models.stage1 import Stage1Net, Stage1Output
from ..models.unet import UNet
from ..options import SamplingOptions, check_seed
from ..physics import fuse_transmission
from ..utils import pad_to_multiple, resize, scaled_shape
from .device import (
    PrecisionDenoiser,
    autocast,
    choose_threads,
    choose_tile,
    cpu_threads,
    default_device,
    denoiser_layout,
    resolve_precision,
    stage1_precision,
    sync,
    tiles_per_call,
)
from .tiling import TiledDenoiser
from .working_size import from_working_size, mirror_averaged, stage1_at_size, to_working_size, working_shape

if TYPE_CHECKING:
    from ..hub.registry import WeightsEntry

__all__ = ["BrokenModelError", "DehazePipeline", "DehazeResult", "StepRecorder", "TRAJECTORY_MAX_FRAMES",
           "TRAJECTORY_MAX_SIDE", "TrajectoryFrame", "check_output", "sample_spread"]

# Trajectory frames are kept on the CPU, downscaled to this longest side and capped in number.
TRAJECTORY_MAX_SIDE = 256
TRAJECTORY_MAX_FRAMES = 100


class BrokenModelError(RuntimeError):
    """The networks produced NaN, inf or a constant image: broken weights or schedule, not a bad input."""


def _spread(x: torch.Tensor) -> float:
    """The largest per-channel range over the pixels: 0 for an image without spatial variation."""
    return float((x.amax(dim=(-2, -1)) - x.amin(dim=(-2, -1))).max())


def _saturated(x: torch.Tensor) -> float:
    """The fraction of values of an image in [0, 1] that sit at 0 or 1 (clipped)."""
    return float(((x <= 0) | (x >= 1)).float().mean())


def check_output(what: str, x: torch.Tensor, reference: Optional[torch.Tensor] = None,
                 saturation: bool = False) -> None:
    """Raise :class:`BrokenModelError` when ``x`` holds NaN or inf; and, given the image it was made
    from (``reference``, [0, 1]), when ``x`` is constant while that is not, or (``saturation``)
    clipped to 0 or 1 almost everywhere (over 90% of its values) while that is not (a quarter at
    most): what overflowing weights give."""
    if not bool(torch.isfinite(x).all()):
        raise BrokenModelError(f"{what} produced NaN or inf: the weights or the schedule are broken")
    if reference is None:
        return
    if _spread(x) < 1e-6 < _spread(reference) - 1 / 255:
        raise BrokenModelError(f"{what} produced a constant image from an input that is not: the weights are broken")
    if saturation and _saturated(x) > 0.9 and _saturated(reference) <= 0.25:
        raise BrokenModelError(f"{what} produced a saturated image ({_saturated(x):.0%} of its values clipped to 0 "
                               "or 1) from an input that is not: the weights or the schedule are broken")


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
    at the input size, except ``A`` (1, 3, 1, 1). ``options`` is what actually ran: resolved
    sampler, steps (the chain's length), eta, start, precision and the tile used (None: the whole
    image); ``evaluations`` counts the denoiser evaluations that ran (fewer than the chain's
    steps when the start is below 1), each over all samples at once; ``started_at`` the noise
    level the run began at, as a fraction of the chain (the respaced chain's step at or below
    the asked start: 0.17 for a 7-step chain asked 0.3; None for a run from pure noise or stage 1
    only); ``threads`` the CPU threads the call chose
    (:func:`~dehazeddpm.inference.device.choose_threads`; None off the CPU).

    With ``samples=K`` > 1, ``image`` is the mean of the K samples (each clamped to [0, 1]),
    ``spread`` (1, 1, H, W) their per-pixel standard deviation averaged over the colour channels
    (in [0, 0.5]: where the model is unsure), and ``samples`` (K, 3, H, W) each sample when the
    call asked ``keep_samples=True``; both None otherwise."""

    image: Image.Image
    J: torch.Tensor
    T: torch.Tensor
    A: torch.Tensor
    I: torch.Tensor
    options: SamplingOptions
    trajectory: Optional[List[TrajectoryFrame]] = None
    timings: Dict[str, float] = field(default_factory=dict)
    evaluations: int = 0
    tile_size: Optional[int] = None
    spread: Optional[torch.Tensor] = None
    samples: Optional[torch.Tensor] = None
    threads: Optional[int] = None
    started_at: Optional[float] = None

    @property
    def steps(self) -> int:
        """Deprecated alias of :attr:`evaluations` (``options.steps`` is the chain's length)."""
        warnings.warn("DehazeResult.steps is deprecated: use .evaluations (denoiser evaluations that ran) "
                      "or .options.steps (the chain's length)", DeprecationWarning, stacklevel=2)
        return self.evaluations

    def describe(self) -> str:
        """One line for a figure title: what ran, on how many CPU threads, and how long it took."""
        what = "stage 1 only" if self.evaluations == 0 else self.options.describe(self.evaluations, self.started_at)
        threads = f", {self.threads} CPU thread{'s' if self.threads != 1 else ''}" if self.threads else ""
        return f"{what}{threads}, {self.timings.get('total', 0.0):.1f} s"


def _thumb(x: torch.Tensor, max_side: int = TRAJECTORY_MAX_SIDE) -> torch.Tensor:
    """A float32 CPU copy whose longest side is at most ``max_side``."""
    h, w = x.shape[-2:]
    x = x.float()
    if max(h, w) > max_side:
        x = resize(x, scaled_shape(h, w, max_side, side="longer"), "area")
    return x.detach().cpu().clone()


class StepRecorder:
    """The samplers' callback for one call: advances the progress bar, keeps trajectory frames
    and passes each step on to the user's callback.

    steps: the run's length; units: evaluations per step (tiles); (h, w): the image inside the
    padding; every: keep a frame every that many steps (0: none), capped at TRAJECTORY_MAX_FRAMES.
    """

    def __init__(self, steps: int, units: int, hw: Tuple[int, int], every: Optional[int],
                 callback: Optional[Callback], progress: bool, desc: str):
        self.steps, self.units, self.hw, self.callback = steps, units, hw, callback
        self.frames: Optional[List[TrajectoryFrame]] = [] if every else None
        self.every = max(int(every), math.ceil(steps / (TRAJECTORY_MAX_FRAMES - 1))) if every else 0
        self.bar = tqdm(total=steps * units, unit="tile" if units > 1 else "step", leave=False,
                        disable=not progress, desc=desc)

    def __enter__(self) -> "StepRecorder":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()

    def on_tiles(self, n: int) -> None:
        """Tiled runs count their tiles as they go."""
        self.bar.update(n)

    def __call__(self, step: int, t: int, x_t: torch.Tensor, x0: torch.Tensor) -> None:
        if self.units == 1:
            self.bar.update(1)
        if self.callback is not None:
            self.callback(step, t, x_t, x0)
        if self.frames is not None and (step % self.every == 0 or step == self.steps - 1):
            h, w = self.hw
            self.frames.append(TrajectoryFrame(step, t, _thumb(to_unit(x_t[:1, :, :h, :w])),
                                               _thumb(to_unit(x0[:1, :, :h, :w]).clamp(0, 1))))


def sample_spread(drawn: torch.Tensor) -> torch.Tensor:
    """Where K samples disagree: (K, 3, H, W) in [0, 1] -> (1, 1, H, W), the per-pixel standard
    deviation over the samples (population), averaged over the colour channels; in [0, 0.5]."""
    mean = drawn.mean(0, keepdim=True)
    # two passes, not torch.std: its reduction over the leading dimension takes ~100 ms on a
    # 2-core CPU at 512x384 against ~1 ms for these
    return (drawn - mean).square_().mean(0, keepdim=True).sqrt_().mean(1, keepdim=True)


class DehazePipeline:
    """Stage 1 + diffusion stage 2, with padding, tiling, seeding and precision handled.

    Args:
        stage1: a ``Stage1Net`` (hazy [0, 1] -> J, coarse, T, A, I).
        denoiser: the SR3 ``UNet`` (input ``cat([condition, x_t])``, condition [J, T] or J).
        schedule: the training ``NoiseSchedule`` (respaced per call).
        device: default CUDA when available, else CPU.
        defaults: the options a call leaves at None (a registry entry's ``defaults``; ``demo``:
            DDIM from J noised to 0.3 with eta 1, stage 1 at 128 px). Empty: DDIM from pure noise.
        compile: wrap the denoiser in ``torch.compile`` (worth it for many images of one size).
    """

    def __init__(self, stage1: Stage1Net, denoiser: UNet, schedule: NoiseSchedule,
                 device: Union[str, torch.device, None] = None, *,
                 defaults: Union[SamplingOptions, Mapping[str, Any], None] = None, compile: bool = False):
        self.device = torch.device(device) if device is not None else default_device()
        self.defaults = defaults if isinstance(defaults, SamplingOptions) else SamplingOptions.from_mapping(defaults or {})
        self.stage1 = stage1.to(self.device).eval()
        self.denoiser = denoiser.to(self.device).eval()
        self.schedule = schedule
        # stage 1 in channels_last on every device: on a CPU, in fp32, 1.4-1.6x faster at 64-1024 px
        # with J within 1e-5 (benchmarks/layout.py --stage1)
        self.stage1 = self.stage1.to(memory_format=torch.channels_last)
        self._layout: Optional[torch.memory_format] = None  # the denoiser's; set per call
        self._compiled: Optional[nn.Module] = torch.compile(self.denoiser) if compile else None
        self.config_source = "given"  # where the settings tensors cannot show came from (from_files)

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: Union[str, "WeightsEntry"] = "demo", device: Union[str, torch.device, None] = None, *,
                        stage1: Union[str, os.PathLike, None] = None,
                        denoiser: Union[str, os.PathLike, None] = None,
                        download: bool = True, progress: bool = True, compile: bool = False) -> "DehazePipeline":
        """Weights of a registry entry (``demo``, ``nh-haze``, ``dense-haze``, or a ``WeightsEntry``)
        via ``hub.resolve``.

        The UNet is built with the entry's ``unet_config`` and sampled with the entry's schedule
        and ``defaults``; ``stage1``/``denoiser`` paths override the entry's files.
        """
        from ..hub import cache_dir, resolve
        from ..io.checkpoints import CheckpointError
        res = resolve(name, stage1=stage1, denoiser=denoiser, download=download, progress=progress)
        try:
            net1 = load_stage1(res.stage1)
            unet = load_denoiser(res.denoiser, **res.unet_config)
        except CheckpointError as exc:
            cached = [p for p in (res.stage1, res.denoiser) if cache_dir() in Path(p).resolve().parents]
            if not cached:
                raise
            raise CheckpointError(f"{exc} If that is a cached download ({', '.join(map(str, cached))}), delete it "
                                  f"and run `dehazeddpm download {res.entry.name} --force --forget-hash`.") from None
        pipe = cls(net1, unet, NoiseSchedule.from_config(res.schedule), device, defaults=res.defaults,
                   compile=compile)
        pipe.config_source = f"the registry's {res.entry.name!r} entry"
        return pipe

    @classmethod
    def from_files(cls, stage1: Union[str, os.PathLike], denoiser: Union[str, os.PathLike],
                   device: Union[str, torch.device, None] = None, *,
                   schedule: Optional[NoiseSchedule] = None, compile: bool = False,
                   unet_config: Optional[Dict[str, Any]] = None,
                   defaults: Union[SamplingOptions, Mapping[str, Any], None] = None) -> "DehazePipeline":
        """From two checkpoint files, with the settings their tensors cannot show taken from, in
        order: ``unet_config`` / ``defaults`` given here; the registry entry the denoiser file is
        (by its own sha256: the bundled demo, or released files downloaded before), whatever the
        stage-1 file; what a file saved by this package carries; the released architecture when
        the shapes are exactly it. A GroupNorm count none of these gives is a CheckpointError that
        names ``norm_groups``, not a guess (``config_source`` says where the settings came from).
        The schedule comes from the denoiser file's buffers (else ``schedule``, else the released one)."""
        from ..hub import entry_for_file
        from ..io.checkpoints import CheckpointError, checkpoint_metadata, config_unknown_message, denoiser_config

        # the denoiser alone says which weights these are: its entry's settings and defaults
        entry = entry_for_file(denoiser, "denoiser")
        if entry is not None:
            config = {**entry.unet_config, **(unet_config or {})}
            defaults = defaults if defaults is not None else entry.defaults
            source = f"the registry's {entry.name!r} denoiser (recognised by sha256)"
        else:
            config = dict(unet_config or {})
            saved = checkpoint_metadata(denoiser).get("defaults")
            if defaults is None and isinstance(saved, Mapping):
                defaults = saved
            _, how = denoiser_config(denoiser, **config)
            if "assumed" in how:  # a guess would give a working but wrong model
                raise CheckpointError(config_unknown_message(denoiser, how))
            source = f"UNet config {how}"
        pipe = cls(load_stage1(stage1), load_denoiser(denoiser, **config),
                   schedule or load_schedule(denoiser) or NoiseSchedule.from_config(RELEASED_SCHEDULE), device,
                   defaults=defaults, compile=compile)
        pipe.config_source = source
        return pipe

    # -- options ----------------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        """Both networks' input sides must be multiples of this: lcm(16, UNet multiple)."""
        return math.lcm(STAGE1_MULTIPLE, int(self.denoiser.config.size_multiple))

    def resolve_options(self, options: Union[SamplingOptions, Mapping[str, Any], None] = None,
                        **chosen: Any) -> SamplingOptions:
        """The options a call runs with: ``chosen`` keywords (fields of :class:`SamplingOptions`;
        None: not chosen) over ``options`` (a SamplingOptions or a dict of its fields), over the
        weights' defaults, then the sampler's rules (:meth:`SamplingOptions.resolved`), and the
        precision this pipeline's device gives "auto" (:func:`resolve_precision`; fp16 on a CPU is
        a ValueError). The one place a call's options are validated and completed."""
        call = SamplingOptions.coerce(options)
        picked = {k: v for k, v in chosen.items() if v is not None}
        if picked:
            call = SamplingOptions.from_mapping({**call.to_dict(), **picked}, where="the call's options")
        opts = call.with_defaults(self.defaults).resolved(len(self.schedule))
        return dataclasses.replace(opts, precision=resolve_precision(opts.precision, self.device))

    # -- the steps of a call ---------------------------------------------------------------------
    def stage1_outputs(self, x01: torch.Tensor, size: Optional[int] = None, precision: str = "fp32",
                       detail: int = 0, flip: bool = False) -> Stage1Output:
        """Stage 1 on a (1, 3, H, W) [0, 1] image as the pipeline runs it: the full
        :class:`Stage1Output` (J, coarse, T, A, I; float32, [0, 1], at H x W). The one stage-1
        entry point.

        size: None or 0 runs the net on the image as given; otherwise on a copy with that shorter
        side (:func:`~dehazeddpm.inference.working_size.stage1_at_size`), e.g.
        ``self.defaults.stage1_size``, the weights' working size.
        precision: a resolved precision ("fp32", "bf16", "fp16").
        detail: 0, or J's detail finer than this many pixels comes from the input, at the smaller of
        the image's size and the size the net ran at
        (:func:`~dehazeddpm.inference.working_size.stage1_at_size`).
        flip: also run the net on the mirrored image and average the two
        (:func:`~dehazeddpm.inference.working_size.mirror_averaged`).
        :meth:`stage1_as_called` takes these from a call's options instead.
        """
        x = x01.to(self.device)

        def net(img: torch.Tensor) -> Stage1Output:
            out = self.stage1(img.contiguous(memory_format=torch.channels_last))
            out = Stage1Output(*(t.float().contiguous() for t in out))  # callers get the usual layout
            if detail:  # the input's detail would hide a broken stage 1 (a constant J): judge its own J
                check_output("stage 1's J", out.J, img)
            return out

        with torch.inference_mode(), autocast(precision, self.device):
            return stage1_at_size(mirror_averaged(net) if flip else net, x.float(), size or 0, detail=detail)

    def stage1_as_called(self, x01: torch.Tensor, **options: Any) -> Stage1Output:
        """Stage 1 on a (1, 3, H, W) [0, 1] image as a call with these options runs it (the weights'
        defaults for the rest: working size, detail, mirror, precision): the :class:`Stage1Output`
        at H x W, float32, [0, 1]. What a notebook shows as "stage 1" for the chosen weights."""
        opts = self.resolve_options(**options)
        return self.stage1_outputs(x01, opts.stage1_size, stage1_precision(opts.precision), opts.stage1_detail,
                                   opts.stage1_flip)

    def _padded_stage1(self, x: torch.Tensor, opts: SamplingOptions) -> Stage1Output:
        """Stage 1's outputs as ``opts`` ask, padded to the networks' multiple (the denoiser's input size)."""
        size, precision = opts.stage1_size, stage1_precision(opts.precision)
        detail, flip = opts.stage1_detail, opts.stage1_flip
        padded, (h, w) = pad_to_multiple(x.to(self.device), self.size_multiple)
        if size and working_shape(h, w, size) != (h, w):
            out = self.stage1_outputs(x, size, precision, detail, flip)
            # J, T, I come back at h x w; the denoiser needs them padded like the input
            return out._replace(**{k: pad_to_multiple(getattr(out, k), self.size_multiple)[0]
                                   for k in ("J", "coarse", "T", "I")})
        # At full resolution stage 1 sees the padded image, so J and T are its own in the margin.
        return self.stage1_outputs(padded, None, precision, detail, flip)

    def condition(self, J: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
        """The denoiser's condition in [-1, 1]: ``cat([J, T])`` (4 channels), or J for a J-only model."""
        return denoiser_condition(J, T, int(self.denoiser.config.in_channel - self.denoiser.config.out_channel))

    def _denoiser(self, opts: SamplingOptions, tile: Optional[int], precision: str, condition: torch.Tensor
                  ) -> Tuple[nn.Module, Optional[TiledDenoiser]]:
        """The denoiser a call samples with, ``(x_t, gamma) -> eps`` with ``condition`` bound
        (tiled, in its precision and layout), and its tiling if any."""
        layout = denoiser_layout(precision, self.device)
        if layout != self._layout:  # calls rarely switch: convert the weights when they do
            self.denoiser.to(memory_format=layout)
            self._layout = layout
        # precision and layout inside the tiles: converting the whole (K, 7, H, W) input to
        # channels_last at every step held a second full-size copy of it
        model: nn.Module = PrecisionDenoiser(self._compiled or self.denoiser, precision, self.device)
        tiled = None
        if tile is not None:
            batch = tiles_per_call(tile, opts.samples, self.device, auto_tile=opts.tile_size is None)
            # the tiler crops the condition with each tile: no full-size cat at every step
            tiled = TiledDenoiser(model, tile, opts.tile_overlap, tile_batch=batch, condition=condition)
            return tiled, tiled
        return ConditionedDenoiser(model, condition), None

    def _tile(self, opts: SamplingOptions, ph: int, pw: int) -> Optional[int]:
        tile = opts.tile_size if opts.tile_size is not None else choose_tile(
            ph, pw, self.device, int(self.denoiser.config.inner_channel), opts.samples)
        return None if tile is not None and tile >= ph and tile >= pw else tile

    def _sample(self, opts: SamplingOptions, stage1: Stage1Output, seed: Optional[int], hw: Tuple[int, int],
                trajectory_every: Optional[int], callback: Optional[Callback], progress: bool
                ) -> Tuple[torch.Tensor, StepRecorder, Optional[int], Optional[float]]:
        """Steps 4-6 of a call: the condition, the denoiser's wrappers (tiles, precision), and the
        sampling run with its recorder. Returns (x0 in [-1, 1] padded, (K, 3, H, W) for K samples,
        the recorder, the tile, the noise level the run began at (None: pure noise))."""
        k = opts.samples
        # the K samples share one condition and start image and differ in their noise only
        condition = self.condition(stage1.J, stage1.T).expand(k, -1, -1, -1)
        run = sampling_schedule(self.schedule, opts.steps, opts.start_strength)
        tile = self._tile(opts, *stage1.J.shape[-2:])
        model, tiled = self._denoiser(opts, tile, opts.precision, condition)
        units = len(tiled.tiles(*stage1.J.shape[-2:])) if tiled is not None else 1
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        desc = f"{opts.sampler} {hw[1]}x{hw[0]}"
        with StepRecorder(len(run), units, hw, trajectory_every, callback, progress, desc) as recorder, \
                set_attention_window(self.denoiser, opts.attention_window):
            if tiled is not None:
                tiled.on_tiles = recorder.on_tiles
            out = sample(model, None, self.schedule, opts.sampler, opts.steps, generator=generator,
                         callback=recorder, zero_mean_noise=opts.zero_mean_noise,
                         start_strength=opts.start_strength, start_image=to_signed(stage1.J).expand(k, -1, -1, -1),
                         **opts.sampler_keywords())
        started_at = (int(max(run.timesteps)) + 1) / len(self.schedule) if opts.start_strength < 1 else None
        return out, recorder, tile, started_at

    @torch.inference_mode()
    def __call__(self, image: ImageSource, *, seed: Optional[int] = None, progress: bool = True,
                 trajectory_every: Optional[int] = None, callback: Optional[Callback] = None,
                 options: Union[SamplingOptions, Mapping[str, Any], None] = None, keep_samples: bool = False,
                 **chosen: Any) -> DehazeResult:
        """Dehaze one image (path, PIL, numpy or tensor; any mode, any size >= 1x1).

        chosen: sampling options by name, the fields of :class:`~dehazeddpm.options.SamplingOptions`
            (``sampler``, ``steps``, ``eta``, ``start_strength``, ``tile_size`` ...; its field
            declarations say what each means); None leaves one to ``options``, then to the
            weights' defaults. ``steps=0`` returns stage 1's J; ``sampler="ddpm", steps=None`` is
            the reference test path (2000 ancestral steps).
        seed: draws from a ``torch.Generator`` on the pipeline device (deterministic per device);
            None uses the global RNG.
        progress: a bar over this image's UNet evaluations (steps x tiles).
        trajectory_every: keep (step, t, x_t, x0) every that many steps (plus the last), on CPU,
            downscaled to <= TRAJECTORY_MAX_SIDE, at most TRAJECTORY_MAX_FRAMES frames.
        callback: extra ``callback(step, t, x_t, x0)`` on padded diffusion-space tensors
            ((K, 3, H, W) with ``samples=K``; at the working size when ``denoise_size`` sets one,
            as are the trajectory's frames).
        keep_samples: with ``samples=K`` > 1, also return each sample (``res.samples``).
        """
        seed = check_seed(seed)
        # 1. resolve the options (the call's, over the weights' defaults) and the precision
        opts = self.resolve_options(options, **chosen)
        threads = choose_threads(self.device)
        with cpu_threads(threads):
            res = self._run(image, opts, seed, progress, trajectory_every, callback, keep_samples)
        res.threads = threads
        return res

    def _run(self, image: ImageSource, opts: SamplingOptions, seed: Optional[int], progress: bool,
             trajectory_every: Optional[int], callback: Optional[Callback], keep_samples: bool) -> DehazeResult:
        """Steps 2-9 of a call with its options resolved (see :meth:`__call__`)."""
        timings: Dict[str, float] = {}
        t_start = time.perf_counter()
        # 2. load
        x = load_image(image).float()
        h, w = x.shape[-2:]
        timings["load"] = time.perf_counter() - t_start
        # 3. stage 1, padded to the networks' multiple
        t0 = time.perf_counter()
        stage1 = self._padded_stage1(x, opts)
        for name in ("J", "T", "A"):
            check_output(f"stage 1's {name}", getattr(stage1, name))
        check_output("stage 1's J", stage1.J[..., :h, :w], x)
        sync(self.device)
        timings["stage1"] = time.perf_counter() - t0
        if opts.steps == 0:
            return self._pack(x, stage1, stage1.J, opts, timings, t_start, [] if trajectory_every else None, 0, None)
        # 4-6. condition, denoiser wrappers, sample (at the denoiser's working size, if it has one)
        t0 = time.perf_counter()
        J = stage1.J[..., :h, :w]
        J_working = to_working_size(J, opts.denoise_size) if opts.denoise_size else J
        if J_working is J:
            at = stage1
        else:
            T_working = to_working_size(stage1.T[..., :h, :w], opts.denoise_size)
            at = stage1._replace(**{k: pad_to_multiple(v, self.size_multiple)[0]
                                    for k, v in (("J", J_working), ("T", T_working))})
        hw_working = tuple(J_working.shape[-2:])
        out, recorder, tile, started_at = self._sample(opts, at, seed, hw_working, trajectory_every, callback,
                                                       progress)
        # 7. check each sample: finite, and not constant where the input is not
        check_output("the denoiser", out)
        J_cpu = J.float().cpu()
        drawn = to_unit(out[..., :hw_working[0], :hw_working[1]]).clamp(0, 1).float().cpu()
        drawn = from_working_size(drawn, J_cpu, J_working.float().cpu())
        for one in drawn.split(1):
            check_output("the denoiser", one, J_cpu, saturation=True)
        sync(self.device)
        timings["denoise"] = time.perf_counter() - t0
        # 8-9. average the samples, fuse and pack
        res = self._pack(x, stage1, drawn.mean(0, keepdim=True), dataclasses.replace(opts, tile_size=tile), timings,
                         t_start, recorder.frames, recorder.steps, tile)
        res.started_at = started_at
        if len(drawn) > 1:
            res.spread = sample_spread(drawn)
            res.samples = drawn if keep_samples else None
        return res

    def _pack(self, x: torch.Tensor, stage1: Stage1Output, result: torch.Tensor, opts: SamplingOptions,
              timings: Dict[str, float], t_start: float, frames: Optional[List[TrajectoryFrame]],
              evaluations: int, tile: Optional[int]) -> DehazeResult:
        """Steps 8-9: crop stage 1's outputs to the input, fuse J back in if asked, and the result."""
        h, w = x.shape[-2:]
        J, T, I = (t[..., :h, :w].detach().float().cpu() for t in (stage1.J, stage1.T, stage1.I))
        result = result[..., :h, :w].detach().float().cpu()
        if evaluations and opts.fusion == "transmission":
            result = fuse_transmission(J, T, result)
        timings["total"] = time.perf_counter() - t_start
        return DehazeResult(image=to_pil(result), J=J, T=T, A=stage1.A.detach().float().cpu(), I=I, options=opts,
                            trajectory=frames, timings=timings, evaluations=evaluations, tile_size=tile)
