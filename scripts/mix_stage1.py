"""Interpolate two stage-1 checkpoints of one lineage: ``(1 - alpha) * BASE + alpha * TUNED``.

    python scripts/mix_stage1.py BASE TUNED --alpha 0.5 --out mixed.pth

Weight-space interpolation between a network and its fine-tune (WiSE-FT: Wortsman et al., "Robust
fine-tuning of zero-shot models", CVPR 2022) keeps much of the fine-tune's gain on new data while
giving back what the fine-tune forgot. Both files are loaded strictly as stage 1 (any released
layout, fp16 or fp32); the mix is computed in fp32 and written as ``{'params': ...}`` (fp32),
atomically. alpha 0 is BASE, 1 is TUNED.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from dehazeddpm.io import CheckpointError, load_stage1, save_stage1


def mix_stage1(base: str | Path, tuned: str | Path, alpha: float) -> torch.nn.Module:
    """The stage-1 net whose every floating-point tensor is ``(1 - alpha) * base + alpha * tuned``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    net, other = load_stage1(base).float(), load_stage1(tuned).float()
    theirs = other.state_dict()
    mixed = {k: torch.lerp(v, theirs[k], alpha) if v.is_floating_point() else v
             for k, v in net.state_dict().items()}
    net.load_state_dict(mixed, strict=True)
    return net


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base", help="the stage 1 the fine-tune started from (alpha 0)")
    ap.add_argument("tuned", help="the fine-tuned stage 1 (alpha 1)")
    ap.add_argument("--alpha", type=float, required=True)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        net = mix_stage1(args.base, args.tuned, args.alpha)
    except (CheckpointError, ValueError, FileNotFoundError) as exc:
        sys.exit(f"mix_stage1.py: {exc}")
    save_stage1(net, args.out)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
