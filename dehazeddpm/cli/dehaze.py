"""``dehazeddpm dehaze``: dehaze files, folders and globs into an output folder.

One ``<stem>.png`` per input, written atomically; outputs that exist are skipped, so an
interrupted run resumes. Unreadable inputs are reported by name and the exit code is 1 at the
end. Under ``torchrun`` the sorted inputs are split across ranks (rank r takes r::world).
"""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

from ..io.images import ImageReadError, is_image_file, load_image, save_image_atomic, to_pil
from ..utils import torchrun_env
from .common import CommandError, add_model_args, build_pipeline, sampling_options, say_error

__all__ = ["collect_inputs", "outputs_for", "register", "shard"]

_T = TypeVar("_T")


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


def outputs_for(out_dir: Path, stem: str, intermediates: bool) -> Dict[str, Path]:
    """The files one input produces: ``<stem>.png`` and, with intermediates, its J, T and A."""
    outs = {"image": out_dir / f"{stem}.png"}
    if intermediates:
        outs.update(J=out_dir / f"{stem}_J.png", T=out_dir / f"{stem}_T.png", A=out_dir / f"{stem}_A.png")
    return outs


def _device_for(arg: Optional[str], world: int, local_rank: int) -> Optional[str]:
    if arg:
        return arg
    import torch
    if world > 1 and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return None


def _unique_stems(inputs: List[Path]) -> Tuple[List[Path], int]:
    """Two inputs with the same stem would write the same output: keep the first, report the rest."""
    by_stem: Dict[str, Path] = {}
    unique: List[Path] = []
    for p in inputs:
        if p.stem in by_stem:
            say_error("dehaze", f"'{p}' and '{by_stem[p.stem]}' would both write {p.stem}.png; skipped the former")
            continue
        by_stem[p.stem] = p
        unique.append(p)
    return unique, len(inputs) - len(unique)


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    options = sampling_options(args)
    try:
        rank, world, local_rank = torchrun_env()
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    inputs, missing = collect_inputs(args.inputs)
    for spec in missing:
        say_error("dehaze", f"no image found for '{spec}'")
    if not inputs and not missing:
        raise CommandError("no inputs")
    unique, clashes = _unique_stems(inputs)
    failed = len(missing) + clashes
    mine = shard(unique, rank, world)
    out_dir = Path(args.output)
    todo = [p for p in mine if not all(q.is_file() for q in outputs_for(out_dir, p.stem, args.save_intermediates).values())]
    skipped = len(mine) - len(todo)
    pipe = build_pipeline(args, _device_for(args.device, world, local_rank), options) if todo else None
    written = 0
    for path in tqdm(todo, desc=f"dehaze[{rank}/{world}]" if world > 1 else "dehaze",
                     unit="img", disable=args.quiet or rank != 0):
        try:
            image = load_image(path)
        except (ImageReadError, ValueError, OSError) as exc:
            say_error("dehaze", f"skipped '{path}': {exc}")
            failed += 1
            continue
        res = pipe(image, options=options, seed=args.seed, progress=False)
        outs = outputs_for(out_dir, path.stem, args.save_intermediates)
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


def register(subparsers: Any) -> None:
    """Add ``dehaze`` to the ``dehazeddpm`` parser."""
    d = subparsers.add_parser(
        "dehaze", help="dehaze images, folders or globs into an output folder",
        description="Dehaze every input (files, folders, globs) to OUT/<stem>.png. Existing outputs "
                    "are skipped (resume); unreadable inputs are reported and the exit code is 1. "
                    "Under torchrun the sorted inputs are split across ranks.")
    d.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders or glob patterns")
    d.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_model_args(d)
    d.add_argument("--save-intermediates", action="store_true",
                   help="also write <stem>_J.png, <stem>_T.png and <stem>_A.png (stage-1 outputs)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    d.set_defaults(func=run, parser=d)
