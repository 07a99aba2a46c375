"""``dehazeddpm train stage1|denoiser --config FILE``: train either stage (torchrun for several GPUs)."""
from __future__ import annotations

import argparse
from typing import Any

from ..training.config import STAGES, TRAIN_PRECISIONS, TrainConfig
from ..utils import torchrun_env
from .common import CommandError, integer

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import RankStopped
    from ..training.trainer import train

    try:
        rank = torchrun_env()[0]
        cfg = TrainConfig.from_json(args.config, stage=args.stage, steps=args.steps, out_dir=args.out,
                                    precision=args.precision, accumulate=args.accumulate)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    if args.estimate:
        return _estimate(cfg, args)
    try:
        res = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except RankStopped as exc:
        raise CommandError(str(exc), code=1) from None
    except (ValueError, OSError, KeyError, ImportError) as exc:  # bad data, checkpoints, folders, resume files,
        raise CommandError(str(exc)) from None  # or the package of a built-in photo not installed
    if rank == 0:
        print(f"checkpoint: {res.checkpoint}\nsidecar: {res.sidecar}")
    return 0


def _estimate(cfg: TrainConfig, args: argparse.Namespace) -> int:
    from ..training.memory import GB, estimate_memory

    if args.memory is not None and args.memory <= 0:
        raise CommandError(f"--memory must be a positive number of GB, got {args.memory}")
    crop = args.measure_crop
    if crop is not None and (crop < 32 or crop % 32):
        raise CommandError(f"--measure-crop must be a multiple of 32 (>= 32), got {crop}")
    try:
        est = estimate_memory(cfg, measure_crop=crop)
    except (ValueError, RuntimeError) as exc:
        raise CommandError(str(exc), code=1) from None
    print(est.describe(cfg.batch_size, cfg.accumulate, (args.memory or 15) * GB))
    return 0


def register(subparsers: Any) -> None:
    """Add ``train`` to the ``dehazeddpm`` parser."""
    p = subparsers.add_parser("train", help="train stage 1 or the diffusion denoiser (torchrun for several GPUs)")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--config", required=True, help="JSON training config (TrainConfig fields; // comments allowed)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/resume_<stage>.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start over in an out_dir that holds a finished or resumable run (default: refuse)")
    p.add_argument("--steps", type=integer, default=None, help="override the total number of steps")
    p.add_argument("--out", default=None, help="override out_dir")
    p.add_argument("--precision", choices=TRAIN_PRECISIONS, default=None,
                   help="override precision (auto: fp16 with a gradient scaler on CUDA, bf16 on CPUs with native bf16)")
    p.add_argument("--accumulate", type=integer, default=None, help="override accumulate (batches per optimiser step)")
    e = p.add_argument_group("memory estimate (nothing is trained)")
    e.add_argument("--estimate", action="store_true",
                   help="print the parameters, optimiser state and measured activation memory of one step of the "
                        "config on this device, and the largest batch that fits --memory")
    e.add_argument("--memory", type=float, default=None, metavar="GB", help="the memory to fit (default 15, a T4)")
    e.add_argument("--measure-crop", type=integer, default=None, metavar="PX",
                   help="measure at this crop (a multiple of 32) and scale to the config's (default: the config's)")
    p.set_defaults(func=run, parser=p)
