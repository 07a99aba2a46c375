"""What the commands share: the model and sampling flags, and turning them into a pipeline and
one :class:`~dehazeddpm.options.SamplingOptions` (validated there, once)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from ..io.images import DEFAULT_MAX_PIXELS
from ..options import SamplingOptions, check_seed, option_specs

__all__ = ["CommandError", "add_model_args", "add_sampling_args", "build_pipeline", "integer", "number", "say_error", "sampling_options", "weights_files"]


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
    add_sampling_args(s)
    s.add_argument("--seed", type=integer, default=0, help="random seed (default 0)")
    s.add_argument("--max-pixels", type=integer, default=None, metavar="N",
                   help=f"refuse input images larger than N pixels (default {DEFAULT_MAX_PIXELS:,}; 0: Pillow's limit)")


_TYPES = {"int": integer, "number": number}


def add_sampling_args(group: Any) -> None:
    """One flag per :class:`SamplingOptions` field, generated from its declaration (flag, old
    spellings, help, type, choices); the parsed value lands under the field's name."""
    for name, spec in option_specs().items():
        flags = [spec.flag or "--" + name.replace("_", "-"), *spec.aliases]
        if spec.kind == "bool":
            group.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=spec.help)
        elif spec.kind == "choice":
            group.add_argument(*flags, dest=name, choices=spec.choices, default=None, help=spec.help)
        else:
            group.add_argument(*flags, dest=name, type=_TYPES[spec.kind], default=None, metavar=spec.metavar,
                               help=spec.help)


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The flags as one SamplingOptions; a bad value is a usage error (exit 2) before any model loads.
    Also checks the per-run flags that are not sampling options (--seed, --max-pixels)."""
    try:
        check_seed(args.seed)
        if args.max_pixels is not None and args.max_pixels < 0:
            raise ValueError(f"--max-pixels must be >= 0 (0: Pillow's limit only), got {args.max_pixels}")
        return SamplingOptions(**{name: getattr(args, name) for name in option_specs()})
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


def _check_weight_args(args: argparse.Namespace) -> None:
    if bool(args.stage1) != bool(args.denoiser) and not args.weights:
        raise CommandError("give both --stage1 and --denoiser, or --weights NAME")
    if args.unet_config and (args.weights or not args.denoiser):
        raise CommandError("--unet-config describes a --denoiser file of your own; the registry's weights "
                           f"({args.weights or 'demo'}) carry their own UNet settings")


def weights_files(args: argparse.Namespace) -> Tuple[Path, Path]:
    """The stage-1 and denoiser files the flags name (a registry entry's are resolved, downloaded if
    needed); a CommandError when one cannot be had."""
    from ..hub import resolve

    _check_weight_args(args)
    if args.stage1 and args.denoiser and not args.weights:
        files = (Path(args.stage1), Path(args.denoiser))
        for f in files:
            if not f.is_file():
                raise CommandError(f"checkpoint not found: {f}")
        return files
    try:
        res = resolve(args.weights or "demo", stage1=args.stage1, denoiser=args.denoiser,
                      progress=not getattr(args, "quiet", False))
    except (OSError, ValueError, RuntimeError) as exc:  # WeightsError and the like
        raise CommandError(str(exc)) from exc
    return Path(res.stage1), Path(res.denoiser)


def build_pipeline(args: argparse.Namespace, device: Optional[str], options: SamplingOptions):
    """The pipeline named by --weights, or by --stage1 and --denoiser, checked to run ``options``
    on its device; a CommandError for anything that cannot be loaded (missing, corrupt or
    mismatched weights, no network) or run (fp16 on a CPU)."""
    import torch

    from ..inference.pipeline import DehazePipeline

    _check_weight_args(args)
    if device is not None:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise CommandError(f"unknown device {device!r} (cpu, cuda, cuda:1, mps)") from None
        if dev.type not in ("cpu", "cuda", "mps"):
            raise CommandError(f"--device {device}: this package runs on cpu, cuda or mps") from None
        available = {"cpu": True, "cuda": torch.cuda.is_available(),
                     "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
        if not available[dev.type]:
            raise CommandError(f"--device {device}: {dev.type.upper()} is not available here (torch "
                               f"{torch.__version__}); leave --device out to use the CPU") from None
    try:
        if args.stage1 and args.denoiser and not args.weights:
            pipe = DehazePipeline.from_files(args.stage1, args.denoiser, device,
                                             unet_config=_unet_overrides(args.unet_config))
        else:
            pipe = DehazePipeline.from_pretrained(args.weights or "demo", device, stage1=args.stage1,
                                                  denoiser=args.denoiser)
        pipe.resolve_options(options)  # fp16 on a CPU fails here, before any image
    except (OSError, ValueError, RuntimeError) as exc:  # WeightsError, CheckpointError, bad config
        raise CommandError(str(exc)) from exc
    return pipe
