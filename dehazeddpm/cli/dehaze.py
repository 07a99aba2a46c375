"""``dehazeddpm dehaze``: dehaze files, folders and globs into an output folder.

One ``<stem>.png`` per input, written atomically. Each output carries a record of what made it
(the weights' sha256, the options chosen, the seed) in a PNG text chunk: a rerun skips the outputs
made exactly so (an interrupted run resumes), redoes missing or broken ones, and refuses outputs
made otherwise unless ``--overwrite``. Unreadable inputs are reported by name and the exit code
is 1 at the end. Under ``torchrun`` the sorted inputs are split across ranks (rank r takes r::world).
"""
from __future__ import annotations

import argparse
import errno
import glob
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

from ..hub import sha256_file
from ..io.images import (
    IMAGE_EXTENSIONS,
    ImageReadError,
    is_image_file,
    load_image,
    pixel_limit,
    read_png_text,
    save_image_atomic,
    to_pil,
)
from ..utils import remove_stale_temporaries, temporary_name, torchrun_env
from .common import CommandError, add_model_args, build_pipeline, sampling_options, say_error, weights_files

__all__ = ["INTERMEDIATES", "RECORD_KEY", "collect_inputs", "output_state", "outputs_for", "prepare_output_folder",
           "register", "run_record", "shard"]

_T = TypeVar("_T")


def collect_inputs(specs: Sequence[str], exclude: Optional[Path] = None) -> Tuple[List[Path], List[str]]:
    """Expand files, folders (their image files, non-recursive) and globs into a sorted list.

    Returns ``(paths, problems)``: ``problems`` are one-line reasons for specs that gave no input
    (nothing matched; only files of the output folder matched; a folder without readable
    images). A file named explicitly is kept even without an image extension (it is reported if
    it fails to decode); files found through folders or globs must have an image extension. Files
    inside ``exclude`` (the output folder) are left out, so a run never dehazes its own outputs.
    """
    skip = exclude.resolve() if exclude is not None else None

    def wanted(q: Path) -> bool:
        return skip is None or skip not in q.resolve().parents

    def images_in(d: Path) -> List[Path]:
        return [q for q in d.iterdir() if q.is_file() and is_image_file(q) and not q.name.startswith(".")]

    found: set = set()
    problems: List[str] = []
    for spec in specs:
        p = Path(spec)
        if p.is_file():
            found.add(p)
            continue
        if p.is_dir():
            hits = images_in(p)
            others = sorted({q.suffix.lower() or "(none)" for q in p.iterdir() if q.is_file() and not is_image_file(q)})
        else:
            matches = [Path(m) for m in glob.glob(spec)]
            hits = [m for m in matches if m.is_file() and is_image_file(m)]
            hits += [q for m in matches if m.is_dir() for q in images_in(m)]
            others = []
        kept = [q for q in hits if wanted(q)]
        if kept:
            found.update(kept)
        elif hits:
            problems.append(f"'{spec}' matches only files in the output folder {exclude} (outputs are never inputs)")
        elif others:
            problems.append(f"no readable image in '{spec}' (it holds {', '.join(others)} files; readable: "
                            f"{' '.join(sorted(IMAGE_EXTENSIONS))})")
        else:
            problems.append(f"no image found for '{spec}'")
    return sorted(found), problems


def shard(items: Sequence[_T], rank: int, world_size: int) -> List[_T]:
    """The items rank ``rank`` of ``world_size`` processes handles: ``sorted(items)[rank::world]``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} for world size {world_size}")
    return sorted(items)[rank::world_size]


INTERMEDIATES = "stage1"


def outputs_for(out_dir: Path, stem: str, intermediates: bool) -> Dict[str, Path]:
    """The files one input produces: ``OUT/<stem>.png`` and, with intermediates, its J, T and A as
    ``OUT/stage1/<stem>_{J,T,A}.png``: a folder of their own, so no input's name (``a_J.png``
    beside ``a.png``) can collide with another input's stage-1 files."""
    outs = {"image": out_dir / f"{stem}.png"}
    if intermediates:
        outs.update({k: out_dir / INTERMEDIATES / f"{stem}_{k}.png" for k in ("J", "T", "A")})
    return outs


