"""``dehazeddpm eval``: score the model (stage 1's J and the final image, side by side) or existing
outputs against ground truth, on a public dataset's standard split or a folder of pairs, through
the package's one harness (:mod:`dehazeddpm.evaluation`). With ``--out`` the rows are journalled
as they come, so a rerun after a disconnect goes on where it stopped."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..data.public import DATASETS, SPLITS, describe_datasets
from ..evaluation import (
    HAZY,
    REPORT_FORMATS,
    STAGE1,
    DatasetError,
    JournalError,
    Pair,
    PairingError,
    evaluate,
    expected_rows,
    format_report,
    load_pairs,
    pair_folders,
)
from ..utils import atomic_write
from .common import CommandError, add_model_args, build_pipeline, sampling_options, say_error, weights_files

__all__ = ["journal_path", "register"]


def journal_path(out: Path) -> Path:
    """Where ``--out FILE``'s rows are journalled: ``FILE.rows.jsonl`` beside it."""
    return out.with_name(out.name + ".rows.jsonl")


def _pairs(args: argparse.Namespace) -> List[Pair]:
    sources = [bool(args.dataset), bool(args.hazy), bool(args.pred)]
    if sum(sources) != 1:
        raise CommandError("give one of --dataset NAME --root DIR, --hazy DIR --gt DIR (run the model) "
                           "or --pred DIR --gt DIR (score existing outputs)")
    if args.dataset:
        if not args.root or args.gt:
            raise CommandError("--dataset takes --root DIR (the folder it unpacks to), not --gt")
        try:
            return load_pairs(args.dataset, args.root, args.split)
        except (FileNotFoundError, DatasetError) as exc:
            raise CommandError(str(exc)) from None
    if not args.gt:
        raise CommandError("--hazy and --pred need --gt DIR")
    try:
        pairs, lonely = pair_folders(args.pred or args.hazy, args.gt)
    except (FileNotFoundError, PairingError) as exc:
        raise CommandError(str(exc)) from None
    for name in lonely:
        print(f"dehazeddpm eval: warning: no partner for '{name}'", file=sys.stderr)
    if not pairs:
        raise CommandError("no image pairs found")
    return pairs


def _lpips(args: argparse.Namespace, device: Any):
    if args.lpips == "off":
        return None
    from ..perceptual import LpipsUnavailable, load_lpips
    try:
        return load_lpips(device=device)
    except LpipsUnavailable as exc:
        if args.lpips == "on":
            raise CommandError(str(exc)) from None
        print(f"dehazeddpm eval: {exc} (--lpips off hides this line)", file=sys.stderr)
        return None


def _meta(args: argparse.Namespace, pipe: Any, options: Any, pairs: List[Pair]) -> Dict[str, Any]:
    """What the report and the journal say was evaluated: the data, the seeds, the weights' files
    and hashes, and the options that ran (resolved over the weights' defaults)."""
    from ..hub.cache import sha256_file

    meta: Dict[str, Any] = {"dataset": args.dataset or "folder",
                            "split": args.split if args.dataset else None,
                            "images": len(pairs), "seeds": [args.seed], "max_pixels": args.max_pixels}
    if not args.pred:
        stage1, denoiser = weights_files(args)
        meta.update(weights=args.weights or ("files" if args.stage1 else "demo"), stage1=str(stage1),
                    denoiser=str(denoiser), stage1_sha256=sha256_file(stage1), denoiser_sha256=sha256_file(denoiser),
                    unet_config=args.unet_config or None, options=pipe.resolve_options(options).to_dict())
    return meta


def _report_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    suffix = Path(args.out).suffix.lower().lstrip(".") if args.out else ""
    return {"json": "json", "md": "md", "markdown": "md"}.get(suffix, "csv")


