"""Does stage 1 do better at a fixed working size than at the image's own size? (Findings 10.)

Usage: ``python experiments/stage1_working_size/stage1_working_size.py [STAGE1.pth] [--size 128] [--sizes 64,96,192,256,original]``
(no file: the bundled ``demo`` stage 1).

Every *training* photo is resized (shorter side from ``--sizes``; ``original`` keeps it) and
hazed twice with seeded beta and airlight: over :func:`haze.depth_prior` and over a smooth random
depth field. The hazy image is rounded to 8 bits, as a saved file would be. For each size the
script prints the mean J PSNR (dB, over photos and both hazings) of stage 1

* ``direct``: run on the image as it is (the reference's way);
* ``working size``: :func:`working_size.stage1_at_size` (shorter side ``--size``);
* ``upsampled J`` (larger images only): the working-size J bilinearly upsampled, without the
  detail term, to show what that term is worth.

Nothing here looks at the eval photos.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]

from dehazeddpm import data as haze
from dehazeddpm.hub import resolve
from dehazeddpm.inference import stage1_at_size, working_shape
from dehazeddpm.io import load_stage1
from dehazeddpm.metrics import psnr

HAZE_SEED = 20261125


@torch.no_grad()
def scores(net: torch.nn.Module, size: Optional[int], working: int, limit: Optional[int] = None) -> Dict[str, float]:
    """Mean J PSNR per method over the training photos at shorter side ``size`` (None: original)."""
    photos = haze.builtin_photos("train")
    names = list(photos)[:limit]
    g = torch.Generator().manual_seed(HAZE_SEED)
    params = {n: [haze.random_haze_params(g) for _ in range(2)] for n in photos}  # fixed per photo
    acc: Dict[str, List[float]] = {}
    for name in names:
        clear, depth = photos[name]
        if size is not None:
            clear, depth = haze.resize_photo(clear, depth, size)
        h, w = clear.shape[-2:]
        field = haze.random_depth_field(h, w, generator=torch.Generator().manual_seed(sum(map(ord, name))))
        for (beta, airlight), d in zip(params[name], (None, field)):
            s = haze.synthesize_haze(clear, d, beta=beta, airlight=airlight)
            hazy, gt = (torch.round(s.hazy * 255) / 255)[None], s.clear[None]
            out = {"direct": net(hazy).J.clamp(0, 1), "working size": stage1_at_size(net, hazy, working).J}
            hw = working_shape(h, w, working)
            if hw[0] * hw[1] < h * w:
                small = F.interpolate(hazy, size=hw, mode="bilinear", align_corners=False, antialias=True)
                out["upsampled J"] = F.interpolate(net(small).J, size=(h, w), mode="bilinear",
                                                   align_corners=False).clamp(0, 1)
            for k, v in out.items():
                acc.setdefault(k, []).append(psnr(v, gt))
    return {k: float(np.mean(v)) for k, v in acc.items()}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stage1", nargs="?", help="stage-1 file (default: the registry's demo stage 1)")
    ap.add_argument("--size", type=int, default=128, help="working size (shorter side)")
    ap.add_argument("--sizes", default="64,96,192,256,original", help="image sizes (shorter side) to test")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N training photos")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    net = load_stage1(args.stage1 or resolve("demo", download=False).stage1).eval()
    print("| image size | direct | working size | upsampled J | working size - direct |")
    print("|---|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        t0 = time.time()
        r = scores(net, None if size == "original" else int(size), args.size, args.limit)
        up = f"{r['upsampled J']:.2f}" if "upsampled J" in r else "-"
        print(f"| {size} | {r['direct']:.2f} | {r['working size']:.2f} | {up} | "
              f"{r['working size'] - r['direct']:+.2f} |", flush=True)
        print(f"  ({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
