"""Where a denoiser is good and where it is not: its errors per noise level against "x0 = J".

Usage: ``python experiments/denoiser_noise_levels/denoiser_noise_levels.py [--stage1 P] [--denoiser P] [--photos train|eval]``
(default: the bundled ``demo`` weights on 8 fixed synthetic-haze crops of the training photos).

For each noise level gamma (the signal scale: x_t = gamma * x0 + sqrt(1 - gamma^2) * eps) it
prints the mean L1 error of the predicted noise and of the implied x0 (clipped to [-1, 1]), next
to the same errors of the trivial prediction "x0 = stage-1 J". A sampler started from pure noise
passes through the small-gamma rows first, where x0 = (x_t - sqrt(1 - gamma^2) eps) / gamma
multiplies every noise error by 1 / gamma; ``start_strength < 1`` skips them. The column
"of it, channel means" is the part of the noise error that is a constant per image and channel
(|spatial mean of eps_hat - eps|): the part GroupNorm hides from the network, which turns into a
colour cast of that size / gamma (see ``samplers.zero_mean``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm.data import SyntheticHazeDataset, builtin_photos
from dehazeddpm.diffusion import q_sample
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.io import images as imageio
from dehazeddpm.training import stage1_condition

GAMMAS = (0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage1", default=None, help="stage-1 file (default: the registry's demo entry)")
    ap.add_argument("--denoiser", default=None, help="denoiser file (default: the registry's demo entry)")
    ap.add_argument("--photos", choices=("train", "eval"), default="train")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--n", type=int, default=8, help="number of crops")
    ap.add_argument("--seed", type=int, default=99)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, denoiser=args.denoiser,
                                          download=False, progress=False)
    ds = SyntheticHazeDataset(builtin_photos(args.photos), crop=args.crop, length=args.n, seed=args.seed,
                              fixed=True, min_scale=0.25)
    items = [ds[i] for i in range(args.n)]
    hazy = torch.stack([it["hazy"] for it in items])
    x0 = imageio.to_signed(torch.stack([it["gt"] for it in items]))
    cond = stage1_condition(pipe.stage1, hazy)
    if pipe.denoiser.config.in_channel - pipe.denoiser.config.out_channel == 3:
        cond = cond[:, :3]
    j = cond[:, :3]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(args.seed))
    print("| gamma | noise L1 | of it, channel means | x0 L1 | noise L1 if x0 = J | x0 L1 of J |")
    print("|---:|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for g in GAMMAS:
            gamma = torch.full((args.n,), g)
            x_t = q_sample(gamma, x0, noise)
            eps = pipe.denoiser(torch.cat([cond, x_t], 1), gamma)
            s = (1 - g * g) ** 0.5
            x0_hat = ((x_t - s * eps) / g).clamp(-1, 1)
            eps_j = (x_t - g * j) / s
            dc = float((eps - noise).mean(dim=(-2, -1)).abs().mean())
            print(f"| {g} | {float((eps - noise).abs().mean()):.3f} | {dc:.3f} | {float((x0_hat - x0).abs().mean()):.3f} "
                  f"| {float((eps_j - noise).abs().mean()):.3f} | {float((j - x0).abs().mean()):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
