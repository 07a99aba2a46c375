"""Sampling cost of the default pipeline vs the reference test path, tiling memory, and quality.

One run, one machine, identical random weights for every comparison:

1. time per UNet evaluation of the released full-size config, reference attention
   (``set_attention_impl('reference')``, float32) vs the default path (SDPA; on CUDA also fp16
   autocast + channels_last), at ``--size``;
2. UNet evaluations counted with a wrapper through ``DehazePipeline`` for the reference test path
   (``sampler='ddpm', steps=None``: 2000 ancestral steps) and the default (DDIM,
   ``DEFAULT_STEPS``); denoising cost = evaluations x per-evaluation time, and their ratio;
3. peak memory of one denoiser evaluation on a ``--tiled-size`` image with ``--tile`` tiles
   (``TiledDenoiser``, 1 tile per batch) vs the untiled ``--tile`` x ``--tile`` image. CUDA:
   ``torch.cuda.max_memory_allocated``. CPU: peak resident set size (``VmHWM``) of a fresh
   subprocess, reset via ``/proc/self/clear_refs`` after set-up, minus the RSS before the call;
4. with the demo weights present, PSNR against ground truth of the default sampler vs full
   ancestral sampling on ``make_eval_set`` images (``--psnr-size`` shorter side): from pure
   noise (the reference path) and, when the weights set a default ``start_strength``, every
   ancestral step from that same start.

Writes JSON (``--out``) and prints a markdown table. Example (CPU, a few minutes)::

    python benchmarks/bench_sampling.py --device cpu --size 64 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]

from dehazeddpm import NoiseSchedule, Stage1Net, UNet, UNetConfig
from dehazeddpm.diffusion import RELEASED_SCHEDULE
from dehazeddpm.diffusion import CountingDenoiser as Counting
from dehazeddpm.inference import DehazePipeline, TiledDenoiser
from dehazeddpm.models import RELEASED_UNET as RELEASED_UNET_CONFIG
from dehazeddpm.options import DEFAULT_STEPS
from dehazeddpm.utils import write_json

RELEASED_UNET = RELEASED_UNET_CONFIG.to_dict()
# The CPU memory runs' UNet: the demo's widths with a fourth level (deeper than DEMO_UNET, so the
# tiled/untiled ratio covers attention at a downsampled level), kept as measured in sampling_cpu.json.
SMALL_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 32, "norm_groups": 16,
              "channel_mults": [1, 2, 4, 4], "attn_res": [16], "res_blocks": 1, "dropout": 0.0,
              "image_size": 128}
SCHEDULE = RELEASED_SCHEDULE


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _unet(cfg: Dict[str, Any], device: torch.device, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet.from_config(cfg).to(device).eval()


class _ZeroDenoiser(nn.Module):
    """Stand-in with the released config's interface, so counting 2000 steps costs nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.config = UNetConfig.from_dict(RELEASED_UNET)

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x[:, -3:])


# -- 1. per-evaluation time ---------------------------------------------------------------------------

def time_per_eval(device: torch.device, size: int, repeats: int) -> Dict[str, float]:
    unet = _unet(RELEASED_UNET, device)
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, 7, size, size, generator=g).to(device)
    nl = torch.tensor([0.5], device=device)

    def once(impl: str, fast: bool) -> float:
        unet.set_attention_impl(impl)
        if device.type == "cuda":  # weights layout: channels_last for the default path only
            unet.to(memory_format=torch.channels_last if fast else torch.contiguous_format)
        _sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            if fast and device.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    unet(x.contiguous(memory_format=torch.channels_last), nl)
            else:
                unet(x, nl)
        _sync(device)
        return time.perf_counter() - t0

    variants = {"reference": ("reference", False), "default": ("sdpa", True)}
    for impl, fast in variants.values():  # warm-up (allocator, kernels, oneDNN primitives)
        once(impl, fast)
    # Interleaved so both variants see the same background load on a shared machine.
    times: Dict[str, List[float]] = {k: [] for k in variants}
    for _ in range(repeats):
        for name, (impl, fast) in variants.items():
            times[name].append(once(impl, fast))
    return {k: statistics.median(v) for k, v in times.items()}


# -- 2. evaluation counts --------------------------------------------------------------------------------

