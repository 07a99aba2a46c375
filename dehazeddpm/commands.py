"""``dehazeddpm dehaze`` and ``dehazeddpm eval``: batch dehazing and PSNR/SSIM evaluation.

``dehaze`` writes one ``<stem>.png`` per input (atomically; outputs that exist are skipped so an
interrupted run resumes), reports unreadable inputs by name and exits non-zero at the end if any
failed. Under ``torchrun`` the sorted inputs are split across ranks (rank r takes r::world).
"""
from __future__ import annotations

import argparse
import csv
import glob
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

from .imageio import ImageReadError, is_image_file, load_image, save_image_atomic, to_pil

_T = TypeVar("_T")


# -- input discovery and distribution ----------------------------------------------------------------

def collect_inputs(specs: Sequence[str]) -> Tuple[List[Path], List[str]]:
    """Expand files, folders (their image files, non-recursive) and globs into a sorted list.

    Returns ``(paths, problems)``: ``problems`` names specs that matched nothing. A file named
    explicitly is kept even without an image extension (it is reported if it fails to decode);
    files found through folders or globs must have an image extension.
    """
    found: set = set()
    problems: List[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            found.update(q for q in p.iterdir() if q.is_file() and is_image_file(q) and not q.name.startswith("."))
        elif p.is_file():
            found.add(p)
        else:
            matches = [Path(m) for m in glob.glob(spec)]
            hits = [m for m in matches if m.is_file() and is_image_file(m)]
            for m in matches:
                if m.is_dir():
                    hits.extend(q for q in m.iterdir() if q.is_file() and is_image_file(q))
            if not hits:
                problems.append(spec)
            found.update(hits)
    return sorted(found), problems


def shard(items: Sequence[_T], rank: int, world_size: int) -> List[_T]:
    """The items rank ``rank`` of ``world_size`` processes handles: ``sorted(items)[rank::world]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return sorted(items)[rank::world_size]


def dist_env(env: Optional[Dict[str, str]] = None) -> Tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment variables (1 process if unset)."""
    env = os.environ if env is None else env
    world = int(env.get("WORLD_SIZE", "1") or 1)
    rank = int(env.get("RANK", "0") or 0)
    local = int(env.get("LOCAL_RANK", str(rank)) or 0)
    return rank, world, local


def _device_for(arg: Optional[str], world: int, local_rank: int) -> Optional[str]:
    if arg:
        return arg
    import torch
    if world > 1 and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return None


class _ModelError(Exception):
    """Weights or checkpoints that cannot be loaded: reported in one line, exit code 2."""


def _build_pipeline(args: argparse.Namespace, device: Optional[str]):
    """The pipeline named by --weights / --stage1 --denoiser; raises _ModelError with a readable message."""
    try:
        return _load_pipeline(args, device)
    except (OSError, ValueError, RuntimeError) as exc:  # WeightsError, CheckpointError, bad JSON
        raise _ModelError(str(exc)) from exc


def _load_pipeline(args: argparse.Namespace, device: Optional[str]):
    from .pipeline import DehazePipeline
    if args.stage1 and args.denoiser and not args.weights:
        return DehazePipeline.from_files(args.stage1, args.denoiser, device,
                                         unet_config=_unet_overrides(args.unet_config))
    if bool(args.stage1) != bool(args.denoiser) and not args.weights:
        raise SystemExit("give both --stage1 and --denoiser, or --weights NAME")
    return DehazePipeline.from_pretrained(args.weights or "demo", device, stage1=args.stage1,
                                          denoiser=args.denoiser)


def _unet_overrides(text: Optional[str]) -> Dict[str, Any]:
    """``--unet-config``: inline JSON or a JSON file of UNet settings not visible in tensor shapes."""
    if not text:
        return {}
    path = Path(text)
    data = json.loads(path.read_text() if path.is_file() else text)
    if not isinstance(data, dict):
        raise SystemExit("--unet-config must be a JSON object")
    return data


def _int_at_least(low: int):
    """argparse type: an integer >= low (a bad value is a usage error, before any model loads)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _unit_float(text: str) -> float:
    """argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", metavar="NAME", help="registry entry: demo (default), nh-haze, dense-haze")
    p.add_argument("--stage1", metavar="PATH", help="stage-1 checkpoint (with --denoiser, instead of --weights)")
    p.add_argument("--denoiser", metavar="PATH", help="denoiser *_gen.pth checkpoint")
    p.add_argument("--unet-config", metavar="JSON",
                   help='with --denoiser: UNet settings not readable from the weights, as JSON or a JSON '
                        'file, e.g. \'{"norm_groups": 8}\' (default: the released norm_groups 32)')
    p.add_argument("--steps", type=_int_at_least(0), default=None,
                   help="denoising steps (default: 20 for ddim, the full schedule for ddpm; 0 = stage 1 only)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"), default="ddim", help="sampler (default ddim)")
    p.add_argument("--eta", type=_unit_float, default=None,
                   help="DDIM eta, 0 (deterministic) to 1 (default: the weights' own, else 0)")
    p.add_argument("--stage1-size", type=_int_at_least(0), default=None, metavar="N",
                   help="shorter side stage 1 runs at, J and T brought back to the image's size (default: "
                        "the weights' own, demo 128; 0 = full resolution)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--tile", type=_int_at_least(1), default=None, metavar="N",
                   help="denoiser tile size (default: automatic)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")


