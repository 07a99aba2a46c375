"""Where stage 1's colour error comes from: its airlight and its J against what the scattering model
gives from its transmission with the true airlight.

Usage::

    python benchmarks/airlight.py [--split eval] [--sizes 128] [--haze-seeds 0] [--stage1 FILE]
                                  [--threads 2] [--json out.json]

For each photo of ``--split`` (comma-separated splits of ``builtin_photos``: "eval", "judge",
"independent", a training split), size, haze seed and kind (depth, nh, dense), hazed as
``make_eval_set`` hazes it (:func:`~dehazeddpm.data.eval_haze`, which also gives the true
transmission and airlight), stage 1 runs as the default call runs it (``stage1_as_called``), and
five images are scored against the ground truth (PSNR, and the signed error of the mean CIE a* and
b*; b* > 0 yellow, < 0 blue):

- ``hazy input``;
- ``stage 1 J``: the network's clear image, what the pipeline uses;
- ``model, T and A of stage 1``: ``I`` solved with stage 1's transmission and airlight
  (``physics.invert``);
- ``model, T of stage 1, true airlight``: the same with the true airlight (its mean over the image
  for the non-homogeneous kinds): how good stage 1's transmission is, airlight aside;
- ``model, true T, A of stage 1``: how good stage 1's airlight is, transmission aside.

Per pair it also records the true airlight, stage 1's A and how far each is from grey (max minus
min channel). Per (kind, size) cell and image: the mean PSNR, mean |a* error|, mean |b* error| and
the mean absolute error of A per channel. A J whose b* error exceeds the hazy input's has the
airlight's tint divided by T; a J far below the row with the true airlight has a transmission that
could dehaze, and an airlight or a J head that does not.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from dehazeddpm.data import EVAL_HAZE, builtin_photos, eval_haze, resize_photo
from dehazeddpm.hub import WeightsError
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.io import CheckpointError, ImageReadError, load_image, to_pil
from dehazeddpm.metrics import mean_ab, psnr
from dehazeddpm.physics import invert
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("hazy input", "stage 1 J", "model, T and A of stage 1", "model, T of stage 1, true airlight",
          "model, true T, A of stage 1")


def pair_row(pipe: DehazePipeline, name: str, clear: torch.Tensor, depth: Optional[torch.Tensor], kind: str,
             seed: int) -> Dict[str, Any]:
    """One pair's airlights and the five images' PSNR and signed a*, b* errors."""
    sample = eval_haze(name, clear, depth, kind=kind, seed=seed)
    hazy = load_image(to_pil(sample.hazy))  # the 8-bit hazy image a saved pair holds: (1, 3, H, W)
    gt = sample.clear.unsqueeze(0)
    out = pipe.stage1_as_called(hazy)
    true_a, true_t = sample.airlight.unsqueeze(0), sample.transmission.unsqueeze(0)
    images = dict(zip(IMAGES, (hazy, out.J, invert(hazy, out.T, out.A), invert(hazy, out.T, true_a),
                               invert(hazy, true_t, out.A))))
    a_gt, b_gt = mean_ab(gt)
    scores = {}
    for label, img in images.items():
        a, b = mean_ab(img)
        scores[label] = {"psnr": psnr(img, gt), "da": a - a_gt, "db": b - b_gt}
    true, est = true_a.flatten().tolist(), out.A.flatten().tolist()
    return {"name": name, "true_airlight": [round(v, 4) for v in true], "stage1_A": [round(v, 4) for v in est],
            "true_tint": max(true) - min(true), "stage1_tint": max(est) - min(est),
            "A_abs_error": sum(abs(t - e) for t, e in zip(true, est)) / 3, "images": scores}


def cell_summary(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Means over a cell's pairs: per image PSNR, |da|, |db|; and A's error and tints."""
    n = len(rows)
    images = {label: {"psnr": sum(r["images"][label]["psnr"] for r in rows) / n,
                      "abs_da": sum(abs(r["images"][label]["da"]) for r in rows) / n,
                      "abs_db": sum(abs(r["images"][label]["db"]) for r in rows) / n} for label in IMAGES}
    return {"pairs": n, "A_abs_error": sum(r["A_abs_error"] for r in rows) / n,
            "true_tint": sum(r["true_tint"] for r in rows) / n, "stage1_tint": sum(r["stage1_tint"] for r in rows) / n,
            "images": images}


