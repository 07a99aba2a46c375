"""Which attention policy suits weights whose attention saw only small maps: judged on the
training photos (never on the eval photos), by the rule in docs/benchmarks.md ("Rule Q").

Each training photo is hazed over its depth prior with the name-seeded beta/airlight of
``eval_haze_params(name, 0)``, resized to each ``--sizes`` shorter side, and dehazed by the demo
default call under each candidate policy; the table gives mean PSNR/SSIM against the clear photo
and seconds per image.

    python experiments/attention_policy/attention_policy.py --sizes 128,256,384 --seeds 0,1 --json benchmarks/results/attention_policy.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm.data import builtin_photos, eval_haze_params, resize_photo, synthesize_haze
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.io import load_image, to_pil
from dehazeddpm.metrics import psnr, ssim
from dehazeddpm.utils import write_json

CANDIDATES: Dict[str, Dict] = {
    "whole map": {"attention_window": 0},
    "attention window 16": {"attention_window": 16},
    "attention window 32": {"attention_window": 32},
    "tiles 128": {"attention_window": 0, "tile_size": 128, "tile_overlap": 32},
}


def hazed_training_photos(size: int, limit: Optional[int] = None):
    """[(name, hazy 1x3xHxW, clear 1x3xHxW)] at shorter side ``size``, 8-bit like saved files."""
    out = []
    for name, (clear, depth) in list(builtin_photos("train").items())[:limit]:
        clear, depth = resize_photo(clear, depth, size)
        beta, airlight = eval_haze_params(name, 0)
        s = synthesize_haze(clear, depth, beta=beta, airlight=airlight)
        out.append((name, load_image(to_pil(s.hazy)), load_image(to_pil(s.clear))))
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="128,256,384")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--limit", type=int, default=None, help="first N training photos only (tests)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = args.candidates.split(",")
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        images = hazed_training_photos(size, args.limit)
        for cand in names:
            ps, ss, secs = [], [], []
            for seed in seeds:
                for _, hazy, clear in images:
                    t0 = time.perf_counter()
                    out = load_image(pipe(hazy, seed=seed, progress=False, **CANDIDATES[cand]).image)
                    secs.append(time.perf_counter() - t0)
                    ps.append(psnr(out, clear))
                    ss.append(ssim(out, clear))
            rows.append({"size": size, "candidate": cand, "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)),
                         "seconds_per_image": float(np.mean(secs))})
            print(f"| {size} | {cand} | {rows[-1]['psnr']:.3f} | {rows[-1]['ssim']:.4f} | "
                  f"{rows[-1]['seconds_per_image']:.2f} |", flush=True)
    if args.json:
        write_json(args.json, {"command": " ".join(sys.argv), "seeds": seeds, "threads": args.threads, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
