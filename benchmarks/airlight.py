"""Why the demo's stage 1 leaves a colour cast: its airlight estimate against the true one, per eval pair.

Usage::

    python benchmarks/airlight.py [--size 128] [--stage1 FILE] [--json out.json]

For each eval photo and haze kind (depth, nh, dense; ``make_eval_set``, held out from training):
the true airlight (its mean over the image for the non-homogeneous kinds), stage 1's A (one RGB
value per image), how far each is from grey (max minus min channel), and the signed error of the
mean b* (CIE Lab; > 0 yellow, < 0 blue) of the hazy input and of stage 1's J against the ground
truth. A J whose b* error is larger than the hazy input's, opposite to the airlight's tint, is
haze removed as if the airlight were grey: the tint left behind is divided by T.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

from dehazeddpm.data import EVAL_HAZE, make_eval_set
from dehazeddpm.hub import WeightsError
from dehazeddpm.inference import DehazePipeline, pin_threads
from dehazeddpm.io import CheckpointError, ImageReadError, load_image
from dehazeddpm.metrics import mean_ab
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--stage1", default=None, help="a stage-1 file (default: the demo's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "airlight.json"))
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", stage1=args.stage1, download=False, progress=False)
    rows: List[Dict[str, Any]] = []
    for kind in EVAL_HAZE:
        with tempfile.TemporaryDirectory() as tmp:
            pairs = make_eval_set(tmp, size=args.size, kind=kind)
            params = json.loads((Path(tmp) / "params.json").read_text())["images"]
            for h, g in pairs:
                hazy, gt = load_image(h), load_image(g)
                out = pipe.stage1_outputs(hazy, size=pipe.defaults.stage1_size)
                true = params[h.stem].get("mean_airlight", params[h.stem].get("airlight"))
                est = [round(float(v), 3) for v in out.A.flatten()]
                _, b_gt = mean_ab(gt)
                row = {"kind": kind, "name": h.stem, "true_airlight": [round(v, 3) for v in true], "stage1_A": est,
                       "true_tint": round(max(true) - min(true), 3), "stage1_tint": round(max(est) - min(est), 3),
                       "db_hazy": mean_ab(hazy)[1] - b_gt, "db_J": mean_ab(out.J)[1] - b_gt}
                rows.append(row)
                print(f"{kind:5s} {h.stem:12s} airlight {row['true_airlight']} (tint {row['true_tint']:.2f})  "
                      f"stage 1 A {est} (tint {row['stage1_tint']:.2f})  b* error: hazy {row['db_hazy']:+6.1f}, "
                      f"J {row['db_J']:+6.1f}", flush=True)
    write_json(args.json, {"command": "python benchmarks/airlight.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           "stage1": args.stage1 or "demo", "size": args.size, "rows": rows})
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, ImageReadError, WeightsError) as exc:  # a bad file given: one line, no traceback
        sys.exit(f"airlight.py: {exc}")
