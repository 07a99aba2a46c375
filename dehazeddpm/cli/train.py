"""``dehazeddpm train stage1|denoiser --config FILE``: train either stage (torchrun for several GPUs)."""
from __future__ import annotations

import argparse
from typing import Any

from ..training.config import STAGES, TrainConfig
from ..utils import torchrun_env
from .common import CommandError, integer

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import RankStopped
    from ..training.trainer import train

    try:
        rank = torchrun_env()[0]
        cfg = TrainConfig.from_json(args.config, stage=args.stage, steps=args.steps, out_dir=args.out)
    except (ValueError, OSError) as exc:
        raise CommandError(str(exc)) from None
    try:
        res = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except RankStopped as exc:
        raise CommandError(str(exc), code=1) from None
    except (ValueError, OSError, KeyError) as exc:  # bad data, checkpoints, folders or resume files
        raise CommandError(str(exc)) from None
    if rank == 0:
        print(f"checkpoint: {res.checkpoint}\nsidecar: {res.sidecar}")
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
    p.set_defaults(func=run, parser=p)
