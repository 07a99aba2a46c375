"""The speed/quality frontier of the samplers on the demo weights and the eval photos.

For each sampler (DDIM at eta 0 and 1, DPM-Solver++(2M) and its SDE variant), each start (pure
noise, and J noised to ``--strength`` of the chain) and each number of UNet evaluations
(``--evals``), the mean PSNR/SSIM over the eval photos and ``--seeds``, and seconds per image.
Everything else is the pipeline's default call (the registry entry's attention policy and stage-1
working size, auto precision). ``--check`` instead runs named settings at several sizes against
a reference setting (the check of Rule F in docs/benchmarks.md). Writes JSON, a markdown table and
a plot.

    python experiments/frontier/frontier.py --size 128 --seeds 0,1,2 --json benchmarks/results/frontier_128.json --plot docs/frontier.png
"""
from __future__ import annotations

import argparse
import json
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

SAMPLERS = {"DDIM eta 0": {"sampler": "ddim", "eta": 0.0}, "DDIM eta 1": {"sampler": "ddim", "eta": 1.0},
            "DPM-Solver++(2M)": {"sampler": "dpmpp_2m"}, "DPM-Solver++(2M) SDE": {"sampler": "dpmpp_2m_sde"}}


def eval_images(size: Optional[int]):
    with tempfile.TemporaryDirectory() as tmp:
        return [(load_image(h), load_image(g)) for h, g in make_eval_set(tmp, size=size)]


def score(pipe: DehazePipeline, images, seeds: List[int], kw: Dict[str, Any]) -> Dict[str, Any]:
    """Mean PSNR/SSIM (8-bit outputs, as a user gets them) and seconds per image of ``pipe(**kw)``."""
    ps, ss, secs, evals = [], [], [], set()
    for seed in seeds:
        for hazy, gt in images:
            t0 = time.perf_counter()
            res = pipe(hazy, seed=seed, progress=False, **kw)
            secs.append(time.perf_counter() - t0)
            out = load_image(res.image)
            ps.append(psnr(out, gt))
            ss.append(ssim(out, gt))
            evals.add(res.steps)
    return {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "seconds_per_image": float(np.mean(secs)),
            "evaluations": sorted(evals)[0] if len(evals) == 1 else sorted(evals)}


def frontier(pipe: DehazePipeline, size: Optional[int], seeds: List[int], evals: List[int], strength: float):
    images = eval_images(size)
    rows = [{"sampler": "stage 1 J", "start": "-", **score(pipe, images, seeds[:1], {"steps": 0})}]
    for name, kw in SAMPLERS.items():
        for start, s in (("noise", 1.0), (f"J at {strength:g}", strength)):
            for n in evals:
                steps = n if s == 1.0 else max(1, round(n / s))  # truncate(s) keeps round(s * steps) = n
                row = score(pipe, images, seeds, {**kw, "steps": steps, "start_strength": s})
                rows.append({"sampler": name, "start": start, "steps": steps, **row})
                print(f"| {name} | {start} | {row['evaluations']} | {row['psnr']:.3f} | {row['ssim']:.4f} | "
                      f"{row['seconds_per_image']:.2f} |", flush=True)
    return rows


def plot(rows: List[Dict[str, Any]], path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    starts = [s for s in dict.fromkeys(r["start"] for r in rows) if s != "-"]
    j = next(r for r in rows if r["sampler"] == "stage 1 J")
    fig = Figure(figsize=(11, 7.5))
    axes = fig.subplots(2, len(starts), squeeze=False)
    for col, start in enumerate(starts):
        for row, metric in enumerate(("psnr", "ssim")):
            ax = axes[row, col]
            for name in SAMPLERS:
                pts = sorted((r["evaluations"], r[metric]) for r in rows if r["sampler"] == name and r["start"] == start)
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
            ax.axhline(j[metric], color="grey", linestyle="--", label="stage 1 J alone")
            ax.set_xscale("log")
            ax.set_xticks([1, 2, 3, 4, 6, 10, 20, 50])
            ax.set_xticklabels(["1", "2", "3", "4", "6", "10", "20", "50"])
            ax.set_xlabel("UNet evaluations per image", fontsize=11)
            ax.set_ylabel("PSNR (dB)" if metric == "psnr" else "SSIM", fontsize=11)
            ax.set_title(f"from {start}: {'PSNR' if metric == 'psnr' else 'SSIM'}", fontsize=12)
            ax.tick_params(labelsize=10)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=9)
    fig.suptitle(title, fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def check(pipe: DehazePipeline, sizes: List[Optional[int]], seeds: List[int], settings: Dict[str, Dict[str, Any]]):
    """Each named setting at each size: the rows of Rule F's check."""
    rows = []
    for size in sizes:
        images = eval_images(size)
        for name, kw in settings.items():
            rows.append({"setting": name, "size": size or "original", **score(pipe, images, seeds, kw)})
            r = rows[-1]
            print(f"| {r['size']} | {name} | {r['evaluations']} | {r['psnr']:.3f} | {r['ssim']:.4f} | "
                  f"{r['seconds_per_image']:.2f} |", flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="128", help="shorter side of the eval photos ('original': their own)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--evals", default="1,2,3,4,6,10,20,50")
    ap.add_argument("--strength", type=float, default=0.3, help="start_strength of the rows that start from J")
    ap.add_argument("--check", default=None, metavar="JSON",
                    help='{"name": {pipeline keywords}, ...}: run these at --check-sizes instead of the frontier')
    ap.add_argument("--check-sizes", default="64,128,256,original")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG of PSNR and SSIM against evaluations")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    size = None if args.size == "original" else int(args.size)
    report: Dict[str, Any] = {"command": " ".join(sys.argv), "seeds": seeds, "threads": args.threads,
                              "defaults": pipe.defaults.to_dict()}
    if args.check:
        sizes = [None if s == "original" else int(s) for s in args.check_sizes.split(",")]
        report["check"] = check(pipe, sizes, seeds, json.loads(args.check))
    else:
        report["size"] = args.size
        report["rows"] = frontier(pipe, size, seeds, [int(e) for e in args.evals.split(",")], args.strength)
        if args.plot:
            plot(report["rows"], Path(args.plot), f"demo weights, eval photos at {args.size} px, "
                                                  f"{len(seeds)} seeds: quality against UNet evaluations")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
