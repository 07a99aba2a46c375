"""What the commands share: the model and sampling flags, and turning them into a pipeline and
one :class:`~dehazeddpm.options.SamplingOptions` (validated there, once)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional

from ..diffusion.samplers import SAMPLERS
from ..io.images import DEFAULT_MAX_PIXELS
from ..options import FUSIONS, PRECISIONS, SamplingOptions, check_seed

__all__ = ["CommandError", "add_model_args", "build_pipeline", "integer", "number", "say_error", "sampling_options"]


class CommandError(Exception):
    """A user error a command reports as one ``error:`` line, with the exit code it carries."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


def say_error(command: str, message: str) -> None:
    """``dehazeddpm COMMAND: error: MESSAGE`` on stderr, on one line."""
    print(f"dehazeddpm {command}: error: {' '.join(str(message).split())}", file=sys.stderr)


def integer(text: str) -> int:
    """argparse type: an integer (its range is checked by SamplingOptions)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    """argparse type: a number (its range is checked by SamplingOptions)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The flags that pick the weights and the sampling options of dehaze and eval."""
    m = p.add_argument_group("weights")
    m.add_argument("--weights", metavar="NAME", help="registry entry: demo (default), nh-haze, dense-haze")
    m.add_argument("--stage1", metavar="PATH", help="stage-1 checkpoint (with --denoiser, instead of --weights)")
    m.add_argument("--denoiser", metavar="PATH", help="denoiser *_gen.pth checkpoint")
    m.add_argument("--unet-config", metavar="JSON",
                   help='with --denoiser: UNet settings not readable from the weights, as JSON or a JSON '
                        'file, e.g. \'{"norm_groups": 8}\' (default: the released norm_groups 32)')
    m.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    s = p.add_argument_group("sampling (default: the weights' own, see `dehazeddpm info`)")
    s.add_argument("--sampler", choices=tuple(SAMPLERS), default=None, help="sampler (default: ddim)")
    s.add_argument("--steps", type=integer, default=None,
                   help="denoising steps (default: 20, the full schedule for ddpm; 0 = stage 1 only)")
    s.add_argument("--eta", type=number, default=None, help="DDIM eta, 0 (deterministic) to 1")
    s.add_argument("--start-strength", type=number, default=None, metavar="S",
                   help="in (0, 1]: start from J noised to this fraction of the chain (1 = pure noise)")
    s.add_argument("--stage1-size", type=integer, default=None, metavar="N",
                   help="shorter side stage 1 runs at, J and T brought back to the image's size (0 = full "
                        "resolution)")
    s.add_argument("--tile", type=integer, default=None, metavar="N", help="denoiser tile size (default: automatic)")
    s.add_argument("--tile-overlap", type=integer, default=None, metavar="N",
                   help="pixels neighbouring tiles share (default: a quarter of the tile)")
    s.add_argument("--attention-window", type=integer, default=None, metavar="N",
                   help="attend within windows of N feature positions (0 = the whole map)")
    s.add_argument("--fusion", choices=FUSIONS, default=None, help="blend J back in where the haze is thin")
    s.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="arithmetic of the networks (default: auto, fp16 on CUDA, fp32 on a CPU)")
    s.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    s.add_argument("--max-pixels", type=integer, default=None, metavar="N",
                   help=f"refuse input images larger than N pixels (default {DEFAULT_MAX_PIXELS:,}; 0: Pillow's limit)")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The flags as one SamplingOptions; a bad value is a usage error (exit 2) before any model loads.
    Also checks the per-run flags that are not sampling options (--seed, --max-pixels)."""
    try:
        check_seed(args.seed)
        if args.max_pixels is not None and args.max_pixels < 0:
            raise ValueError(f"--max-pixels must be >= 0 (0: Pillow's limit only), got {args.max_pixels}")
        return SamplingOptions(sampler=args.sampler, steps=args.steps, eta=args.eta,
                               start_strength=args.start_strength, stage1_size=args.stage1_size,
                               tile_size=args.tile, tile_overlap=args.tile_overlap,
                               attention_window=args.attention_window, fusion=args.fusion, precision=args.precision)
    except ValueError as exc:
        args.parser.error(str(exc))
        raise  # unreachable: error() exits


def _unet_overrides(text: Optional[str]) -> Dict[str, Any]:
    """``--unet-config``: inline JSON or a JSON file of UNet settings not visible in tensor shapes."""
    if not text:
        return {}
    path = Path(text)
    try:
        data = json.loads(path.read_text() if path.is_file() else text)
    except (OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"--unet-config is neither a JSON object nor a readable JSON file: {exc}") from None
    if not isinstance(data, dict):
        raise CommandError("--unet-config must be a JSON object")
    return data


def build_pipeline(args: argparse.Namespace, device: Optional[str], options: SamplingOptions):
    """The pipeline named by --weights, or by --stage1 and --denoiser, checked to run ``options``
    on its device; a CommandError for anything that cannot be loaded (missing, corrupt or
    mismatched weights, no network) or run (fp16 on a CPU)."""
    import torch

    from ..inference.device import resolve_precision
    from ..inference.pipeline import DehazePipeline

    if bool(args.stage1) != bool(args.denoiser) and not args.weights:
        raise CommandError("give both --stage1 and --denoiser, or --weights NAME")
    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise CommandError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise CommandError(f"--device {device}: CUDA is not available here (torch {torch.__version__}); "
                               "leave --device out to use the CPU") from None
    try:
        if args.stage1 and args.denoiser and not args.weights:
            pipe = DehazePipeline.from_files(args.stage1, args.denoiser, device,
                                             unet_config=_unet_overrides(args.unet_config))
        else:
            pipe = DehazePipeline.from_pretrained(args.weights or "demo", device, stage1=args.stage1,
                                                  denoiser=args.denoiser)
        resolve_precision(pipe.resolve_options(options).precision, pipe.device)
    except (OSError, ValueError, RuntimeError) as exc:  # WeightsError, CheckpointError, bad config
        raise CommandError(str(exc)) from exc
    return pipe