def count_evals() -> Dict[str, int]:
    torch.manual_seed(0)
    counted = Counting(_ZeroDenoiser())
    pipe = DehazePipeline(Stage1Net().eval(), counted, NoiseSchedule.from_config(SCHEDULE), device="cpu")
    x = torch.rand(1, 3, 16, 16)
    pipe(x, sampler="ddpm", steps=None, seed=0, progress=False)
    reference = counted.calls
    counted.calls = 0
    pipe(x, seed=0, progress=False)
    return {"reference": reference, "default": counted.calls}


# -- 3. memory ------------------------------------------------------------------------------------------

def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mem_child(mode: str, size: int, tile: int, device: torch.device, unet_cfg: Dict[str, Any]) -> Dict[str, Any]:
    """Peak memory of one denoiser evaluation; run in a fresh process on CPU."""
    unet = _unet(unet_cfg, device)
    model: nn.Module = unet if mode == "full" else TiledDenoiser(unet, tile, tile // 4, tile_batch=1)
    x = torch.randn(1, 7, size, size, device=device)
    nl = torch.tensor([0.5], device=device)
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            model(x, nl)
        _sync(device)
        return {"peak_bytes": torch.cuda.max_memory_allocated(device) - base, "method": "cuda max_memory_allocated"}
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS
        f.write("5")
    base = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    with torch.inference_mode():
        model(x, nl)
    return {"peak_bytes": (_rss_kib("VmHWM") - base) * 1024, "seconds": time.perf_counter() - t0,
            "method": "CPU peak RSS (VmHWM after clear_refs) minus RSS before the call, fresh process, "
                      "MALLOC_MMAP_THRESHOLD_=131072"}


def measure_memory(device: torch.device, tiled_size: int, tile: int, unet_cfg: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for mode, size in (("tiled", tiled_size), ("full", tile)):
        if device.type == "cuda":
            out[mode] = mem_child(mode, size, tile, device, unet_cfg)
            continue
        cmd = [sys.executable, __file__, "--_mem-child", mode, "--_mem-size", str(size), "--tile", str(tile),
               "--device", "cpu", "--_mem-cfg", json.dumps(unet_cfg)]
        # A fixed glibc mmap threshold returns freed large blocks to the OS at once, so the peak
        # RSS is the peak of live tensors rather than of heap fragmentation across many tiles.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        r = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        out[mode] = json.loads(r.stdout.strip().splitlines()[-1])
    out["ratio"] = out["tiled"]["peak_bytes"] / out["full"]["peak_bytes"]
    return out


# -- 4. quality with the demo weights -----------------------------------------------------------------------

def demo_psnr(device: torch.device, size: int, n_images: int) -> Optional[Dict[str, Any]]:
    from dehazeddpm.data import make_eval_set
    from dehazeddpm.evaluation import DEFAULT_CALL, Pair, by_image, evaluate
    from dehazeddpm.hub import WeightsError
    try:
        pipe = DehazePipeline.from_pretrained("demo", device=device, progress=False)
    except (WeightsError, OSError, ValueError) as exc:
        return {"skipped": f"demo weights unavailable: {exc}"}
    runs: Dict[str, Any] = {"J": {"steps": 0}, "default": DEFAULT_CALL, "ancestral": {"sampler": "ddpm"}}
    start = pipe.defaults.start_strength
    if start is not None and start < 1:
        # every ancestral step from the default call's own start (J noised to `start`)
        runs["ancestral_same_start"] = {"sampler": "ddpm", "start_strength": start}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = [Pair(Path(h).stem, h, g) for h, g in make_eval_set(tmp, size=size, seed=0)[:n_images]]
        rows = evaluate(pipe, pairs, runs, seeds=[0])
    images = by_image(rows, metrics=("psnr",))
    for image in images:
        image.update({f"seconds_{r['run']}": r["seconds"] for r in rows if r["name"] == image["name"]})
    return {"images": images}


# -- driver ---------------------------------------------------------------------------------------------

def machine() -> str:
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    else:
        dev = f"CPU, {torch.get_num_threads()} torch threads, {os.cpu_count()} cores visible"
    return f"{dev}; torch {torch.__version__}; Python {platform.python_version()}; {platform.machine()}"


def markdown(res: Dict[str, Any]) -> str:
    t, c, m = res["time_per_eval_s"], res["evals"], res["memory"]
    lines = [
        f"Machine: {res['machine']}  ",
        f"Command: `{res['command']}`",
        "",
        "| quantity | reference test path | default | ratio |",
        "|---|---:|---:|---:|",
        f"| UNet evaluation, released config, {res['size']}x{res['size']} (s) | "
        f"{t['reference']:.4f} | {t['default']:.4f} | {t['reference'] / t['default']:.2f}x |",
        f"| UNet evaluations per image (counted) | {c['reference']} | {c['default']} | "
        f"{c['reference'] / c['default']:.0f}x |",
        f"| denoising cost per image (s, evaluations x time) | {res['cost_s']['reference']:.1f} | "
        f"{res['cost_s']['default']:.2f} | **{res['cost_ratio']:.0f}x** |",
        "",
        f"| peak memory, one denoiser evaluation ({res['memory_unet']}) | bytes |",
        "|---|---:|",
        f"| {res['tiled_size']}x{res['tiled_size']} tiled, tile {res['tile']} (overlap {res['tile'] // 4}, "
        f"1 tile/batch) | {m['tiled']['peak_bytes'] / 2**20:.1f} MiB |",
        f"| {res['tile']}x{res['tile']} untiled | {m['full']['peak_bytes'] / 2**20:.1f} MiB |",
        f"| ratio | **{m['ratio']:.2f}x** |",
        "",
        f"Memory method: {m['full']['method']}.",
    ]
    q = res.get("quality")
    if q and "images" in q:
        same = "psnr_ancestral_same_start" in q["images"][0]
        lines += ["", "| image (demo weights) | PSNR J | PSNR default (DDIM) | PSNR ancestral 2000 |"
                  + (" PSNR ancestral, default's start |" if same else "") + " s default | s ancestral |",
                  "|---|---:|---:|---:|" + ("---:|" if same else "") + "---:|---:|"]
        for r in q["images"]:
            extra = f" {r['psnr_ancestral_same_start']:.2f} |" if same else ""
            lines.append(f"| {r['name']} | {r['psnr_J']:.2f} | {r['psnr_default']:.2f} | {r['psnr_ancestral']:.2f} |"
                         f"{extra} {r['seconds_default']:.1f} | {r['seconds_ancestral']:.1f} |")
    elif q:
        lines += ["", f"Quality: {q['skipped']}"]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64, help="image side for the per-evaluation timing")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    ap.add_argument("--repeats", type=int, default=3, help="timed evaluations per variant (median)")
    ap.add_argument("--tiled-size", type=int, default=1024, help="image side for the tiled memory run")
    ap.add_argument("--tile", type=int, default=256, help="tile side (and the untiled comparison size)")
    ap.add_argument("--memory-unet", choices=("small", "released"), default=None,
                    help="UNet for the memory runs (default: released on CUDA, small (demo config) on CPU)")
    ap.add_argument("--psnr-size", type=int, default=48, help="shorter side of the eval images")
    ap.add_argument("--psnr-images", type=int, default=2)
    ap.add_argument("--skip-psnr", action="store_true")
    ap.add_argument("--out", default=None, help="JSON output (default benchmarks/results/sampling_<device>.json)")
    ap.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_mem-size", dest="mem_size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_mem-cfg", dest="mem_cfg", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    if args.mem_child:
        print(json.dumps(mem_child(args.mem_child, args.mem_size, args.tile, device, json.loads(args.mem_cfg))))
        return 0

    command = "python " + " ".join([str(Path(sys.argv[0]).as_posix())] + (sys.argv[1:] if argv is None else argv))
    res: Dict[str, Any] = {"machine": machine(), "command": command, "device": str(device), "size": args.size,
                           "default_steps": DEFAULT_STEPS, "tile": args.tile, "tiled_size": args.tiled_size}
    t0 = time.perf_counter()
    res["time_per_eval_s"] = time_per_eval(device, args.size, args.repeats)
    res["evals"] = count_evals()
    res["cost_s"] = {k: res["evals"][k] * res["time_per_eval_s"][k] for k in ("reference", "default")}
    res["cost_ratio"] = res["cost_s"]["reference"] / res["cost_s"]["default"]
    mem_name = args.memory_unet or ("released" if device.type == "cuda" else "small")
    res["memory_unet"] = ("released config" if mem_name == "released"
                          else "small UNet: demo config, inner 32, mults 1-2-4-4")
    res["memory"] = measure_memory(device, args.tiled_size, args.tile,
                                   RELEASED_UNET if mem_name == "released" else SMALL_UNET)
    if not args.skip_psnr:
        res["quality"] = demo_psnr(device, args.psnr_size, args.psnr_images)
    res["wall_s"] = time.perf_counter() - t0
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"sampling_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, res)
    print(markdown(res))
    print(f"\n(JSON: {out}; {res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
