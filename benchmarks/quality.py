"""Quality per size and kind of haze: stage 1's J against the default call (what stage 2 adds).

Usage::

    python benchmarks/quality.py [--sizes 64,128,256,original] [--haze depth,nh,dense] [--seeds 0,1,2]
                                 [--noise-size 128] [--stage1 F --denoiser F] [--json out.json]
    python benchmarks/quality.py --split train --names ... --candidates   # Rule R6 (docs/benchmarks.md)

For each haze kind and size: mean PSNR / SSIM of J and of the weights' default call (``demo``
unless files are given) over the eval photos (``make_eval_set``; held out from training), the
default call averaged over ``--seeds``; from pure noise (DDIM 20, eta 0, ``start_strength=1``) at
``--noise-size``; and the colour cast: |mean a*| and |mean b*| (CIE Lab) of the output minus the
ground truth's, per image. Each row also keeps every photo's PSNR, so a cell's mean cannot hide
one photo's loss (``demo_acceptance.py`` names the worst). ``--candidates`` also scores the start
strengths and etas of Rule R6.
Scored by the package's harness (:func:`dehazeddpm.evaluation.evaluate`). Prints a markdown table
and writes JSON. (Before 0.4 this was ``scripts/eval_stages.py``.)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from dehazeddpm.data import EVAL_HAZE, EVAL_PHOTOS, TRAIN_PHOTOS, make_eval_set
from dehazeddpm.evaluation import DEFAULT_CALL, STAGE1, Pair, by_image, evaluate, summarize
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
# Rule R6's candidates: (start_strength, eta) of DDIM 20
CANDIDATES = [(s, e) for s in (0.2, 0.3, 0.4) for e in (0.0, 1.0)]


def score(pipe: DehazePipeline, pairs: List[Pair], runs: Dict[str, Dict[str, Any]], seeds: List[int]
          ) -> Dict[str, Dict[str, Any]]:
    """Per run ({name: pipeline options}): mean PSNR and SSIM, the colour cast (mean and max over
    images of |a* - a*gt| and |b* - b*gt|), each photo's PSNR (``photos``, its mean over the seeds)
    and the seconds, over the pairs and seeds."""
    rows = evaluate(pipe, pairs, runs, seeds)
    per_photo = by_image(rows, ("psnr",))
    out: Dict[str, Dict[str, Any]] = {}
    for s in summarize(rows):
        mine = [r for r in rows if r["run"] == s["run"]]
        out[s["run"]] = {"psnr": s["psnr"], "ssim": s["ssim"], "max_abs_da": max(r["abs_da"] for r in mine),
                         "max_abs_db": max(r["abs_db"] for r in mine), "mean_abs_da": s["abs_da"],
                         "mean_abs_db": s["abs_db"], "seconds": sum(r["seconds"] for r in mine),
                         "photos": {p["name"]: p[f"psnr_{s['run']}"] for p in per_photo}}
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128,256,original")
    ap.add_argument("--haze", default=",".join(EVAL_HAZE))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--noise-size", type=int, default=128, help="size of the from-noise row (0: skip)")
    ap.add_argument("--split", default="eval", choices=("eval", "train"))
    ap.add_argument("--names", default=None, help="comma-separated photo names of the split (default: all)")
    ap.add_argument("--candidates", action="store_true", help="also score Rule R6's (start, eta) candidates")
    ap.add_argument("--stage1", default=None)
    ap.add_argument("--denoiser", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "quality.json"))
    args = ap.parse_args(argv)
    # bad values get one line from argparse (exit 2) before any model loads
    kinds = args.haze.split(",")
    if set(kinds) - set(EVAL_HAZE):
        ap.error(f"--haze: unknown {sorted(set(kinds) - set(EVAL_HAZE))}; known: {', '.join(EVAL_HAZE)}")
    photos = TRAIN_PHOTOS if args.split == "train" else EVAL_PHOTOS
    names = args.names.split(",") if args.names else None
    if names is not None and set(names) - set(photos):
        ap.error(f"--names: not {args.split} photos: {sorted(set(names) - set(photos))}; known: {', '.join(photos)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        sizes = [None if s == "original" else int(s) for s in args.sizes.split(",")]
    except ValueError as exc:
        ap.error(f"--seeds / --sizes: integers (sizes may be 'original'): {exc}")
    if any(s is not None and s < 1 for s in sizes):
        ap.error("--sizes: shorter sides must be positive")
    pin_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, denoiser=args.denoiser,
                                          download=False, progress=False)
    runs: Dict[str, Dict[str, Any]] = {"stage 1 J": dict(STAGE1), "default call": dict(DEFAULT_CALL)}
    if args.candidates:
        runs.update({f"ddim 20, start {s:g}, eta {e:g}": {"sampler": "ddim", "steps": 20, "start_strength": s, "eta": e}
                     for s, e in CANDIDATES})
    rows: List[Dict[str, Any]] = []
    t0 = time.time()
    for kind in kinds:
        for side in sizes:
            size = "original" if side is None else str(side)
            with tempfile.TemporaryDirectory() as tmp:
                pairs = [Pair(h.stem, h, g) for h, g in make_eval_set(tmp, size=side, seed=0, kind=kind,
                                                                       split=args.split, names=names)]
                these = dict(runs)
                if side == args.noise_size:
                    these["from pure noise (DDIM 20, eta 0)"] = {"sampler": "ddim", "steps": 20, "start_strength": 1.0,
                                                                 "eta": 0.0}
                for name, r in score(pipe, pairs, these, seeds).items():
                    rows.append({"haze": kind, "size": size, "method": name, **r})
                    print(f"{kind:6s} {size:>8s} {name:36s} PSNR {r['psnr']:6.2f} SSIM {r['ssim']:.4f} "
                          f"|da| {r['max_abs_da']:.2f} |db| {r['max_abs_db']:.2f}", flush=True)
    table = ["| haze | size | method | PSNR (dB) | SSIM | max abs(a* - a*gt) | max abs(b* - b*gt) |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['haze']} | {r['size']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
              f"{r['max_abs_da']:.2f} | {r['max_abs_db']:.2f} |" for r in rows]
    print("\n".join(table))
    result = {"command": "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "seeds": seeds, "split": args.split, "names": names, "threads": args.threads, "torch": torch.__version__,
              "weights": {"stage1": args.stage1 or "demo", "denoiser": args.denoiser or "demo"},
              "defaults": pipe.defaults.describe() if hasattr(pipe.defaults, "describe") else str(pipe.defaults),
              "seconds": round(time.time() - t0, 1), "rows": rows, "markdown": "\n".join(table)}
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
