"""Evaluate the demo weights on the built-in eval photos (disjoint from the training photos).

Usage: ``python experiments/eval_demo/eval_demo.py [--size 128] [--ddpm-size 64] [--seeds 0,1,2] [--json out.json]``;
``--size`` may list several sizes (``64,256,original``), ``--short`` keeps only the rows about
stage 1 and the default call, and ``--tile N`` sets ``tile_size`` for the sampled rows.
Rows: hazy input, stage-1 J alone, the pipeline's default call (DDIM-20 with the demo entry's
``ddim_defaults``: started from J noised to ``start_strength`` 0.3, eta 1), the same start at eta 0
(the default until eta 1 was measured better), DDIM-20 from pure noise at eta 0 and eta 1, each
also with plain start noise (``zero_mean_noise=False``, the mean kept), from pure noise with
``fusion="transmission"``, started at ``start_strength`` 0.45, and full ancestral DDPM over every
step of the training schedule, from pure noise (the reference path) and, when the weights set a
default ``start_strength``, from the default call's start (J noised to that level: the
like-for-like comparison for the default). The DDPM rows run on a smaller eval set
(``--ddpm-size``; hundreds to 2000 UNet calls per image is minutes per image on a CPU), so they
come with their own hazy/J/DDIM-20 rows at that size. Samples from an under-trained denoiser vary a
lot with the seed: every sampled row is averaged over ``--seeds`` (hazy and J rows do not depend on
it). When the weights set a stage-1 working size (``demo``: 128), J and the default call are also
run with stage 1 at full resolution (``stage1_size=0``), the reference's way.
Prints a markdown table and writes JSON.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm.data import make_eval_set
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.io import load_image
from dehazeddpm.metrics import psnr, ssim
from dehazeddpm.utils import write_json


def evaluate(pipe: DehazePipeline, size: Optional[int], runs: List[Dict[str, Any]], seeds: List[int]) -> List[Dict[str, Any]]:
    """Mean PSNR/SSIM (dB, [0,1]) per run over ``make_eval_set(size=size)`` (None: the photos'
    own size) and over ``seeds`` (the sampler's noise); each run is ``{"name", "kw"}`` with ``kw``
    for the pipeline (``None`` = the hazy input itself). Rows also hold the per-seed means, whose
    spread shows how much one seed can mislead."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_eval_set(tmp, size=size, seed=0)
        images = [(h.stem, load_image(h), load_image(g)) for h, g in pairs]
        for run in runs:
            # the hazy input and J do not depend on the seed: one pass is enough
            run_seeds = seeds if run["kw"] is not None and run["kw"].get("steps", 1) != 0 else seeds[:1]
            ps, ss, per, per_seed = [], [], {}, {}
            t0 = time.time()
            for seed in run_seeds:
                seed_ps = []
                for name, hazy, gt in images:
                    if run["kw"] is None:
                        out = hazy
                    else:
                        res = pipe(hazy, seed=seed, progress=False, **run["kw"])
                        out = load_image(res.image)  # the 8-bit image a user gets
                    p, s = psnr(out, gt), ssim(out, gt)
                    ps.append(p)
                    ss.append(s)
                    seed_ps.append(p)
                    per.setdefault(name, []).append(round(p, 3))
                per_seed[seed] = round(float(np.mean(seed_ps)), 3)
            rows.append({"method": run["name"], "size": size or "original", "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)),
                         "seconds_per_image": (time.time() - t0) / (len(images) * len(run_seeds)),
                         "psnr_per_seed": per_seed, "psnr_per_image": per})
            spread = f" (seeds {min(per_seed.values()):.2f}..{max(per_seed.values()):.2f})" if len(per_seed) > 1 else ""
            print(f"  {run['name']:<42} size {size or 'original'}: PSNR {rows[-1]['psnr']:.2f}{spread} "
                  f"SSIM {rows[-1]['ssim']:.4f} ({rows[-1]['seconds_per_image']:.1f} s/img)", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", default="128",
                    help="shorter side(s) of the eval images, comma-separated; 'original': the photos' own "
                         "size; 0: DDPM block only")
    ap.add_argument("--short", action="store_true", help="only the hazy, stage-1 and default-call rows")
    ap.add_argument("--tile", type=int, default=None, help="tile_size for the sampled rows of the main block (default: automatic)")
    ap.add_argument("--ddpm-size", type=int, default=64, help="shorter side for the 2000-step DDPM row (0: skip)")
    ap.add_argument("--seeds", default="0", help="comma-separated sampler seeds; PSNR is averaged over them")
    ap.add_argument("--ddpm-seeds", default=None, help="seeds of the DDPM block (default: --seeds)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stage1", default=None, help="stage-1 file (default: the registry's demo entry)")
    ap.add_argument("--denoiser", default=None, help="denoiser file (default: the registry's demo entry)")
    ap.add_argument("--json", default=str(ROOT / "runs" / "eval_demo.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, denoiser=args.denoiser,
                                          download=False, progress=False)
    noise = {"sampler": "ddim", "steps": 20, "start_strength": 1.0, "eta": 0.0}  # from pure noise
    main_runs = [{"name": "hazy input", "kw": None},
                 {"name": "stage 1 J", "kw": {"steps": 0}},
                 {"name": "DDIM 20, pipeline default (demo: start_strength 0.3, eta 1)", "kw": {"sampler": "ddim", "steps": 20}},
                 {"name": "DDIM 20, the default's start, eta 0", "kw": {"sampler": "ddim", "steps": 20, "eta": 0.0}},
                 {"name": "DDIM 20 from pure noise (eta 0)", "kw": dict(noise)},
                 {"name": "DDIM 20 from pure noise, plain noise (mean kept)", "kw": dict(noise, zero_mean_noise=False)},
                 {"name": "DDIM 20 from pure noise, eta 1 (= respaced ancestral)", "kw": dict(noise, eta=1.0)},
                 {"name": "DDIM 20 from pure noise, eta 1, plain noise", "kw": dict(noise, eta=1.0, zero_mean_noise=False)},
                 {"name": "DDIM 20 from pure noise + fusion=transmission", "kw": dict(noise, fusion="transmission")},
                 {"name": "DDIM 20, start_strength 0.45 (9 steps)", "kw": dict(noise, start_strength=0.45)}]
    if pipe.defaults.stage1_size:
        # the same calls with stage 1 at full resolution: what the working size changes
        main_runs[2:2] = [{"name": "stage 1 J, full resolution (stage1_size=0)", "kw": {"steps": 0, "stage1_size": 0}}]
        main_runs[4:4] = [{"name": "DDIM 20, pipeline default, stage 1 at full resolution",
                           "kw": {"sampler": "ddim", "steps": 20, "stage1_size": 0}}]
    short = [r for r in main_runs if r["kw"] is None or "start_strength" not in r["kw"] and "eta" not in r["kw"]]
    if args.tile:
        for r in main_runs:
            if r["kw"] is not None and r["kw"].get("steps") != 0:
                r["kw"]["tile_size"] = args.tile
    t0 = time.time()
    seeds = [int(x) for x in args.seeds.split(",")]
    ddpm_seeds = [int(x) for x in args.ddpm_seeds.split(",")] if args.ddpm_seeds else seeds
    rows: List[Dict[str, Any]] = []
    for size in args.size.split(","):
        if size != "0":
            rows += evaluate(pipe, None if size == "original" else int(size), short if args.short else main_runs, seeds)
    if args.ddpm_size:
        ddpm = {"name": f"DDPM {len(pipe.schedule)} (ancestral, every step: the reference path)",
                "kw": {"sampler": "ddpm", "steps": None}}
        ddpm_runs = [ddpm]
        start = pipe.defaults.start_strength
        if start is not None and start < 1:
            # the same start as the default call (J noised to `start`), then every ancestral step from
            # there: isolates what the few-step sampler costs in the configuration users get
            n = len(pipe.schedule.truncate(start))
            ddpm_runs.append({"name": f"DDPM {n} (ancestral, every step from J noised to start_strength {start:g})",
                              "kw": {"sampler": "ddpm", "steps": None, "start_strength": start}})
        rows += evaluate(pipe, args.ddpm_size, [r for r in main_runs if "fusion" not in (r["kw"] or {})
                                                and (r["kw"] or {}).get("start_strength") != 0.45] + ddpm_runs,
                         ddpm_seeds)
    table = ["| method | eval size (shorter side) | seeds | PSNR (dB), mean | PSNR range over seeds | SSIM | s / image (CPU) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lo, hi = min(r["psnr_per_seed"].values()), max(r["psnr_per_seed"].values())
        rng = f"{lo:.2f}..{hi:.2f}" if len(r["psnr_per_seed"]) > 1 else "-"
        table.append(f"| {r['method']} | {r['size']} | {len(r['psnr_per_seed'])} | {r['psnr']:.2f} | {rng} | "
                     f"{r['ssim']:.4f} | {r['seconds_per_image']:.2f} |")
    print("\n".join(table))
    out = {"command": "python experiments/eval_demo/eval_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "seeds": seeds, "ddpm_seeds": ddpm_seeds, "threads": args.threads, "torch": torch.__version__,
           "seconds": round(time.time() - t0, 1), "rows": rows, "markdown": "\n".join(table)}
    write_json(args.json, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
