"""How much a stage-1 net relies on the haze following the depth prior's layout.

Usage: ``python experiments/depth_shift/depth_shift.py STAGE1.pth [STAGE1.pth ...] [--n 48] [--crop 64]``
(no file: the bundled ``demo`` stage 1).

Every training photo without real depth is hazed over :func:`haze.depth_prior`, whose layout
(far at the top, bright = far) a network can learn instead of reading the haze off the image;
real depth, like the eval photo ``motorcycle``'s, does not follow it. This script takes ``--n``
fixed crops of the *training* photos and hazes each clear crop four ways with the same random
beta and airlight: over the crop's prior depth, the prior flipped upside down, a smooth random
field (:func:`haze.random_depth_field`) and a constant depth. It prints stage 1's J PSNR (dB)
for each, and the mean of the three shifted ones. Nothing here looks at the eval photos.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm import data as haze
from dehazeddpm.data import SyntheticHazeDataset
from dehazeddpm.hub import resolve
from dehazeddpm.io import load_stage1
from dehazeddpm.metrics import psnr

DEPTHS = ("prior", "flipped prior", "smooth random", "constant")


def hazed_variants(n: int, crop: int, seed: int = 4242) -> Dict[str, List[haze.HazySample]]:
    """``{depth kind: n HazySamples}``: the same clear crops and haze parameters under each depth."""
    ds = SyntheticHazeDataset(haze.builtin_photos("train"), crop=crop, length=n, seed=seed, fixed=True,
                              min_scale=0.25)
    g = torch.Generator().manual_seed(seed)
    out: Dict[str, List[haze.HazySample]] = {k: [] for k in DEPTHS}
    for i in range(n):
        item = ds[i]
        beta, airlight = haze.random_haze_params(g)
        # the crop's prior depth, recovered from its transmission t = exp(-beta * d)
        prior = (-torch.log(item["transmission"][0].clamp_min(1e-6)) / float(item["beta"])).clamp(0, 1)
        depths = {"prior": prior, "flipped prior": prior.flip(0),
                  "smooth random": haze.random_depth_field(crop, crop, generator=g),
                  "constant": torch.full((crop, crop), 0.7)}
        for kind, d in depths.items():
            out[kind].append(haze.synthesize_haze(item["gt"], d, beta=beta, airlight=airlight, normalize_depth=False))
    return out


@torch.no_grad()
def j_psnr(stage1: torch.nn.Module, samples: List[haze.HazySample]) -> float:
    return float(np.mean([psnr(stage1(s.hazy[None]).J.clamp(0, 1), s.clear[None]) for s in samples]))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage1", nargs="*", help="stage-1 files (default: the registry's demo stage 1)")
    ap.add_argument("--n", type=int, default=48, help="number of crops")
    ap.add_argument("--crop", type=int, default=64)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    files = args.stage1 or [str(resolve("demo", download=False).stage1)]
    variants = hazed_variants(args.n, args.crop)
    print("| stage 1 | " + " | ".join(DEPTHS) + " | shifted mean |")
    print("|---|" + "---:|" * (len(DEPTHS) + 1))
    for f in files:
        net = load_stage1(f).eval()
        scores = {k: j_psnr(net, v) for k, v in variants.items()}
        shifted = float(np.mean([scores[k] for k in DEPTHS[1:]]))
        print(f"| {Path(f).name} | " + " | ".join(f"{scores[k]:.2f}" for k in DEPTHS) + f" | {shifted:.2f} |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