def run(args: argparse.Namespace) -> int:
    from ..inference.pipeline import BrokenModelError

    options = sampling_options(args)
    out: Optional[Path] = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise CommandError(f"--out {out} is a folder; give a file name for the report")
    pairs = _pairs(args)
    pipe = None if args.pred else build_pipeline(args, args.device, options)
    # stage 1's J beside the final image, always: where stage 2 helps shows in every report
    runs = {"scored": HAZY} if args.pred else {"stage1": STAGE1, "dehazed": options.to_dict()}
    lpips = _lpips(args, pipe.device if pipe is not None else "cpu")
    meta = _meta(args, pipe, options, pairs)
    journal = journal_path(out) if out is not None else None
    if journal is not None and args.overwrite:
        journal.unlink(missing_ok=True)
    bar = None
    if not args.quiet:
        from tqdm.auto import tqdm
        bar = tqdm(total=expected_rows(pairs, runs, [args.seed]), desc="eval", unit="row")
    try:
        rows = evaluate(pipe, pairs, runs, seeds=(args.seed,), max_pixels=args.max_pixels, progress=not args.quiet,
                        on_result=lambda *_: bar.update(1) if bar is not None else None,
                        on_error=lambda pair, why: say_error("eval", f"skipped '{pair.input.name}': {why}"),
                        lpips=lpips, journal=journal, identity={k: v for k, v in meta.items() if k != "images"})
    except BrokenModelError as exc:
        raise CommandError(str(exc), code=1) from None
    except JournalError as exc:
        raise CommandError(f"{exc} (or pass --overwrite)") from None
    finally:
        if bar is not None:
            bar.close()
    text = format_report(rows, _report_format(args), meta)
    if out is not None:
        try:
            atomic_write(out, lambda tmp: tmp.write_text(text))
        except OSError as exc:
            raise CommandError(f"cannot write the report to {out}: {exc.strerror or exc}", code=1) from None
    else:
        sys.stdout.write(text)
    return 1 if any("error" in r for r in rows) else 0


def register(subparsers: Any) -> None:
    """Add ``eval`` to the ``dehazeddpm`` parser."""
    e = subparsers.add_parser(
        "eval", help="score dehazing against ground truth (public datasets or folders of pairs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Dehaze the hazy images of a public dataset's standard split (--dataset NAME --root DIR) "
                    "or of a folder (--hazy DIR --gt DIR, paired by name), or take --pred DIR as already "
                    "dehazed, and report PSNR, SSIM, CIEDE2000, LPIPS (when its weights are here) and the "
                    "no-reference haze density, per image and per run (stage 1's J and the final image), "
                    "at full resolution.\n\nDatasets (the names they are published with):\n"
                    + describe_datasets())
    e.add_argument("--dataset", choices=tuple(DATASETS), metavar="NAME",
                   help=f"a public dataset: {', '.join(DATASETS)} (its folder: --root)")
    e.add_argument("--root", metavar="DIR", help="the folder --dataset unpacks to")
    e.add_argument("--split", choices=SPLITS, default="test",
                   help="the dataset's standard test split (default) or all its images")
    e.add_argument("--hazy", metavar="DIR", help="hazy inputs to dehaze")
    e.add_argument("--pred", metavar="DIR", help="already dehazed outputs (no model is run)")
    e.add_argument("--gt", metavar="DIR", help="ground-truth folder (with --hazy or --pred)")
    add_model_args(e)
    e.add_argument("--lpips", choices=("auto", "on", "off"), default="auto",
                   help="score LPIPS: auto (when its weights are here; else one line says how to get them), "
                        "on (an error without them), off")
    e.add_argument("--format", choices=REPORT_FORMATS, default=None,
                   help="report format (default: from --out's suffix, .json or .md, else csv)")
    e.add_argument("--out", metavar="FILE",
                   help="write the report here (default: stdout); the rows are journalled in FILE.rows.jsonl, "
                        "so the same command after an interruption goes on where it stopped")
    e.add_argument("--overwrite", action="store_true",
                   help="start over instead of continuing the journal of --out")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=run, parser=e)
