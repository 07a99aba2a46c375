"""The demo default call as a user meets it: wall time against an older checkout, side by side in
one run, and peak memory on a large photo.

* ``--baseline DIR``: a checkout of an earlier commit (``git worktree add /tmp/base <commit>``);
  both run the same photo in fresh processes, alternated ``--rounds`` times so that both see the
  same background load; the table gives the best time of each and their ratio;
* peak memory of the default call on a ``--big`` x ``--big`` image: peak RSS (VmHWM) of a fresh
  process minus its RSS just before the call (Linux), the default call as the CLI runs it.

    python benchmarks/default_call.py --baseline /tmp/base --json benchmarks/results/default_call_cpu.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter whose PYTHONPATH is the checkout to time; it knows both the layered
# package and the flat one that came before it.
CHILD = r"""
import json, sys, time
from pathlib import Path
# an editable install maps the package to its own checkout whatever sys.path says: drop that hook
sys.meta_path = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
import dehazeddpm
assert Path(dehazeddpm.__file__).resolve().is_relative_to(Path(sys.argv[1]).resolve()), dehazeddpm.__file__
import torch
torch.set_num_threads(int(sys.argv[4]))
try:
    from dehazeddpm.inference import DehazePipeline
except ImportError:
    from dehazeddpm.pipeline import DehazePipeline
from PIL import Image

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

def evaluations(res):  # DehazeResult.steps before 0.4
    return res.evaluations if hasattr(res, "evaluations") else res.steps

img = Image.open(sys.argv[2]).convert("RGB")
pipe = DehazePipeline.from_pretrained("demo", device="cpu", progress=False)
mode = sys.argv[3]
if mode == "time":
    pipe(img, seed=0, progress=False)  # warm-up
    times = []
    for _ in range(2):
        t0 = time.perf_counter(); res = pipe(img, seed=0, progress=False); times.append(time.perf_counter() - t0)
    print(json.dumps({"seconds": min(times), "steps": evaluations(res), "package": dehazeddpm.__file__}))
else:
    open("/proc/self/clear_refs", "w").write("5")
    base = rss("VmRSS")
    t0 = time.perf_counter()
    res = pipe(img, seed=0, progress=False)
    print(json.dumps({"peak_bytes": rss("VmHWM") - base, "seconds": time.perf_counter() - t0, "steps": evaluations(res),
                      "package": dehazeddpm.__file__}))
"""


def photo(path: Path, hw) -> Path:
    """The motorcycle eval photo, hazed, resized and centre-cropped to ``hw``, saved once."""
    import tempfile

    from PIL import Image

    from dehazeddpm.data import make_eval_set

    if not path.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            hazy = Image.open(make_eval_set(tmp)[0][0]).convert("RGB")
        h, w = hw
        s = max(h / hazy.height, w / hazy.width)
        big = hazy.resize((round(hazy.width * s), round(hazy.height * s)), Image.BICUBIC)
        left, top = (big.width - w) // 2, (big.height - h) // 2
        big.crop((left, top, left + w, top + h)).save(path)
    return path


def child(root: Path, image: Path, mode: str, threads: int) -> Dict[str, Any]:
    env = {**os.environ, "DEHAZEDDPM_OFFLINE": "1", "PYTHONPATH": str(root)}
    if mode == "memory":
        # freed large blocks go back to the OS at once, so the peak RSS is the peak of live
        # tensors rather than of heap fragmentation; never for timings (every allocation an mmap)
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    # run from the checkout too: `python -c` puts the working folder first on sys.path
    r = subprocess.run([sys.executable, "-c", CHILD, str(root), str(Path(image).resolve()), mode, str(threads)],
                       capture_output=True, text=True, env=env, check=True, cwd=str(root))
    return json.loads(r.stdout.strip().splitlines()[-1])


def flop_floor(image: Path, seconds: float) -> Dict[str, Any]:
    """This checkout's default call counted by ``torch.utils.flop_counter`` (convolutions, matrix
    products, attention: what the call runs, tiles and overlaps included), this CPU's bf16 matmul
    rate (2048^3, best of 5: the cost model's yardstick) and the floor FLOPs / rate."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from dehazeddpm.inference import DehazePipeline

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from cost_model import matmul_rate

    pipe = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False)
    counter = FlopCounterMode(display=False)
    with counter:
        pipe(str(image), seed=0, progress=False)
    rate = matmul_rate(torch.bfloat16)
    flops = counter.get_total_flops()
    return {"flops": flops, "bf16_matmul_flops_per_s": rate, "floor_seconds": flops / rate,
            "measured_over_floor": seconds / (flops / rate)}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", default=None, help="checkout of the commit to compare with")
    ap.add_argument("--size", default="384x512", help="HxW of the timed photo")
    ap.add_argument("--big", type=int, default=2000, help="side of the memory photo (0: skip)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workdir", default=str(ROOT / "runs" / "default_call"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.split("x"))
    timed = photo(work / f"hazy_{h}x{w}.png", (h, w))
    report: Dict[str, Any] = {"command": " ".join(sys.argv), "threads": args.threads, "size": [h, w]}
    roots = {"this checkout": ROOT}
    if args.baseline:
        roots["baseline"] = Path(args.baseline)
    runs: Dict[str, List[Dict[str, Any]]] = {k: [] for k in roots}
    for _ in range(args.rounds):
        for name, root in roots.items():
            runs[name].append(child(root, timed, "time", args.threads))
    report["time"] = {k: {"seconds": min(r["seconds"] for r in v), "steps": v[0]["steps"], "package": v[0]["package"]}
                      for k, v in runs.items()}
    if args.baseline:
        report["speedup"] = report["time"]["baseline"]["seconds"] / report["time"]["this checkout"]["seconds"]
    report["floor"] = flop_floor(timed, report["time"]["this checkout"]["seconds"])
    if args.big:
        big = photo(work / f"hazy_{args.big}x{args.big}.png", (args.big, args.big))
        report["memory"] = {"size": [args.big, args.big], **child(ROOT, big, "memory", args.threads),
                            "method": "peak RSS (VmHWM after clear_refs) minus RSS before the call, fresh process"}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