def _run_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    return dict(sampler=args.sampler, steps=args.steps, eta=args.eta, seed=args.seed,
                tile_size=args.tile, stage1_size=args.stage1_size, progress=False)


# -- dehaze ----------------------------------------------------------------------------------------

def _outputs_for(out_dir: Path, stem: str, intermediates: bool) -> Dict[str, Path]:
    outs = {"image": out_dir / f"{stem}.png"}
    if intermediates:
        outs.update(J=out_dir / f"{stem}_J.png", T=out_dir / f"{stem}_T.png", A=out_dir / f"{stem}_A.png")
    return outs


def _cmd_dehaze(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    rank, world, local_rank = dist_env()
    inputs, missing = collect_inputs(args.inputs)
    failed = 0
    for spec in missing:
        print(f"dehazeddpm dehaze: error: no image found for '{spec}'", file=sys.stderr)
        failed += 1
    # Two inputs with the same stem would write the same output: keep the first, report the rest.
    by_stem: Dict[str, Path] = {}
    unique: List[Path] = []
    for p in inputs:
        if p.stem in by_stem:
            print(f"dehazeddpm dehaze: error: '{p}' and '{by_stem[p.stem]}' would both write "
                  f"{p.stem}.png; skipped the former", file=sys.stderr)
            failed += 1
            continue
        by_stem[p.stem] = p
        unique.append(p)
    mine = shard(unique, rank, world)
    out_dir = Path(args.output)
    todo = [p for p in mine
            if not all(q.is_file() for q in _outputs_for(out_dir, p.stem, args.save_intermediates).values())]
    if not inputs and not missing:
        print("dehazeddpm dehaze: error: no inputs", file=sys.stderr)
        return 2
    skipped = len(mine) - len(todo)
    pipe = None
    if todo:
        try:
            pipe = _build_pipeline(args, _device_for(args.device, world, local_rank))
        except _ModelError as exc:
            print(f"dehazeddpm dehaze: error: {exc}", file=sys.stderr)
            return 2
    written = 0
    for path in tqdm(todo, desc=f"dehaze[{rank}/{world}]" if world > 1 else "dehaze",
                     unit="img", disable=args.quiet or rank != 0):
        try:
            image = load_image(path)
        except (ImageReadError, ValueError, OSError) as exc:
            print(f"dehazeddpm dehaze: error: skipped '{path}': {exc}", file=sys.stderr)
            failed += 1
            continue
        res = pipe(image, **_run_kwargs(args))
        outs = _outputs_for(out_dir, path.stem, args.save_intermediates)
        if args.save_intermediates:
            save_image_atomic(to_pil(res.J), outs["J"])
            save_image_atomic(to_pil(res.T), outs["T"])
            save_image_atomic(to_pil(res.A.expand(1, 3, *res.J.shape[-2:])), outs["A"])
        # The main output goes last: its presence marks the input as done for a resumed run.
        save_image_atomic(res.image, outs["image"])
        written += 1
    if not args.quiet:
        print(f"dehazeddpm dehaze: {written} written, {skipped} already done, {failed} failed"
              + (f" (rank {rank} of {world})" if world > 1 else ""), file=sys.stderr)
    return 1 if failed else 0


# -- eval ------------------------------------------------------------------------------------------

def pair_folders(a_dir: Path, gt_dir: Path) -> Tuple[List[Tuple[str, Path, Path]], List[str]]:
    """Pair image files of two folders by ``datasets.pair_key`` of their stems.

    Returns ``([(key, a_path, gt_path), ...] sorted by key, [names without a partner])``.
    """
    from .datasets import pair_key

    def index(d: Path) -> Dict[str, Path]:
        return {pair_key(p.stem): p for p in sorted(d.iterdir())
                if p.is_file() and is_image_file(p) and not p.name.startswith(".")}

    a, g = index(a_dir), index(gt_dir)
    pairs = [(k, a[k], g[k]) for k in sorted(set(a) & set(g))]
    lonely = [str(a[k]) for k in sorted(set(a) - set(g))] + [str(g[k]) for k in sorted(set(g) - set(a))]
    return pairs, lonely


def _format_report(rows: List[Dict[str, Any]], fmt: str) -> str:
    good = [r for r in rows if r.get("psnr") is not None]
    mean = {"name": "mean",
            "psnr": sum(r["psnr"] for r in good) / len(good) if good else None,
            "ssim": sum(r["ssim"] for r in good) / len(good) if good else None}
    if fmt == "json":
        return json.dumps({"images": rows, "mean": mean, "count": len(good)}, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim"])
    for r in rows + [mean]:
        writer.writerow([r["name"], "" if r["psnr"] is None else f"{r['psnr']:.4f}",
                         "" if r["ssim"] is None else f"{r['ssim']:.6f}"])
    return buf.getvalue()


def _cmd_eval(args: argparse.Namespace) -> int:
    from .metrics import psnr, ssim

    if bool(args.hazy) == bool(args.pred):
        print("dehazeddpm eval: error: give exactly one of --hazy DIR (run the model) or --pred DIR "
              "(score existing outputs)", file=sys.stderr)
        return 2
    src = Path(args.pred or args.hazy)
    gt_dir = Path(args.gt)
    for d in (src, gt_dir):
        if not d.is_dir():
            print(f"dehazeddpm eval: error: not a folder: {d}", file=sys.stderr)
            return 2
    pairs, lonely = pair_folders(src, gt_dir)
    for name in lonely:
        print(f"dehazeddpm eval: warning: no partner for '{name}'", file=sys.stderr)
    if not pairs:
        print("dehazeddpm eval: error: no image pairs found", file=sys.stderr)
        return 2
    try:
        pipe = None if args.pred else _build_pipeline(args, args.device)
    except _ModelError as exc:
        print(f"dehazeddpm eval: error: {exc}", file=sys.stderr)
        return 2
    rows: List[Dict[str, Any]] = []
    failed = 0
    from tqdm.auto import tqdm
    for key, a_path, gt_path in tqdm(pairs, desc="eval", unit="img", disable=args.quiet):
        try:
            gt = load_image(gt_path)
            if pipe is not None:
                pred = load_image(pipe(load_image(a_path), **_run_kwargs(args)).image)
            else:
                pred = load_image(a_path)
            if pred.shape != gt.shape:
                raise ValueError(f"size {tuple(pred.shape[-2:])} differs from ground truth {tuple(gt.shape[-2:])}")
            rows.append({"name": key, "psnr": psnr(pred, gt), "ssim": ssim(pred, gt)})
        except (ImageReadError, ValueError, OSError) as exc:
            print(f"dehazeddpm eval: error: skipped '{a_path.name}': {exc}", file=sys.stderr)
            rows.append({"name": key, "psnr": None, "ssim": None, "error": str(exc)})
            failed += 1
    text = _format_report(rows, args.format)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, out)
    else:
        sys.stdout.write(text)
    return 1 if failed else 0


# -- registration ------------------------------------------------------------------------------------

def register_cli(subparsers: Any) -> None:
    """Add the ``dehaze`` and ``eval`` sub-commands to the ``dehazeddpm`` parser."""
    d = subparsers.add_parser(
        "dehaze", help="dehaze images, folders or globs into an output folder",
        description="Dehaze every input (files, folders, globs) to OUT/<stem>.png. Existing outputs "
                    "are skipped (resume); unreadable inputs are reported and the exit code is 1. "
                    "Under torchrun the sorted inputs are split across ranks.")
    d.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders or glob patterns")
    d.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    _add_model_args(d)
    d.add_argument("--save-intermediates", action="store_true",
                   help="also write <stem>_J.png, <stem>_T.png and <stem>_A.png (stage-1 outputs)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    d.set_defaults(func=_cmd_dehaze)

    e = subparsers.add_parser(
        "eval", help="PSNR/SSIM of dehazed images against ground truth",
        description="Pair --hazy (or --pred) and --gt files by name, dehaze the hazy ones (or take "
                    "--pred as already dehazed) and report PSNR/SSIM per image and their mean.")
    e.add_argument("--hazy", metavar="DIR", help="hazy inputs to dehaze")
    e.add_argument("--pred", metavar="DIR", help="already dehazed outputs (no model is run)")
    e.add_argument("--gt", required=True, metavar="DIR", help="ground-truth folder")
    _add_model_args(e)
    e.add_argument("--format", choices=("csv", "json"), default="csv", help="report format (default csv)")
    e.add_argument("--out", metavar="FILE", help="write the report here (default: stdout)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_cmd_eval)
