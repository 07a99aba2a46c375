"""Rule T1 (docs/benchmarks.md): which tile side and overlap the demo's default call should use.

Usage::

    python benchmarks/tiles.py [--names astronaut,...] [--sizes 256,384] [--seeds 0,1]
                               [--json benchmarks/results/tiles_rule_t1.json]

For each candidate (tile, overlap): mean PSNR / SSIM of the default call with only those two
changed, per (haze kind, size) cell on training photos (never the eval photos), and the seconds
of that call on a 512x384 hazy photo (min of ``--repeats`` after a warm-up, all candidates in this
one process). Applies the rule and prints the table and the pick.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from PIL import Image

from dehazeddpm.data import make_eval_set
from dehazeddpm.evaluation import Pair, evaluate, summarize
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES: List[Tuple[int, int]] = [(128, 32), (128, 16), (128, 8), (128, 0), (136, 8), (144, 16), (160, 32)]
TODAY = (128, 32)
MAX_PSNR_DROP, MAX_SSIM_DROP, MIN_SPEEDUP = 0.05, 0.005, 1.10


def timed_photo(folder: str) -> torch.Tensor:
    """The eval set's first hazy photo resized to 512x384 (what benchmarks/default_call.py times)."""
    hazy = Image.open(make_eval_set(folder)[0][0]).convert("RGB").resize((512, 384), Image.BICUBIC)
    return torch.from_numpy(__import__("numpy").asarray(hazy, dtype="float32") / 255).permute(2, 0, 1)[None]


def seconds(pipe: DehazePipeline, image: torch.Tensor, options: Dict[str, Any], repeats: int) -> float:
    pipe(image, seed=0, progress=False, **options)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pipe(image, seed=0, progress=False, **options)
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", default="astronaut,coffee,chelsea,department_store,luispedro,aero")
    ap.add_argument("--sizes", default="256,384")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--haze", default="depth,nh")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "tiles_rule_t1.json"))
    ap.add_argument("--cells", default=None, help="take the quality cells from this earlier JSON (time only)")
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    names = args.names.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)
    runs = {f"{t}/{o}": {"tile_size": t, "tile_overlap": o} for t, o in CANDIDATES}
    cells: Dict[str, Dict[str, Dict[str, float]]] = {run: {} for run in runs}
    t0 = time.time()
    if args.cells:
        cells = json.loads(Path(args.cells).read_text())["cells"]
    for kind in ([] if args.cells else args.haze.split(",")):
        for size in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                pairs = [Pair(h.stem, h, g) for h, g in
                         make_eval_set(tmp, size=size, seed=0, kind=kind, split="train", names=names)]
                for s in summarize(evaluate(pipe, pairs, runs, seeds)):
                    cells[s["run"]][f"{kind} {size}"] = {"psnr": s["psnr"], "ssim": s["ssim"]}
                    print(f"{kind} {size} {s['run']:7s} PSNR {s['psnr']:.3f} SSIM {s['ssim']:.4f}", flush=True)
    if args.repeats == 0:  # quality only: time in a quiet moment with --cells
        write_json(args.json, {"cells": cells, "names": names, "sizes": sizes, "seeds": seeds})
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        image = timed_photo(tmp)
        speed = {run: seconds(pipe, image, opts, args.repeats) for run, opts in runs.items()}
    today = f"{TODAY[0]}/{TODAY[1]}"
    ok = {run: all(c["psnr"] >= cells[today][k]["psnr"] - MAX_PSNR_DROP and c["ssim"] >= cells[today][k]["ssim"]
                   - MAX_SSIM_DROP for k, c in cells[run].items()) for run in runs}
    fastest = min((r for r in runs if ok[r]), key=lambda r: speed[r])
    pick = fastest if speed[today] / speed[fastest] >= MIN_SPEEDUP else today
    keys = list(cells[today])
    table = ["| tile / overlap | " + " | ".join(f"{k} PSNR / SSIM" for k in keys) + " | s at 512x384 | acceptable |",
             "|---|" + "---|" * len(keys) + "---|---|"]
    table += [f"| {run} | " + " | ".join(f"{cells[run][k]['psnr']:.2f} / {cells[run][k]['ssim']:.4f}" for k in keys)
              + f" | {speed[run]:.2f} | {'yes' if ok[run] else 'no'} |" for run in runs]
    print("\n".join(table))
    print(f"Rule T1 picks {pick} ({speed[today] / speed[pick]:.2f}x today's speed)")
    write_json(args.json, {"command": "python benchmarks/tiles.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "torch": torch.__version__,
                           "names": names, "sizes": sizes, "seeds": seeds, "cells": cells, "seconds": speed,
                           "acceptable": ok, "pick": pick, "markdown": "\n".join(table),
                           "wall_seconds": round(time.time() - t0, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
