"""What fine-tuning the released denoiser needs in memory, and how close ``--estimate`` comes.

Usage::

    python benchmarks/train_memory.py [--crops 128,256,512] [--measure 128,256] [--batch 4]
                                      [--json benchmarks/results/train_memory_cpu.json]

For each crop: the estimate ``dehazeddpm train denoiser --estimate`` prints for the released
UNet in fp16 (what a T4 runs; measured as bf16 here, the same bytes) from a 64 px measurement,
the total at ``--batch`` and the largest batch that fits 15 GB; for the ``--measure`` crops also
the activation bytes of a step measured at that crop itself, and the estimate's error.
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import List, Optional

import torch

from dehazeddpm.inference import pin_threads
from dehazeddpm.models import RELEASED_UNET
from dehazeddpm.training import TrainConfig, estimate_memory
from dehazeddpm.training.memory import GB
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crops", default="128,256,512")
    ap.add_argument("--measure", default="128,256")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "train_memory.json"))
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    crops = [int(c) for c in args.crops.split(",")]
    measure = {int(c) for c in args.measure.split(",") if c}
    rows = []
    for crop in crops:
        cfg = TrainConfig(stage="denoiser", stage1_checkpoint="unused.pth", unet=RELEASED_UNET.to_dict(), crop=crop,
                          batch_size=args.batch, precision="fp16", ema_decay=0.9999)
        est = estimate_memory(cfg, measure_crop=64)
        row = {"crop": crop, "parameters": est.parameters, "fixed_bytes": sum(est.fixed.values()),
               "activations_per_sample": est.activations_per_sample, "total_at_batch": est.total(args.batch),
               "largest_batch_15GB": est.largest_batch(15 * GB)}
        if crop in measure:
            t0 = time.perf_counter()
            real = estimate_memory(cfg, measure_crop=crop)
            row.update(measured_activations_per_sample=real.activations_per_sample,
                       error=est.activations_per_sample / real.activations_per_sample - 1,
                       measure_seconds=round(time.perf_counter() - t0, 1))
        rows.append(row)
        print(row, flush=True)
    table = ["| crop | fixed (weights, grads, Adam, EMA, stage 1) | activations / sample | "
             f"step at batch {args.batch} | largest batch in 15 GB | measured at the crop | estimate error |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['crop']} | {r['fixed_bytes'] / GB:.2f} GB | {r['activations_per_sample'] / GB:.2f} GB | "
              f"{r['total_at_batch'] / GB:.2f} GB | {r['largest_batch_15GB']} | "
              + (f"{r['measured_activations_per_sample'] / GB:.2f} GB | {r['error']:+.1%} |"
                 if "error" in r else "- | - |") for r in rows]
    print("\n".join(table))
    write_json(args.json, {"command": "python benchmarks/train_memory.py " + " ".join(argv or sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
                           "torch": torch.__version__, "rows": rows, "markdown": "\n".join(table)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
