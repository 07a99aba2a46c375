"""One GPU check, one JSON: what runs and what it costs on a CUDA device, in under 8 minutes.

* which attention kernel runs (profiler kernel names of one SelfAttention call, fp32 and fp16);
* fp16 autocast against fp32 eps agreement of the released full-size UNet (random weights);
* seconds per evaluation and peak memory at 1600x1200, untiled and tiled (the tile that
  ``inference.device.choose_tile`` picks, else 512), in the auto precision;
* the tile heuristic's memory estimate against the measured peak;
* the default call end to end (stage 1 and 20 DDIM steps, random weights of the released
  layout) at 512x512 and 1600x1200: seconds and peak memory;
* one fine-tuning step of the released-size denoiser (256 px crops, batch 2, the auto precision
  with its gradient scaler): seconds and peak memory against ``dehazeddpm train --estimate``.

    python benchmarks/gpu_check.py --out gpu_check.json            # on a GPU
    python benchmarks/gpu_check.py --device cpu --tiny --out x.json  # the same code path, tiny, on a CPU
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.profiler import ProfilerActivity, profile

ROOT = Path(__file__).resolve().parents[1]

from dehazeddpm.diffusion import RELEASED_SCHEDULE, NoiseSchedule
from dehazeddpm.hub import get_entry
from dehazeddpm.inference import DehazePipeline, TiledDenoiser
from dehazeddpm.inference.device import (
    CUDA_BYTES_PER_PIXEL_CHANNEL,
    PrecisionDenoiser,
    autocast,
    choose_tile,
    resolve_precision,
    sync,
)
from dehazeddpm.models import SelfAttention, Stage1Net, UNet
from dehazeddpm.training import TrainConfig, estimate_memory
from dehazeddpm.utils import write_json

TINY_UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 16, "norm_groups": 8, "channel_mults": [1, 2],
             "attn_res": [8], "res_blocks": 1, "dropout": 0.0, "image_size": 16}


def attention_kernels(device: torch.device, precision: str) -> List[str]:
    attn = SelfAttention(128, norm_groups=32).to(device).eval()
    x = torch.randn(1, 128, 32, 48, device=device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        with autocast(precision, device):
            attn(x)
        sync(device)
    return sorted({e.key for e in prof.key_averages()
                   if any(w in e.key.lower() for w in ("attention", "flash", "efficient", "fmha", "softmax", "bmm"))})


def eps_agreement(unet: UNet, device: torch.device, hw, precision: str) -> Dict[str, float]:
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, 7, *hw, generator=g).to(device)
    nl = torch.tensor([0.5], device=device)
    with torch.inference_mode():
        ref = unet(x, nl).float()
        low = PrecisionDenoiser(unet, precision, device)(x, nl)
    d = (low - ref).abs()
    return {"precision": precision, "size": list(hw), "max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
            "eps_abs_mean": float(ref.abs().mean())}


def timed_eval(model: torch.nn.Module, device: torch.device, hw, repeats: int) -> Dict[str, Any]:
    x = torch.randn(1, 7, *hw, device=device)
    nl = torch.tensor([0.5], device=device)
    with torch.inference_mode():
        model(x, nl)  # warm-up: kernels, allocator
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x, nl)
            sync(device)
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(device) - base if device.type == "cuda" else None
    return {"seconds_per_eval": min(times), "peak_bytes": peak}


def _peak(device: torch.device) -> Optional[int]:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def end_to_end(unet: UNet, device: torch.device, sizes: List[Any]) -> Dict[str, Any]:
    """The default call (DDIM 20 from pure noise, the auto precision) per size: seconds, peak bytes."""
    torch.manual_seed(0)
    pipe = DehazePipeline(Stage1Net(), unet, NoiseSchedule.from_config(RELEASED_SCHEDULE), device)
    out: Dict[str, Any] = {}
    for h, w in sizes:
        image = torch.rand(1, 3, h, w)
        pipe(image, seed=0, steps=2, progress=False)  # warm-up
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        res = pipe(image, seed=0, sampler="ddim", steps=20, progress=False)
        out[f"{w}x{h}"] = {"seconds": res.timings["total"], "evaluations": res.evaluations,
                           "described": res.describe(), "peak_bytes": _peak(device)}
    return out


def finetune_step(unet_cfg: Dict[str, Any], device: torch.device, crop: int) -> Dict[str, Any]:
    """One optimiser step of the denoiser at ``crop`` px, batch 2, measured beside the estimate."""
    cfg = TrainConfig(stage="denoiser", stage1_checkpoint="unused.pth", unet=dict(unet_cfg), crop=crop, batch_size=2)
    estimate = estimate_memory(cfg, device)
    precision = resolve_precision(cfg.precision, device)
    net = UNet.from_config(unet_cfg).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    x = torch.rand(2, int(unet_cfg["in_channel"]), crop, crop, device=device) * 2 - 1
    level = torch.full((2,), 0.5, device=device)
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        with autocast(precision, device):
            loss = net(x, level).float().abs().mean()
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter() - t0)
    peak = _peak(device)
    return {"crop": crop, "batch": 2, "precision": precision, "seconds_per_step": min(times[1:]),
            "peak_bytes": peak, "estimate_bytes": estimate.total(2),
            "estimate_over_measured": estimate.total(2) / peak if peak else None}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny UNet at 64x96: the code path, not the numbers")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="gpu_check.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    t_start = time.perf_counter()
    cfg = TINY_UNET if args.tiny else get_entry("nh-haze").unet_config
    hw = (64, 96) if args.tiny else (1200, 1600)
    torch.manual_seed(0)
    unet = UNet.from_config(cfg).to(device).eval()
    if device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    precision = resolve_precision("auto", device)
    low = "fp16" if device.type == "cuda" else "bf16"
    report: Dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "auto_precision": precision, "unet": cfg,
        "attention_kernels": {p: attention_kernels(device, p) for p in ("fp32", low)},
        "eps_agreement": eps_agreement(unet, device, (128, 128) if args.tiny else (512, 512), low),
    }
    auto = PrecisionDenoiser(unet, precision, device)
    tile = choose_tile(*hw, device, int(cfg["inner_channel"])) if device.type == "cuda" else None
    tile = tile or (32 if args.tiny else 512)
    report["untiled"] = timed_eval(auto, device, hw, args.repeats)
    # wrapped as the pipeline wraps it: precision and layout inside the tiles
    report["tiled"] = {"tile": tile, **timed_eval(TiledDenoiser(auto, tile, tile // 4), device, hw, args.repeats)}
    estimate = hw[0] * hw[1] * int(cfg["inner_channel"]) * CUDA_BYTES_PER_PIXEL_CHANNEL
    measured = report["untiled"]["peak_bytes"]
    report["tile_heuristic"] = {"estimate_bytes_untiled": estimate, "measured_peak_bytes_untiled": measured,
                                "estimate_over_measured": estimate / measured if measured else None}
    report["end_to_end"] = end_to_end(unet, device, [(64, 96)] if args.tiny else [(512, 512), (1200, 1600)])
    report["finetune_step"] = finetune_step(cfg, device, 32 if args.tiny else 256)
    report["seconds_total"] = time.perf_counter() - t_start
    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