def markdown(cells: Dict[str, Dict[str, Any]]) -> str:
    head = "| haze | size | A error | tint: true / stage 1 | " + " | ".join(IMAGES) + " |"
    lines = [head, "|---|---|---|---|" + "---|" * len(IMAGES)]
    for key, c in cells.items():
        kind, size = key.split(" ")
        vals = " | ".join(f"{c['images'][k]['psnr']:.2f} / {c['images'][k]['abs_da']:.1f}, {c['images'][k]['abs_db']:.1f}"
                          for k in IMAGES)
        lines.append(f"| {kind} | {size} | {c['A_abs_error']:.3f} | {c['true_tint']:.3f} / {c['stage1_tint']:.3f} | {vals} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", default="eval", help="comma-separated photo splits (default: eval)")
    ap.add_argument("--sizes", default="128", help="comma-separated shorter sides, or 'original'")
    ap.add_argument("--haze-seeds", default="0")
    ap.add_argument("--haze", default=",".join(EVAL_HAZE))
    ap.add_argument("--stage1", default=None, help="a stage-1 file (default: the demo's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "airlight.json"))
    args = ap.parse_args(argv)
    kinds = args.haze.split(",")
    if set(kinds) - set(EVAL_HAZE):
        ap.error(f"--haze: unknown {sorted(set(kinds) - set(EVAL_HAZE))}; known: {', '.join(EVAL_HAZE)}")
    try:
        seeds = [int(s) for s in args.haze_seeds.split(",")]
        sizes = [None if s == "original" else int(s) for s in args.sizes.split(",")]
    except ValueError as exc:
        ap.error(f"--haze-seeds / --sizes: integers (sizes may be 'original'): {exc}")
    if any(s is not None and s < 1 for s in sizes):
        ap.error("--sizes: shorter sides must be positive")
    photos: Dict[str, Any] = {}
    for split in args.split.split(","):
        try:
            photos.update(builtin_photos(split))
        except ValueError as exc:
            ap.error(f"--split: {exc}")
    pin_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, download=False, progress=False)
    t0 = time.time()
    rows: List[Dict[str, Any]] = []
    cells: Dict[str, Dict[str, Any]] = {}
    for kind in kinds:
        for side in sizes:
            size = "original" if side is None else str(side)
            these = []
            for seed in seeds:
                for name, (clear, depth) in photos.items():
                    if side is not None:
                        clear, depth = resize_photo(clear, depth, side)
                    row = {"kind": kind, "size": size, "haze_seed": seed, **pair_row(pipe, name, clear, depth, kind, seed)}
                    these.append(row)
            rows += these
            cells[f"{kind} {size}"] = c = cell_summary(these)
            print(f"{kind:5s} {size:>8s}  A error {c['A_abs_error']:.3f}  "
                  + "  ".join(f"{k}: {v['psnr']:.2f} dB |db| {v['abs_db']:.1f}" for k, v in c["images"].items()), flush=True)
    table = markdown(cells)
    print(table)
    write_json(args.json, {"command": "python benchmarks/airlight.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           "stage1": args.stage1 or "demo", "split": args.split, "sizes": args.sizes,
                           "haze_seeds": seeds, "photos": list(photos), "torch": torch.__version__,
                           "seconds": round(time.time() - t0, 1), "cells": cells, "rows": rows, "markdown": table})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, ImageReadError, WeightsError) as exc:  # a bad file given: one line, no traceback
        sys.exit(f"airlight.py: {exc}")
