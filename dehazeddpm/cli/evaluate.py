"""``dehazeddpm eval``: PSNR/SSIM of dehazed images against ground truth, per image and mean,
through the package's one harness (:mod:`dehazeddpm.evaluation`)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..evaluation import DEFAULT_CALL, HAZY, PairingError, evaluate, format_report, pair_folders
from ..utils import atomic_write
from .common import CommandError, add_model_args, build_pipeline, sampling_options, say_error

__all__ = ["register"]


def run(args: argparse.Namespace) -> int:
    from ..inference.pipeline import BrokenModelError

    options = sampling_options(args)
    if bool(args.hazy) == bool(args.pred):
        raise CommandError("give exactly one of --hazy DIR (run the model) or --pred DIR (score existing outputs)")
    if args.out and Path(args.out).is_dir():
        raise CommandError(f"--out {args.out} is a folder; give a file name for the report")
    try:
        pairs, lonely = pair_folders(args.pred or args.hazy, args.gt)
    except (FileNotFoundError, PairingError) as exc:
        raise CommandError(str(exc)) from None
    for name in lonely:
        print(f"dehazeddpm eval: warning: no partner for '{name}'", file=sys.stderr)
    if not pairs:
        raise CommandError("no image pairs found")
    pipe = None if args.pred else build_pipeline(args, args.device, options)
    runs = {"scored": HAZY} if args.pred else {"dehazed": {**DEFAULT_CALL, **options.to_dict()}}
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(pairs), desc="eval", unit="img")
    try:
        rows = evaluate(pipe, pairs, runs, seeds=(args.seed,), max_pixels=args.max_pixels, progress=not args.quiet,
                        on_result=lambda *_: bar.update(1) if bar is not None else None,
                        on_error=lambda pair, why: say_error("eval", f"skipped '{pair.input.name}': {why}"))
    except BrokenModelError as exc:
        raise CommandError(str(exc), code=1) from None
    finally:
        if bar is not None:
            bar.close()
    text = format_report(rows, args.format)
    if args.out:
        try:
            atomic_write(Path(args.out), lambda tmp: tmp.write_text(text))
        except OSError as exc:
            raise CommandError(f"cannot write the report to {args.out}: {exc.strerror or exc}", code=1) from None
    else:
        sys.stdout.write(text)
    return 1 if any("error" in r for r in rows) else 0


def register(subparsers: Any) -> None:
    """Add ``eval`` to the ``dehazeddpm`` parser."""
    e = subparsers.add_parser(
        "eval", help="PSNR/SSIM of dehazed images against ground truth",
        description="Pair --hazy (or --pred) and --gt files by name, dehaze the hazy ones (or take "
                    "--pred as already dehazed) and report PSNR/SSIM per image and their mean.")
    e.add_argument("--hazy", metavar="DIR", help="hazy inputs to dehaze")
    e.add_argument("--pred", metavar="DIR", help="already dehazed outputs (no model is run)")
    e.add_argument("--gt", required=True, metavar="DIR", help="ground-truth folder")
    add_model_args(e)
    e.add_argument("--format", choices=("csv", "json"), default="csv", help="report format (default csv)")
    e.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run, parser=e)
