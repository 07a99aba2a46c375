"""How DDIM's quality depends on steps, eta and start_strength: the measurement behind the defaults.

Usage: ``python experiments/sampler_steps/sampler_steps.py [--steps 10,20,25,50,100] [--etas 0,1]
[--start-strengths 1] [--seeds 0,1,2] [--ddpm] [--photos train|eval] [--stage1 P] [--denoiser P]``
(default: the bundled ``demo`` weights on 8 fixed 64 px synthetic-haze crops of the *training*
photos, so choosing a default from it never looks at the eval photos).

Prints one row per (steps, eta, start_strength): the PSNR of the pipeline's output (8-bit, as a
user gets it) against ground truth, averaged over the crops and the seeds, with the per-seed
means and the UNet evaluations per image. Every other setting is the pipeline's default
(mean-free start noise). Stage 1's J is printed first for reference. ``--ddpm`` adds, per start
strength, the ancestral sampler over every step of the full schedule from that start (steps
``ddpm``, eta blank): what the DDIM rows are judged against.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm.data import SyntheticHazeDataset, builtin_photos
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.io import images as imageio
from dehazeddpm.metrics import psnr


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",")]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", default="10,20,25,50,100")
    ap.add_argument("--etas", default="0,1")
    ap.add_argument("--start-strengths", default="1")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--ddpm", action="store_true", help="add the ancestral sampler over every step per start strength")
    ap.add_argument("--photos", choices=("train", "eval"), default="train")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="number of crops")
    ap.add_argument("--stage1", default=None, help="stage-1 file (default: the registry's demo entry)")
    ap.add_argument("--denoiser", default=None, help="denoiser file (default: the registry's demo entry)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, denoiser=args.denoiser,
                                          download=False, progress=False)
    ds = SyntheticHazeDataset(builtin_photos(args.photos), crop=args.crop, length=args.n, seed=7919,
                              fixed=True, min_scale=0.25)
    items = [ds[i] for i in range(args.n)]

    def mean_psnr(**kw) -> Tuple[float, int]:
        """Mean PSNR over the crops, and the UNet evaluations per crop."""
        results = [pipe(it["hazy"], progress=False, **kw) for it in items]
        return (float(np.mean([psnr(imageio.load_image(r.image), it["gt"]) for r, it in zip(results, items)])),
                results[0].steps)

    def row(label: str, eta_label: str, strength: float, **kw) -> None:
        runs = [mean_psnr(start_strength=strength, seed=seed, **kw) for seed in _ints(args.seeds)]
        per_seed, evals = [p for p, _ in runs], runs[0][1]
        print(f"| {label} | {eta_label} | {strength:g} | {np.mean(per_seed):.2f} | "
              f"{', '.join(f'{v:.2f}' for v in per_seed)} | {evals} |", flush=True)

    strengths = [float(v) for v in args.start_strengths.split(",")]
    print(f"stage-1 J: {mean_psnr(steps=0)[0]:.2f} dB")
    print("| steps | eta | start_strength | PSNR (dB) | per seed | UNet evaluations |")
    print("|---:|---:|---:|---:|---|---:|")
    for steps in _ints(args.steps):
        for eta in [float(v) for v in args.etas.split(",")]:
            for strength in strengths:
                row(str(steps), f"{eta:g}", strength, sampler="ddim", steps=steps, eta=eta)
    if args.ddpm:
        for strength in strengths:
            row("ddpm", "", strength, sampler="ddpm", steps=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
