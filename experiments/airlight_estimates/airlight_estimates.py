"""Can stage 1's airlight be estimated well enough for the scattering model to fix J's colour?

Usage: ``python experiments/airlight_estimates/airlight_estimates.py [--steps 3000] [--lr 1e-3]
[--threads 2] [--json out.json]``

``benchmarks/airlight.py`` found that solving ``I = J T + A (1 - T)`` with the demo stage 1's own T
and the *true* airlight leaves far less colour error than J, and that stage 1's A is what is off.
This script scores airlight estimates that need no ground truth on the judge photos (``judge`` and
``independent`` splits, none trained on; 128 px, haze seeds 0-2, depth / nh / dense haze as
``make_eval_set`` lays it):

- ``true airlight (not an estimate)``: the bar, ``benchmarks/airlight.py``'s row;
- ``stage 1's A``: the network's airlight head;
- ``thickest pixels``: the mean of ``(I - J T) / (1 - T)`` over the 5% of pixels stage 1's T calls
  thickest, with stage 1's J and T;
- ``least squares``: the one colour A that best fits ``I - J T = A (1 - T)`` over the image;
- ``A head fine-tuned``: stage 1 with only its airlight head trained ``--steps`` more steps on its
  L1 to the true airlight (everything else frozen; the 25 ``train_wide`` photos, depth and
  non-homogeneous haze with tinted airlight, as the demo rounds' data).

For each: the mean absolute error per channel against the true airlight (its mean over the image),
and the PSNR and mean |a*|, |b*| errors of the scene solved with it and stage 1's T.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dehazeddpm.data import SyntheticHazeDataset, builtin_photos, eval_haze, resize_photo
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.io import load_image, load_stage1, save_stage1, to_pil
from dehazeddpm.metrics import mean_ab, psnr
from dehazeddpm.models import Stage1Net
from dehazeddpm.physics import invert
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[2]
KINDS = ("depth", "nh", "dense")
Estimator = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def thickest_pixels(hazy: torch.Tensor, J: torch.Tensor, T: torch.Tensor, share: float = 0.05) -> torch.Tensor:
    """(1, 3, 1, 1): mean of (I - J T) / (1 - T) over the ``share`` of pixels with the lowest T."""
    t = T.flatten()
    idx = t.topk(max(1, int(share * t.numel())), largest=False).indices
    i, j = hazy.flatten(2)[0][:, idx], J.flatten(2)[0][:, idx]
    return ((i - j * t[idx]) / (1 - t[idx]).clamp_min(0.05)).mean(1).clamp(0, 1).view(1, 3, 1, 1)


def least_squares(hazy: torch.Tensor, J: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """(1, 3, 1, 1): argmin over one colour A of ||I - J T - A (1 - T)||^2."""
    w = 1 - T
    return (((hazy - J * T) * w).sum((2, 3), keepdim=True) / (w * w).sum((2, 3), keepdim=True).clamp_min(1e-6)).clamp(0, 1)


def finetune_airlight_head(steps: int, lr: float, batch: int = 8, seed: int = 11) -> Stage1Net:
    """The demo stage 1 with its airlight head (reference ``ANet``) trained ``steps`` more steps."""
    net = load_stage1(ROOT / "dehazeddpm" / "assets" / "demo_stage1.pth", device="cpu").float()
    for p in net.parameters():
        p.requires_grad_(False)
    head = net.ANet.train()
    for p in head.parameters():
        p.requires_grad_(True)
    ds = SyntheticHazeDataset(builtin_photos("train_wide"), crop=128, length=steps * batch, seed=seed, min_scale=0.25,
                              augment=True, random_depth=0.25, nonhomogeneous=0.5, airlight_cast=0.75)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    for step, item in enumerate(DataLoader(ds, batch_size=batch)):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / steps))
        loss = F.l1_loss(head(item["hazy"]).clamp(0, 1), item["airlight"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"  A head step {step}: L1 {loss.item():.4f}", flush=True)
    return net.eval()


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3000, help="fine-tuning steps of the A head (0: skip)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--haze-seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "experiments" / "airlight_estimates" / "airlight_estimates.json"))
    args = ap.parse_args(argv)
    try:
        seeds = [int(s) for s in args.haze_seeds.split(",")]
    except ValueError as exc:
        ap.error(f"--haze-seeds: integers: {exc}")
    if args.steps < 0 or args.size < 1 or not args.lr > 0:
        ap.error("--steps must be >= 0, --size >= 1 and --lr > 0")
    pin_threads(args.threads)
    t0 = time.time()
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)
    tuned = finetune_airlight_head(args.steps, args.lr) if args.steps else None
    estimators: Dict[str, Estimator] = {
        "true airlight (not an estimate)": lambda hazy, J, T, A, true: true,
        "stage 1's A": lambda hazy, J, T, A, true: A,
        "thickest pixels": lambda hazy, J, T, A, true: thickest_pixels(hazy, J, T),
        "least squares": lambda hazy, J, T, A, true: least_squares(hazy, J, T),
    }
    if tuned is not None:  # its A as the pipeline runs stage 1 (working size, padding)
        with tempfile.TemporaryDirectory() as tmp:
            tuned_pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=save_stage1(tuned, Path(tmp) / "s1.pth"),
                                                        download=False, progress=False)
        estimators["A head fine-tuned"] = lambda hazy, J, T, A, true: tuned_pipe.stage1_as_called(hazy).A
    photos = {**builtin_photos("judge"), **builtin_photos("independent")}
    cells: Dict[str, Dict[str, Dict[str, float]]] = {}
    for kind in KINDS:
        sums: Dict[str, Dict[str, float]] = {k: {"A_abs_error": 0.0, "psnr": 0.0, "abs_da": 0.0, "abs_db": 0.0}
                                             for k in estimators}
        n = 0
        for seed in seeds:
            for name, (clear, depth) in photos.items():
                clear, depth = resize_photo(clear, depth, args.size)
                sample = eval_haze(name, clear, depth, kind=kind, seed=seed)
                hazy, gt = load_image(to_pil(sample.hazy)), sample.clear.unsqueeze(0)
                out = pipe.stage1_as_called(hazy)
                a_gt, b_gt = mean_ab(gt)
                n += 1
                for label, estimate in estimators.items():
                    with torch.no_grad():
                        A = estimate(hazy, out.J, out.T, out.A, sample.airlight.view(1, 3, 1, 1))
                    scene = invert(hazy, out.T, A)
                    a, b = mean_ab(scene)
                    s = sums[label]
                    s["A_abs_error"] += float((A.flatten() - sample.airlight.flatten()).abs().mean())
                    s["psnr"] += psnr(scene, gt)
                    s["abs_da"] += abs(a - a_gt)
                    s["abs_db"] += abs(b - b_gt)
        cells[kind] = {label: {k: v / n for k, v in s.items()} for label, s in sums.items()}
        for label, s in cells[kind].items():
            print(f"{kind:5s} {label:31s} A error {s['A_abs_error']:.3f}  solved scene {s['psnr']:.2f} dB  "
                  f"|da| {s['abs_da']:.1f} |db| {s['abs_db']:.1f}", flush=True)
    write_json(args.json, {"command": "python experiments/airlight_estimates/airlight_estimates.py "
                           + " ".join(sys.argv[1:] if argv is None else argv),
                           "photos": list(photos), "size": args.size, "haze_seeds": args.haze_seeds,
                           "steps": args.steps, "lr": args.lr, "torch": torch.__version__,
                           "seconds": round(time.time() - t0, 1), "cells": cells})
    return 0


if __name__ == "__main__":
    sys.exit(main())
