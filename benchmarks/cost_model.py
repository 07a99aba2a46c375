"""What a call costs and how far this machine is from its limit: FLOPs, achieved FLOP/s, projections.

In one run:

1. this machine's matmul rate (2048^3 fp32 and bf16 matmuls, best of several), the yardstick;
2. FLOPs of one UNet evaluation and of stage 1 for the demo and released configs at 256x256,
   512x512 and 1600x1200 (``torch.utils.flop_counter`` on meta tensors: convolutions, matmuls and
   attention), and per image for each entry's default call (stage 1 at its working size + the
   default number of evaluations x one evaluation at the denoiser's working size, padded to the
   networks' multiple of 16);
3. seconds per UNet evaluation measured here (reference formulation: einsum attention in fp32;
   auto: fused attention in the auto precision) at 256x256 and 512x512, the achieved FLOP/s and
   its fraction of the matmul rate, and eps agreement of auto against the reference;
4. projected GPU times, labelled as projections: FLOPs / peak dense rate (T4 fp16 tensor cores,
   H200 bf16), a lower bound that real kernels do not reach.

    python benchmarks/cost_model.py --json benchmarks/results/cost_model_cpu.json
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]

from dehazeddpm.diffusion import sampling_schedule
from dehazeddpm.diffusion.schedule import NoiseSchedule
from dehazeddpm.hub import get_entry
from dehazeddpm.inference import PrecisionDenoiser, pin_threads, resolve_precision, working_shape
from dehazeddpm.inference.device import denoiser_layout
from dehazeddpm.models import Stage1Net, UNet, set_attention_window
from dehazeddpm.utils import write_json

SIZES = {"256x256": (256, 256), "512x512": (512, 512), "1600x1200": (1200, 1600)}
# Peak dense rates (vendor data sheets): what a projection divides by.
PEAKS = {"T4 fp16 tensor cores": 65e12, "H200 bf16 dense": 989e12}


def matmul_rate(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(repeats))
    return 2 * n ** 3 / best


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops(build, shape, window: int = 0) -> int:
    with torch.device("meta"):
        net = build().eval()
        args = [torch.empty(*shape)] + ([torch.empty(1)] if isinstance(net, UNet) else [])
        with FlopCounterMode(display=False) as fc, set_attention_window(net, window):
            net(*args)
    return int(fc.get_total_flops())


def eval_seconds(unet: UNet, hw, precision: str, impl: str, repeats: int) -> Dict[str, Any]:
    """Seconds per evaluation the way the pipeline runs one: weights and input in the precision's
    layout (:func:`denoiser_layout`; a channels_last input against contiguous weights would time
    the layout copies instead)."""
    unet.set_attention_impl(impl)
    unet.to(memory_format=denoiser_layout(precision, torch.device("cpu")))
    model = unet if precision == "fp32" else PrecisionDenoiser(unet, precision, torch.device("cpu"))
    x = torch.randn(1, 7, *hw, generator=torch.Generator().manual_seed(0))
    nl = torch.tensor([0.5])
    with torch.inference_mode():
        out = model(x, nl).float()
        best = min(_time(lambda: model(x, nl)) for _ in range(repeats))
    unet.set_attention_impl("sdpa")
    return {"seconds": best, "eps": out}


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--time-sizes", default="256x256,512x512", help="sizes timed on this CPU")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    cpu = torch.device("cpu")
    auto = resolve_precision("auto", cpu)
    report: Dict[str, Any] = {"command": " ".join(sys.argv), "threads": args.threads, "auto_precision": auto,
                              "matmul_flops_per_s": {"fp32": matmul_rate(torch.float32),
                                                     "bf16": matmul_rate(torch.bfloat16)}, "entries": {}}
    for name in ("demo", "nh-haze"):
        entry = get_entry(name)
        opts = entry.defaults.resolved(entry.schedule["n_timestep"])
        evals = len(sampling_schedule(NoiseSchedule.from_config(entry.schedule), opts.steps, opts.start_strength))
        rows = {}
        for label, hw in SIZES.items():
            s1_hw = working_shape(*hw, opts.stage1_size) if opts.stage1_size else hw
            d_hw = tuple(-(-n // 16) * 16 for n in (working_shape(*hw, opts.denoise_size) if opts.denoise_size else hw))
            unet = lambda: UNet.from_config(entry.unet_config)  # noqa: E731
            per_eval = flops(unet, (1, 7, *hw), opts.attention_window)
            per_call_eval = per_eval if d_hw == hw else flops(unet, (1, 7, *d_hw), opts.attention_window)
            stage1 = flops(Stage1Net, (1, 3, *s1_hw))
            image = stage1 + evals * per_call_eval
            rows[label] = {"unet_flops_per_eval": per_eval, "stage1_flops": stage1, "evaluations": evals,
                           "denoised_at": list(d_hw), "unet_flops_per_call_eval": per_call_eval,
                           "flops_per_image": image,
                           "projected_seconds_per_image": {k: image / v for k, v in PEAKS.items()}}
        torch.manual_seed(0)
        unet = UNet.from_config(entry.unet_config).eval()
        for label in filter(None, args.time_sizes.split(",")):
            hw = SIZES[label]
            ref = eval_seconds(unet, hw, "fp32", "reference", args.repeats)
            with set_attention_window(unet, opts.attention_window):
                fast = eval_seconds(unet, hw, auto, "sdpa", args.repeats)
            work = flops(lambda: UNet.from_config(entry.unet_config), (1, 7, *hw), opts.attention_window)
            rate = report["matmul_flops_per_s"]["bf16" if auto == "bf16" else "fp32"]
            rows[label].update({
                "seconds_per_eval_reference": ref["seconds"], "seconds_per_eval_auto": fast["seconds"],
                "speedup": ref["seconds"] / fast["seconds"], "achieved_flops_per_s_auto": work / fast["seconds"],
                "fraction_of_matmul_rate": work / fast["seconds"] / rate,
                "eps_max_abs_diff": float((fast["eps"] - ref["eps"]).abs().max()),
                "eps_mean_abs_diff": float((fast["eps"] - ref["eps"]).abs().mean())})
        report["entries"][name] = {"defaults": opts.to_dict(), "sizes": rows}
    lines = ["| entry | size | UNet GFLOP / eval | evals | denoised at | GFLOP / image | s / eval ref | s / eval auto | "
             "speedup | % of matmul rate | eps max diff | T4 (proj.) | H200 (proj.) |", "|" + "---|" * 13]
    for name, e in report["entries"].items():
        for label, r in e["sizes"].items():
            t = (f"{r['seconds_per_eval_reference']:.2f} | {r['seconds_per_eval_auto']:.2f} | {r['speedup']:.2f}x | "
                 f"{100 * r['fraction_of_matmul_rate']:.0f}% | {r['eps_max_abs_diff']:.1e}" if "speedup" in r
                 else "- | - | - | - | -")
            p = r["projected_seconds_per_image"]
            at = "x".join(map(str, r["denoised_at"][::-1]))
            lines.append(f"| {name} | {label} | {r['unet_flops_per_eval'] / 1e9:.0f} | {r['evaluations']} | {at} | "
                         f"{r['flops_per_image'] / 1e9:.0f} | {t} | {p['T4 fp16 tensor cores'] * 1e3:.0f} ms | "
                         f"{p['H200 bf16 dense'] * 1e3:.1f} ms |")
    report["markdown"] = "\n".join(lines)
    print(f"matmul: fp32 {report['matmul_flops_per_s']['fp32'] / 1e9:.0f} GFLOP/s, "
          f"bf16 {report['matmul_flops_per_s']['bf16'] / 1e9:.0f} GFLOP/s; auto precision: {auto}")
    print(report["markdown"])
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
