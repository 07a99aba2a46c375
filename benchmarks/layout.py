"""Memory layout and compilation for the demo denoiser's evaluation as the default call runs it
(bf16 autocast, 136 px tiles overlapping by 8, 8 tiles per UNet call) at 512x384:
contiguous, channels_last, and ``torch.compile`` (its warm-up stated), with and without inductor's
``freezing`` (constant weights: prepacked convolutions fused with their pointwise neighbours).
``--compile`` also times the elementwise pair that runs between the convolutions, GroupNorm then
SiLU, on one batch of tiles (8 x 32 x 136 x 136, bf16), eager against compiled (one fused kernel),
in both layouts: where the compiled model's time goes.

``--released`` times one evaluation of the released denoiser's config instead (random weights:
only time is measured) on a ``--size`` (512) square input, untiled, in the same four ways, with the run's bf16
matmul rate and each row's fraction of it (the FLOPs of ``cost_model.py``).

``--released --ceiling`` also splits one channels_last evaluation's time by kind of work
(``torch.profiler``, self CPU time) and gives the fraction of the matmul rate the evaluation would
reach if GroupNorm, SiLU and the additions cost nothing: the most that fusing them into the
convolutions could give on this machine.

``--stage1`` times the demo's stage 1 instead, in fp32 as the pipeline runs it on a CPU, contiguous
against channels_last (weights and input), at each of ``--sizes`` (H x W), with the largest
difference of J between the two.

    python benchmarks/layout.py [--compile] [--json benchmarks/results/layout_cpu.json]
    python benchmarks/layout.py --released --compile --json benchmarks/results/layout_released_cpu.json
    python benchmarks/layout.py --stage1 --json benchmarks/results/layout_stage1_cpu.json
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from dehazeddpm.hub import get_entry
from dehazeddpm.inference import DehazePipeline, TiledDenoiser, pin_threads
from dehazeddpm.inference.device import autocast
from dehazeddpm.models import UNet
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # also when loaded from elsewhere (the tests)
from cost_model import flops, matmul_rate  # noqa: E402  (the cost model's yardstick and FLOP count)


def best_ms(fn: Callable[[], Any], repeats: int = 20, warm_up: int = 3) -> float:
    """The fastest of ``repeats`` calls of ``fn`` after ``warm_up`` untimed ones, in ms."""
    for _ in range(warm_up):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def per_eval(model: torch.nn.Module, x: torch.Tensor, fmt: torch.memory_format, repeats: int) -> float:
    """Seconds of one evaluation (bf16 autocast), the fastest of ``repeats`` after one warm-up."""
    level = torch.tensor([0.5])
    x = x.contiguous(memory_format=fmt)
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        return best_ms(lambda: model(x, level), repeats, warm_up=1) / 1e3


def norm_act_rows() -> Dict[str, Dict[str, float]]:
    """GroupNorm(16, 32) then SiLU on (8, 32, 136, 136) bf16: eager and compiled, ms, per layout."""
    norm = torch.nn.GroupNorm(16, 32)

    def norm_act(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.silu(torch.nn.functional.group_norm(x, 16, norm.weight, norm.bias, norm.eps))

    fused = torch.compile(norm_act)
    x = torch.randn(8, 32, 136, 136, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    rows = {}
    with torch.inference_mode():
        for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
            xf = x.contiguous(memory_format=fmt)
            rows[name] = {"eager_ms": best_ms(lambda: norm_act(xf)), "compiled_ms": best_ms(lambda: fused(xf)),
                          "silu_alone_ms": best_ms(lambda: torch.nn.functional.silu(xf)),
                          "copy_ms": best_ms(lambda: xf.clone())}
    return rows


# torch.profiler operator names -> the kinds of work an evaluation does (self CPU time)
OP_KINDS = {"aten::mkldnn_convolution": "convolutions", "aten::_convolution": "convolutions",
            "aten::convolution": "convolutions", "aten::conv2d": "convolutions",
            "aten::native_group_norm": "GroupNorm", "aten::group_norm": "GroupNorm", "aten::silu": "SiLU",
            "aten::add": "additions", "aten::add_": "additions", "aten::cat": "cat", "aten::copy_": "copies"}


def time_by_kind(net: torch.nn.Module, x: torch.Tensor, repeats: int = 3) -> Dict[str, float]:
    """Seconds of self CPU time per kind of work (:data:`OP_KINDS`; attention and the rest under
    their own names) in one evaluation (bf16 autocast, channels_last) after a warm-up, by
    ``torch.profiler``; of ``repeats`` profiled evaluations the one with the least time in all,
    the least disturbed on a shared machine."""
    from torch.profiler import ProfilerActivity, profile

    level = torch.tensor([0.5])
    x = x.contiguous(memory_format=torch.channels_last)
    best: Dict[str, float] = {}
    with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
        net(x, level)
        for _ in range(max(1, repeats)):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                net(x, level)
            kinds: Dict[str, float] = {}
            for event in prof.key_averages():
                kind = OP_KINDS.get(event.key, "attention" if "attention" in event.key else "other")
                kinds[kind] = kinds.get(kind, 0.0) + event.self_cpu_time_total / 1e6
            if not best or sum(kinds.values()) < sum(best.values()):
                best = kinds
    return best


def stage1_rows(sizes: List[Tuple[int, int]], repeats: int) -> Dict[str, Dict[str, float]]:
    """The demo's stage 1 in fp32 per size: seconds contiguous and channels_last, their ratio, and
    the largest |J difference| between the two layouts."""
    net = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False).stage1
    nets = {fmt: copy.deepcopy(net).to(memory_format=fmt) for fmt in (torch.contiguous_format, torch.channels_last)}
    rows: Dict[str, Dict[str, float]] = {}
    for h, w in sizes:
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
        seconds, J = {}, {}
        with torch.inference_mode():
            for fmt, m in nets.items():
                xi = x.contiguous(memory_format=fmt)
                seconds[fmt] = best_ms(lambda: m(xi), repeats, warm_up=1) / 1e3
                J[fmt] = m(xi).J
        rows[f"{h}x{w}"] = {"contiguous": seconds[torch.contiguous_format],
                            "channels_last": seconds[torch.channels_last],
                            "speedup": seconds[torch.contiguous_format] / seconds[torch.channels_last],
                            "J_max_abs_diff": float((J[torch.contiguous_format] - J[torch.channels_last]).abs().max())}
        print(f"{h}x{w}", rows[f"{h}x{w}"], flush=True)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compile", action="store_true", help="also torch.compile (a warm-up of minutes)")
    ap.add_argument("--released", action="store_true",
                    help="the released config's single evaluation at 512x512 instead of the demo's tiled one")
    ap.add_argument("--size", type=int, default=512, help="--released: the square input's side")
    ap.add_argument("--ceiling", action="store_true",
                    help="--released: also split its time by kind of work and give the fusion ceiling")
    ap.add_argument("--stage1", action="store_true", help="the demo's stage 1 in fp32 instead, per --sizes")
    ap.add_argument("--sizes", default="64x85,128x171,384x512,768x1024", help="--stage1: H x W, comma-separated")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "layout.json"))
    args = ap.parse_args(argv)
    pin_threads(args.threads)
    if args.stage1:
        sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
        rows = stage1_rows(sizes, args.repeats)  # type: ignore[arg-type]
        write_json(args.json, {"command": "python benchmarks/layout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                               "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "torch": torch.__version__,
                               "what": "demo stage 1, fp32, seconds per call", "rows": rows})
        return 0
    extra: Dict[str, Any] = {}
    if args.released:
        config = get_entry("nh-haze").unet_config
        torch.manual_seed(0)
        unet = UNet.from_config(config).eval()
        x = torch.randn(1, 7, args.size, args.size, generator=torch.Generator().manual_seed(0))
        extra = {"config": "nh-haze (random weights)", "size": [args.size, args.size],
                 "flops_per_eval": flops(lambda: UNet.from_config(config), tuple(x.shape)),
                 "bf16_matmul_flops_per_s": matmul_rate(torch.bfloat16)}
        wrap = lambda net: net  # noqa: E731  (one untiled evaluation, as the released entry runs it)
    else:
        unet = DehazePipeline.from_pretrained("demo", device="cpu", download=False, progress=False).denoiser
        x = torch.randn(1, 7, 384, 512, generator=torch.Generator().manual_seed(0))
        wrap = lambda net: TiledDenoiser(net, 136, 8, tile_batch=8)  # noqa: E731
    rows: Dict[str, Any] = {}

    def record(name: str, row: Dict[str, Any]) -> None:
        if extra:
            row["fraction_of_matmul_rate"] = extra["flops_per_eval"] / row["seconds_per_eval"] / extra["bf16_matmul_flops_per_s"]
        rows[name] = row
        print(name, row, flush=True)

    for name, fmt in (("contiguous", torch.contiguous_format), ("channels_last", torch.channels_last)):
        net = copy.deepcopy(unet).to(memory_format=fmt)
        record(name, {"seconds_per_eval": per_eval(wrap(net), x, fmt, args.repeats)})
    if args.ceiling and args.released:
        kinds = time_by_kind(copy.deepcopy(unet).to(memory_format=torch.channels_last), x, args.repeats)
        total = sum(kinds.values())
        fusable = sum(kinds.get(k, 0.0) for k in ("GroupNorm", "SiLU", "additions"))
        rate = extra["bf16_matmul_flops_per_s"]
        rows["time by kind (torch.profiler)"] = {
            "seconds": kinds, "share": {k: v / total for k, v in kinds.items()},
            "fraction_of_matmul_rate": extra["flops_per_eval"] / total / rate,
            "convolutions_flops_per_s": extra["flops_per_eval"] / kinds["convolutions"],
            "ceiling_fraction_without_norm_silu_additions": extra["flops_per_eval"] / (total - fusable) / rate}
        print("time by kind", rows["time by kind (torch.profiler)"], flush=True)
    if args.compile:
        import torch._inductor.config as inductor_config

        for name, freezing in (("channels_last + torch.compile", False),
                               ("channels_last + torch.compile (freezing)", True)):
            torch._dynamo.reset()
            inductor_config.freezing = freezing
            net = torch.compile(copy.deepcopy(unet).to(memory_format=torch.channels_last))
            t0 = time.perf_counter()
            with torch.inference_mode(), autocast("bf16", torch.device("cpu")):
                wrap(net)(x.contiguous(memory_format=torch.channels_last), torch.tensor([0.5]))
            warm = time.perf_counter() - t0
            record(name, {"seconds_per_eval": per_eval(wrap(net), x, torch.channels_last, args.repeats),
                          "warm_up_seconds": warm})
        inductor_config.freezing = False
        if not args.released:
            rows["GroupNorm + SiLU, one batch of tiles"] = norm_act_rows()
            print("GroupNorm + SiLU", rows["GroupNorm + SiLU, one batch of tiles"], flush=True)
    write_json(args.json, {"command": "python benchmarks/layout.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                           "date": time.strftime("%Y-%m-%d"), "threads": args.threads, "torch": torch.__version__,
                           **extra, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
