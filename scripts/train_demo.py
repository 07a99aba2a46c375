"""Train the bundled demo weights on CPU (seeded) and record their provenance.

Usage: ``python scripts/train_demo.py [--out runs/demo] [--minutes1 13] [--minutes2 13]``.
Stage 1 is the standard ``Stage1Net``; stage 2 is a small SR3 UNet (image_size 64). Both train on
synthetic haze over ``haze.builtin_photos("train")`` only (the eval photos are disjoint). Writes
``dehazeddpm/assets/demo_{stage1,denoiser}.pth`` (fp16), ``demo_provenance.json`` and fills the
``demo`` entry of ``weights.json`` (unet_config, schedule, sha256, size).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dehazeddpm.checkpoints import load_denoiser, load_stage1, save_denoiser, save_stage1  # noqa: E402
from dehazeddpm.schedule import NoiseSchedule  # noqa: E402
from dehazeddpm.train import TrainConfig, provenance, train_denoiser, train_stage1  # noqa: E402
from dehazeddpm.weights import sha256_file  # noqa: E402

ASSETS = ROOT / "dehazeddpm" / "assets"
SEED = 0
STAGE1 = dict(stage="stage1", crop=64, batch_size=4, steps=1500, lr=5e-4, seed=SEED, val_every=250,
              num_val=4, val_crop=96)
UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 32, "norm_groups": 16, "channel_mults": [1, 2, 2],
        "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 64, "use_affine_level": False}
SCHEDULE = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}
DENOISER = dict(stage="denoiser", crop=64, batch_size=4, steps=1500, lr=5e-4, seed=SEED, val_every=500,
                num_val=4, val_crop=64, unet=UNET, schedule=SCHEDULE, val_sampler_steps=10)


def _registry_path() -> Path:
    # dehazeddpm/weights.json may be a symlink to the top-level weights.json: edit the real file
    return (ROOT / "dehazeddpm" / "weights.json").resolve()


def _dumps(obj) -> str:
    """indent=2 JSON with lists of numbers on one line (the registry's hand-written style)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def update_registry(s1: Path, den: Path, note: str) -> None:
    """Fill the demo entry only (sha256, size, unet_config, schedule, dataset, notes)."""
    reg_path = _registry_path()
    reg = json.loads(reg_path.read_text())
    e = reg["entries"]["demo"]
    e["dataset"] = "synthetic haze over the built-in scikit-image training photos (haze.TRAIN_PHOTOS)"
    e["notes"] = note
    for role, f in (("stage1", s1), ("denoiser", den)):
        e[role]["sha256"] = sha256_file(f)
        e[role]["size"] = f.stat().st_size
    e["unet_config"] = dict(UNET)
    e["schedule"] = dict(SCHEDULE)
    tmp = reg_path.with_name(f".{reg_path.name}.tmp")
    tmp.write_text(_dumps(reg) + "\n")
    os.replace(tmp, reg_path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--minutes1", type=float, default=13.0, help="wall-time cap of stage 1")
    ap.add_argument("--minutes2", type=float, default=13.0, help="wall-time cap of the denoiser")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    t0 = time.time()
    c1 = TrainConfig(out_dir=str(out / "stage1"), max_minutes=args.minutes1, **STAGE1)
    r1 = train_stage1(c1)
    c2 = TrainConfig(out_dir=str(out / "denoiser"), max_minutes=args.minutes2,
                     stage1_checkpoint=str(r1.checkpoint), **DENOISER)
    r2 = train_denoiser(c2)
    total = time.time() - t0

    ASSETS.mkdir(parents=True, exist_ok=True)
    # fp16 storage halves the package data; load_state_dict copies back into fp32 parameters
    s1 = load_stage1(r1.checkpoint).half()
    s1_path = save_stage1(s1, ASSETS / "demo_stage1.pth")
    unet = load_denoiser(r2.checkpoint, **{k: v for k, v in UNET.items()})
    den_path = save_denoiser(unet, ASSETS / "demo_denoiser.pth", NoiseSchedule.from_config(SCHEDULE), half=True)
    prov = {
        "recipe": {"stage1": c1.to_dict(), "denoiser": c2.to_dict()},
        "steps_done": {"stage1": r1.step, "denoiser": r2.step},
        "seconds": {"stage1": round(r1.seconds, 1), "denoiser": round(r2.seconds, 1), "total": round(total, 1)},
        "final_val_psnr": {"stage1": r1.val_psnr[-1][1], "denoiser_ddim10": r2.val_psnr[-1][1]},
        "val_history": {"stage1": r1.val_psnr, "denoiser": r2.val_psnr},
        "command": "python scripts/train_demo.py " + " ".join(sys.argv[1:]),
        "threads": args.threads, "device": "cpu", "seed": SEED,
        "provenance": provenance(),
        "files": {p.name: sha256_file(p) for p in (s1_path, den_path)},
    }
    (ASSETS / "demo_provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    update_registry(s1_path, den_path,
                    f"Trained on CPU by scripts/train_demo.py (seed {SEED}): stage 1 {r1.step} steps, denoiser "
                    f"{r2.step} steps, {total / 60:.1f} min total; fp16 files. Demo quality only, not the paper's "
                    "models. Provenance: assets/demo_provenance.json.")
    print(json.dumps({k: prov[k] for k in ("steps_done", "seconds", "final_val_psnr")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
