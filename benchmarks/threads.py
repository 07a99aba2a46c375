"""The default call on a shared CPU: idle against beside one busy process, with the threads the
pipeline chooses (``choose_threads``) and with 2 forced (``DEHAZEDDPM_THREADS=2``, what torch
takes by itself on this 2-core machine).

    python benchmarks/threads.py [--size 384x512] [--json benchmarks/results/threads_cpu.json]

The busy process is one Python loop that never sleeps. Min of ``--repeats`` calls after a warm-up.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image

from dehazeddpm.data import make_eval_set
from dehazeddpm.inference import DehazePipeline
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]


def best(pipe: DehazePipeline, image: torch.Tensor, repeats: int) -> Dict[str, float]:
    pipe(image, seed=0, progress=False)
    runs = [pipe(image, seed=0, progress=False) for _ in range(repeats)]
    fastest = min(runs, key=lambda r: r.timings["total"])
    return {"seconds": fastest.timings["total"], "threads": fastest.threads}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="384x512")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "threads.json"))
    args = ap.parse_args(argv)
    h, w = (int(v) for v in args.size.split("x"))
    pipe = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        hazy = Image.open(make_eval_set(tmp)[0][0]).convert("RGB").resize((w, h), Image.BICUBIC)
    image = torch.from_numpy(np.asarray(hazy, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    rows: Dict[str, Dict[str, float]] = {}
    for busy in (False, True):
        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
        try:
            time.sleep(1.0 if busy else 0)
            for forced in (None, "2", "1"):
                if forced is None:
                    os.environ.pop("DEHAZEDDPM_THREADS", None)
                else:
                    os.environ["DEHAZEDDPM_THREADS"] = forced
                name = f"{'busy' if busy else 'idle'}, {'chosen' if forced is None else forced + ' forced'}"
                rows[name] = best(pipe, image, args.repeats)
                print(f"{name:16s} {rows[name]['seconds']:6.2f} s on {rows[name]['threads']} threads", flush=True)
        finally:
            os.environ.pop("DEHAZEDDPM_THREADS", None)
            if spin is not None:
                spin.kill()
                spin.wait()
    idle = rows["idle, chosen"]["seconds"]
    table = ["| CPU | threads | seconds | vs idle |", "|---|---|---|---|"]
    table += [f"| {name} | {r['threads']} | {r['seconds']:.2f} | {r['seconds'] / idle:.2f}x |" for name, r in rows.items()]
    print("\n".join(table))
    write_json(args.json, {"command": "python benchmarks/threads.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d"), "size": [h, w], "cores": os.cpu_count(),
                           "torch": torch.__version__, "rows": rows, "markdown": "\n".join(table)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