def prepare_output_folder(out_dir: Path, inputs: Sequence[str]) -> None:
    """Check, before any model loads, that results can be written to ``out_dir`` and cannot be
    confused with inputs; removes temporaries that killed runs left there."""
    if out_dir.exists() and not out_dir.is_dir():
        raise CommandError(f"the output folder {out_dir} is a file")
    for spec in inputs:
        p = Path(spec)
        if p.is_dir() and p.resolve() == out_dir.resolve():
            raise CommandError(f"the output folder {out_dir} is also an input folder: outputs would mix with the "
                               "inputs (and overwrite PNG inputs); give another -o")
        if p.is_file() and p.resolve().parent in (out_dir.resolve(), (out_dir / INTERMEDIATES).resolve()):
            raise CommandError(f"input {p} is inside the output folder {out_dir}: its output could overwrite it; "
                               "give another -o")
    # Probe in the nearest folder that exists: nothing is created before the model has loaded.
    existing = next(p for p in (out_dir, *out_dir.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is a file")
        probe = temporary_name(existing / "write-test")
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        raise CommandError(f"cannot write to the output folder {out_dir}: {exc.strerror or exc}") from None
    remove_stale_temporaries(out_dir)
    if (out_dir / INTERMEDIATES).is_dir():
        remove_stale_temporaries(out_dir / INTERMEDIATES)


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


# Writing errors after which no later image can be written either: stop the batch.
_FATAL_WRITE_ERRORS = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM)


# The PNG text chunk of an output that holds its record.
RECORD_KEY = "dehazeddpm"


def run_record(args: argparse.Namespace, files: Tuple[Path, Path], options: Any) -> str:
    """What makes an output, as JSON: the weights' sha256, UNet settings given, the options that
    run (``pipe.resolve_options``: the weights' defaults and the device's precision folded in, so
    outputs of a call whose defaults have changed since are not taken as done), the seed and
    whether stage 1's files were asked for. ``files``: the stage-1 and denoiser files
    (:func:`weights_files`)."""
    stage1, denoiser = files
    return json.dumps({"stage1": sha256_file(stage1), "denoiser": sha256_file(denoiser),
                       "unet_config": args.unet_config or None, "options": options.to_dict(), "seed": args.seed,
                       "intermediates": bool(args.save_intermediates)}, sort_keys=True)


def output_state(outs: Dict[str, Path], record: str) -> str:
    """``"done"`` (whole, made by ``record``), ``"other"`` (whole, made otherwise or by a version
    that kept no record) or ``"todo"`` (missing or broken)."""
    text = read_png_text(outs["image"])
    if text is None or not all(q.is_file() for q in outs.values()):
        return "todo"
    return "done" if text.get(RECORD_KEY) == record else "other"


def _still_to_do(mine: List[Path], out_dir: Path, record: str, args: argparse.Namespace) -> List[Path]:
    """The inputs whose outputs are missing or broken (or made otherwise, with ``--overwrite``);
    outputs made otherwise without it are a CommandError that says how to choose."""
    states = {p: output_state(outputs_for(out_dir, p.stem, args.save_intermediates), record) for p in mine}
    other = [p for p in mine if states[p] == "other"]
    if other and not args.overwrite:
        raise CommandError(f"{len(other)} output(s) in {out_dir} were made with other weights or settings "
                           f"(e.g. {other[0].stem}.png; defaults count, and they change between versions): pass "
                           "--overwrite to redo them, or choose another -o")
    return [p for p in mine if states[p] != "done"]


def _save(res, outs: Dict[str, Path], record: str) -> None:
    if "J" in outs:
        save_image_atomic(to_pil(res.J), outs["J"])
        save_image_atomic(to_pil(res.T), outs["T"])
        save_image_atomic(to_pil(res.A.expand(1, 3, *res.J.shape[-2:])), outs["A"])
    # The main output goes last, with the record: it marks the input as done for a resumed run.
    save_image_atomic(res.image, outs["image"], text={RECORD_KEY: record})


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from ..inference.pipeline import BrokenModelError

    options = sampling_options(args)
    try:
        rank, world, local_rank = torchrun_env()
        pixel_limit()  # a bad DEHAZEDDPM_MAX_PIXELS is one line now, not one per image later
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if not args.output.strip():
        raise CommandError("-o is empty: give the output folder")
    out_dir = Path(args.output)
    prepare_output_folder(out_dir, args.inputs)
    inputs, missing = collect_inputs(args.inputs, exclude=out_dir)
    for problem in missing:
        say_error("dehaze", problem)
    if not inputs and not missing:
        raise CommandError("no inputs")
    unique, clashes = _unique_stems(inputs)
    failed = len(missing) + clashes
    mine = shard(unique, rank, world)
    files = weights_files(args)  # a missing or undownloadable file is one line, before anything loads
    # the weights are loaded before deciding what is done: their defaults are part of the record
    pipe = build_pipeline(args, _device_for(args.device, world, local_rank), options) if mine else None
    record = run_record(args, files, pipe.resolve_options(options)) if pipe else ""
    todo = _still_to_do(mine, out_dir, record, args)
    skipped = len(mine) - len(todo)
    written = 0
    for path in tqdm(todo, desc=f"dehaze[{rank}/{world}]" if world > 1 else "dehaze",
                     unit="img", disable=args.quiet or rank != 0):
        try:
            res = pipe(load_image(path, max_pixels=args.max_pixels), options=options, seed=args.seed, progress=not args.quiet and rank == 0)
            _save(res, outputs_for(out_dir, path.stem, args.save_intermediates), record)
        except (ImageReadError, ValueError) as exc:
            say_error("dehaze", f"skipped '{path}': {exc}")
            failed += 1
            continue
        except MemoryError:
            say_error("dehaze", f"skipped '{path}': not enough memory for an image of this size (try --tile 256)")
            failed += 1
            continue
        except BrokenModelError as exc:
            raise CommandError(f"'{path}': {exc}", code=1) from None
        except OSError as exc:
            if exc.errno in _FATAL_WRITE_ERRORS:
                raise CommandError(f"cannot write to {out_dir}: {exc.strerror}; stopped after {written} image(s)",
                                   code=1) from None
            say_error("dehaze", f"skipped '{path}': {exc}")
            failed += 1
            continue
        written += 1
    if not args.quiet:
        print(f"dehazeddpm dehaze: {written} written, {skipped} already done, {failed} failed"
              + (f" (rank {rank} of {world})" if world > 1 else ""), file=sys.stderr)
    return 1 if failed else 0


def register(subparsers: Any) -> None:
    """Add ``dehaze`` to the ``dehazeddpm`` parser."""
    d = subparsers.add_parser(
        "dehaze", help="dehaze images, folders or globs into an output folder",
        description="Dehaze every input (files, folders, globs) to OUT/<stem>.png. Outputs made with "
                    "the same weights and settings are skipped (resume), broken ones redone, others refused "
                    "without --overwrite; unreadable inputs are reported and the exit code is 1. "
                    "Under torchrun the sorted inputs are split across ranks.")
    d.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders or glob patterns")
    d.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    add_model_args(d)
    d.add_argument("--save-intermediates", action="store_true",
                   help="also write stage 1's J, T and A as OUT/stage1/<stem>_J.png, _T.png and _A.png")
    d.add_argument("--overwrite", action="store_true",
                   help="redo outputs that were made with other weights or settings (default: refuse)")
    d.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    d.set_defaults(func=run, parser=d)
