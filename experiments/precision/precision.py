"""What each precision costs: PSNR/SSIM and seconds of the demo default call per precision.

One run, one machine, the same weights, images and seeds for every precision. Rows: stage 1's J
(seed-free) with stage 1 in fp32 and in bf16, and the default call with the denoiser in each
precision (stage 1 as the pipeline runs it). Rule P in docs/benchmarks.md reads this table.

    python experiments/precision/precision.py --sizes 64,128,256,original --seeds 0,1,2 --json benchmarks/results/precision_cpu.json
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm.data import make_eval_set
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.inference.device import cpu_has_fast_bf16
from dehazeddpm.io import load_image, to_pil
from dehazeddpm.metrics import psnr, ssim
from dehazeddpm.utils import write_json


def measure(pipe: DehazePipeline, size: Optional[int], precisions: List[str], seeds: List[int]) -> List[Dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        images = [(load_image(h), load_image(g)) for h, g in make_eval_set(tmp, size=size)]
        for prec in precisions:
            q = [(psnr(j, gt), ssim(j, gt)) for j, gt in
                 ((load_image(to_pil(pipe.stage1_outputs(x, pipe.defaults.stage1_size, prec).J)), gt) for x, gt in images)]
            rows.append({"what": f"stage 1 J, stage 1 in {prec}", "size": size or "original", "precision": prec,
                         "psnr": float(np.mean([p for p, _ in q])), "ssim": float(np.mean([s for _, s in q]))})
        for prec in precisions:
            ps, ss, secs = [], [], []
            for seed in seeds:
                for x, gt in images:
                    t0 = time.perf_counter()
                    out = load_image(pipe(x, seed=seed, progress=False, precision=prec).image)
                    secs.append(time.perf_counter() - t0)
                    ps.append(psnr(out, gt))
                    ss.append(ssim(out, gt))
            rows.append({"what": f"default call, denoiser in {prec}", "size": size or "original", "precision": prec,
                         "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "seconds_per_image": float(np.mean(secs))})
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="64,128,256,original")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: List[Dict] = []
    for size in args.sizes.split(","):
        rows += measure(pipe, None if size == "original" else int(size), args.precisions.split(","), seeds)
    lines = ["| size | what | PSNR (dB) | SSIM | s / image |", "|---|---|---:|---:|---:|"]
    for r in rows:
        sec = f"{r['seconds_per_image']:.2f}" if "seconds_per_image" in r else "-"
        lines.append(f"| {r['size']} | {r['what']} | {r['psnr']:.3f} | {r['ssim']:.4f} | {sec} |")
    table = "\n".join(lines)
    print(table)
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "threads": args.threads, "seeds": seeds,
                               "cpu_has_fast_bf16": cpu_has_fast_bf16(), "torch": torch.__version__,
                               "rows": rows, "markdown": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
