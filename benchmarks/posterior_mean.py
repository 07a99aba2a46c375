"""Where averaging diffusion samples pays: one sample against the mean of K (``samples=K``) and
stage 1's J, per kind of haze, on the held-out eval photos.

Usage::

    python benchmarks/posterior_mean.py [--size 128] [--haze depth,nh] [--seeds 0,1] [--k 1,2,4,8]
                                        [--stage1 F --denoiser F] [--json runs/posterior_mean.json]

For each haze kind: PSNR, SSIM, CIEDE2000 (and LPIPS when its weights are installed) of J and of
the weights' default call with ``samples=K``, averaged over the eval photos and ``--seeds``, with
the seconds per image. Scored by :func:`dehazeddpm.evaluation.evaluate`. Prints a markdown table
and writes JSON.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from dehazeddpm.data import EVAL_HAZE, make_eval_set
from dehazeddpm.evaluation import STAGE1, Pair, evaluate, summarize
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.perceptual import LpipsUnavailable, load_lpips
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


def _timed(call) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128, help="shorter side of the eval pairs (0: original)")
    ap.add_argument("--haze", default="depth,nh")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--k", default="1,2,4,8", help="sample counts to compare")
    ap.add_argument("--stage1", default=None)
    ap.add_argument("--denoiser", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "posterior_mean.json"))
    ap.add_argument("--timing-only", action="store_true",
                    help="only the seconds of each K on the first eval photo (min of 3 after a warm-up)")
    args = ap.parse_args(argv)
    kinds = args.haze.split(",")
    if set(kinds) - set(EVAL_HAZE):
        ap.error(f"--haze: unknown {sorted(set(kinds) - set(EVAL_HAZE))}; known: {', '.join(EVAL_HAZE)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
        ks = [int(k) for k in args.k.split(",")]
    except ValueError as exc:
        ap.error(f"--seeds / --k: comma-separated integers: {exc}")
    if any(k < 1 for k in ks) or args.size < 0:
        ap.error("--k: counts >= 1; --size: >= 0")
    pin_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, denoiser=args.denoiser,
                                          download=False, progress=False)
    try:
        lpips = load_lpips()
    except LpipsUnavailable as exc:
        lpips = None
        print(exc, file=sys.stderr)
    runs: Dict[str, Any] = {"stage 1 J": dict(STAGE1), **{f"mean of {k}": {"samples": k} for k in ks}}
    if args.timing_only:
        with tempfile.TemporaryDirectory() as tmp:
            image = make_eval_set(tmp, size=args.size or None, seed=0)[0][0]
            seconds = {}
            for k in ks:
                pipe(image, seed=0, progress=False, samples=k)
                seconds[k] = min(_timed(lambda: pipe(image, seed=0, progress=False, samples=k)) for _ in range(3))
                print(f"samples={k}: {seconds[k]:.2f} s ({seconds[k] / seconds[ks[0]]:.2f}x)", flush=True)
        write_json(args.json, {"command": "python benchmarks/posterior_mean.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                               "date": time.strftime("%Y-%m-%d"), "size": args.size, "seconds": seconds})
        return 0
    rows: List[Dict[str, Any]] = []
    t0 = time.time()
    for kind in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            pairs = [Pair(h.stem, h, g) for h, g in make_eval_set(tmp, size=args.size or None, seed=0, kind=kind)]
            for s in summarize(evaluate(pipe, pairs, runs, seeds, lpips=lpips)):
                rows.append({**s, "kind": kind})
                print(f"{kind:6s} {s['run']:12s} PSNR {s['psnr']:6.2f} SSIM {s['ssim']:.4f} "
                      f"CIEDE2000 {s['ciede2000']:.2f} {s['seconds']:.2f} s/image", flush=True)
    has_lpips = lpips is not None
    table = ["| haze kind | run | PSNR (dB) | SSIM | CIEDE2000 |" + (" LPIPS |" if has_lpips else "") + " s/image |",
             "|---|---|---|---|---|" + ("---|" if has_lpips else "") + "---|"]
    table += [f"| {r['kind']} | {r['run']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['ciede2000']:.2f} |"
              + (f" {r['lpips']:.4f} |" if has_lpips else "") + f" {r['seconds']:.2f} |" for r in rows]
    print("\n".join(table))
    write_json(args.json, {
        "command": "python benchmarks/posterior_mean.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"), "seeds": seeds, "size": args.size or "original",
        "defaults": pipe.defaults.describe(), "seconds": round(time.time() - t0, 1), "rows": rows,
        "markdown": "\n".join(table)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
