"""``dehazeddpm eval``: PSNR/SSIM of dehazed images against ground truth, per image and mean."""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

from ..io.images import ImageReadError, is_image_file, load_image
from ..utils import atomic_write
from .common import CommandError, add_model_args, build_pipeline, sampling_options, say_error

__all__ = ["format_report", "pair_folders", "register"]


def pair_folders(a_dir: Path, gt_dir: Path) -> Tuple[List[Tuple[str, Path, Path]], List[str]]:
    """Pair image files of two folders by ``data.pair_key`` of their stems.

    Returns ``([(key, a_path, gt_path), ...] sorted by key, [names without a partner])``.
    """
    from ..data.datasets import pair_key

    def index(d: Path) -> Dict[str, Path]:
        files: Dict[str, List[Path]] = {}
        for p in sorted(d.iterdir()):
            if p.is_file() and is_image_file(p) and not p.name.startswith("."):
                files.setdefault(pair_key(p.stem), []).append(p)
        clashes = [" and ".join(p.name for p in ps) for ps in files.values() if len(ps) > 1]
        if clashes:
            raise CommandError(f"{d} holds several images of one name, which cannot all be paired: "
                               + "; ".join(clashes))
        return {k: ps[0] for k, ps in files.items()}

    a, g = index(a_dir), index(gt_dir)
    pairs = [(k, a[k], g[k]) for k in sorted(set(a) & set(g))]
    lonely = [str(a[k]) for k in sorted(set(a) - set(g))] + [str(g[k]) for k in sorted(set(g) - set(a))]
    return pairs, lonely


def format_report(rows: List[Dict[str, Any]], fmt: str) -> str:
    """The rows and their mean as ``csv`` or ``json``."""
    good = [r for r in rows if r.get("psnr") is not None]
    mean = {"name": "mean",
            "psnr": sum(r["psnr"] for r in good) / len(good) if good else None,
            "ssim": sum(r["ssim"] for r in good) / len(good) if good else None}
    if fmt == "json":
        def finite(v: Any) -> Any:  # strict JSON: an infinite PSNR (identical images) is null
            return None if isinstance(v, float) and not math.isfinite(v) else v

        clean = [{k: finite(v) for k, v in r.items()} for r in rows + [mean]]
        return json.dumps({"images": clean[:-1], "mean": clean[-1], "count": len(good)}, indent=2,
                          allow_nan=False) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim"])
    for r in rows + [mean]:
        writer.writerow([r["name"], "" if r["psnr"] is None else f"{r['psnr']:.4f}",
                         "" if r["ssim"] is None else f"{r['ssim']:.6f}"])
    return buf.getvalue()


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..inference.pipeline import BrokenModelError
    from ..metrics import psnr, ssim

    options = sampling_options(args)
    if bool(args.hazy) == bool(args.pred):
        raise CommandError("give exactly one of --hazy DIR (run the model) or --pred DIR (score existing outputs)")
    if args.out and Path(args.out).is_dir():
        raise CommandError(f"--out {args.out} is a folder; give a file name for the report")
    src = Path(args.pred or args.hazy)
    gt_dir = Path(args.gt)
    for d in (src, gt_dir):
        if not d.is_dir():
            raise CommandError(f"not a folder: {d}")
    pairs, lonely = pair_folders(src, gt_dir)
    for name in lonely:
        print(f"dehazeddpm eval: warning: no partner for '{name}'", file=sys.stderr)
    if not pairs:
        raise CommandError("no image pairs found")
    pipe = None if args.pred else build_pipeline(args, args.device, options)
    rows: List[Dict[str, Any]] = []
    failed = 0
    for key, a_path, gt_path in tqdm(pairs, desc="eval", unit="img", disable=args.quiet):
        try:
            gt = load_image(gt_path, max_pixels=args.max_pixels)
            if pipe is not None:
                pred = load_image(pipe(load_image(a_path, max_pixels=args.max_pixels), options=options, seed=args.seed, progress=not args.quiet).image)
            else:
                pred = load_image(a_path, max_pixels=args.max_pixels)
            if pred.shape != gt.shape:
                raise ValueError(f"size {tuple(pred.shape[-2:])} differs from ground truth {tuple(gt.shape[-2:])}")
            rows.append({"name": key, "psnr": psnr(pred, gt), "ssim": ssim(pred, gt)})
        except BrokenModelError as exc:
            raise CommandError(f"'{a_path}': {exc}", code=1) from None
        except (ImageReadError, ValueError, OSError, MemoryError) as exc:
            reason = "not enough memory for an image of this size" if isinstance(exc, MemoryError) else str(exc)
            say_error("eval", f"skipped '{a_path.name}': {reason}")
            rows.append({"name": key, "psnr": None, "ssim": None, "error": reason})
            failed += 1
    text = format_report(rows, args.format)
    if args.out:
        try:
            atomic_write(Path(args.out), lambda tmp: tmp.write_text(text))
        except OSError as exc:
            raise CommandError(f"cannot write the report to {args.out}: {exc.strerror or exc}", code=1) from None
    else:
        sys.stdout.write(text)
    return 1 if failed else 0


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
