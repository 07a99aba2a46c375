"""Train the bundled demo weights on CPU (seeded) and record their provenance.

Usage: ``python scripts/train_demo.py [--out runs/demo] [--phase all|stage1|denoiser|export] [--resume]``.
Stage 1 is the standard ``Stage1Net``; stage 2 is a small SR3 UNet (image_size 64). Both train on
synthetic haze over ``haze.builtin_photos("train")`` only (the eval photos are disjoint), for a
fixed number of steps with a cosine learning rate, so a rerun with one torch thread retraces the
same run. The denoiser trains on a pool of crops whose stage-1 condition is computed once
(``condition_pool``). The denoiser is fine-tuned from the previous demo denoiser
(``INIT_DENOISER``: 6400 steps on the first six training photos, kept in git history), which
``--phase denoiser`` takes from git and checks by sha256. ``export`` writes
``dehazeddpm/assets/demo_{stage1,denoiser}.pth`` (fp16), ``demo_provenance.json`` and fills the
``demo`` entry of ``weights.json`` (config, sha256, size).
The phases can run as separate processes (e.g. the two stages on different machines).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
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
STAGE1 = dict(stage="stage1", crop=64, min_scale=0.25, batch_size=4, steps=2500, lr=5e-4, lr_schedule="cosine",
              seed=SEED, val_every=500, num_val=4, val_crop=96, save_every=500, progress=False, augment=True)
UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 32, "norm_groups": 16, "channel_mults": [1, 2, 2],
        "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 64, "use_affine_level": False}
SCHEDULE = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}
DENOISER = dict(stage="denoiser", crop=64, min_scale=0.25, batch_size=4, steps=4800, lr=2e-4, lr_schedule="cosine",
                seed=SEED, val_every=400, num_val=4, val_crop=64, val_sampler_steps=20, unet=UNET, schedule=SCHEDULE,
                ema_decay=0.998, grad_clip=1.0, condition_pool=2000, save_every=400, progress=False, augment=True)
# The denoiser starts from the previous demo denoiser (commit, path, sha256): see fetch_init_denoiser.
INIT_DENOISER = ("0cd93af5f0a341c1b4530df24a21c4fdbfc98a79", "dehazeddpm/assets/demo_denoiser.pth",
                 "bbad1932cf7c4edeceadab4710a6a02405e8446f94141c447be28a898520ae09")


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


def export(s1_ckpt: Path, den_ckpt: Path, c1: TrainConfig, c2: TrainConfig, steps: dict, seconds: dict,
           val: dict, command: str, threads: int) -> None:
    """Write the fp16 assets, demo_provenance.json and the registry entry from two final checkpoints."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    # fp16 storage halves the package data; load_state_dict copies back into fp32 parameters
    s1_path = save_stage1(load_stage1(s1_ckpt).half(), ASSETS / "demo_stage1.pth")
    unet = load_denoiser(den_ckpt, **dict(UNET))
    den_path = save_denoiser(unet, ASSETS / "demo_denoiser.pth", NoiseSchedule.from_config(SCHEDULE), half=True)
    prov = {
        "recipe": {"stage1": c1.to_dict(), "denoiser": c2.to_dict()},
        "steps_done": steps, "seconds": seconds,
        "denoiser_init": {"commit": INIT_DENOISER[0], "path": INIT_DENOISER[1], "sha256": INIT_DENOISER[2],
                          "note": "the previous demo denoiser: 6400 steps on the first six TRAIN_PHOTOS, "
                                  "stage-1 condition of that run's stage 1"},
        "final_val_psnr": {"stage1": val["stage1"][-1][1], "denoiser_ddim": val["denoiser"][-1][1]},
        "val_history": val, "command": command, "threads": threads, "device": "cpu", "seed": SEED,
        "provenance": provenance(),
        "files": {p.name: sha256_file(p) for p in (s1_path, den_path)},
    }
    (ASSETS / "demo_provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    update_registry(s1_path, den_path,
                    f"Trained on CPU by scripts/train_demo.py (seed {SEED}): stage 1 {steps['stage1']} steps, denoiser "
                    f"{steps['denoiser']} steps fine-tuning the previous demo denoiser (6400 steps), "
                    f"{sum(seconds.values()) / 60:.0f} min of training here; fp16 files. Demo "
                    "quality only, not the paper's models. Provenance: assets/demo_provenance.json.")
    print(json.dumps({k: prov[k] for k in ("steps_done", "seconds", "final_val_psnr")}, indent=2))


def fetch_init_denoiser(dest: Path) -> Path:
    """Write INIT_DENOISER from git history to ``dest`` (once) and check its sha256."""
    commit, path, sha = INIT_DENOISER
    if not dest.is_file():
        try:
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True,
                                  capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(f"the denoiser recipe starts from {path} at commit {commit}; run this script from a "
                             f"git clone of the repository (git show failed: {exc})") from exc
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        tmp.write_bytes(blob)
        os.replace(tmp, dest)
    if sha256_file(dest) != sha:
        raise SystemExit(f"{dest} is not the recipe's initial denoiser (sha256 {sha})")
    return dest


def _sidecar(ckpt: Path) -> dict:
    return json.loads(ckpt.with_suffix(".json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--phase", choices=("all", "stage1", "denoiser", "export"), default="all",
                    help="run one phase (the two stages can run on different days; export reads OUT)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared CPU)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted phase from OUT")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    c1 = TrainConfig(out_dir=str(out / "stage1"), **STAGE1)
    s1_ckpt = out / "stage1" / "stage1_final.pth"
    init = out / "init" / "demo_denoiser_0cd93af.pth"
    c2 = TrainConfig(out_dir=str(out / "denoiser"), stage1_checkpoint=str(s1_ckpt), init_checkpoint=str(init),
                     **DENOISER)
    den_ckpt = out / "denoiser" / "denoiser_final.pth"
    if args.phase in ("all", "stage1"):
        train_stage1(c1, resume=args.resume)
    if args.phase in ("all", "denoiser"):
        fetch_init_denoiser(init)
        train_denoiser(c2, resume=args.resume)
    if args.phase in ("all", "export"):
        side1, side2 = _sidecar(s1_ckpt), _sidecar(den_ckpt)
        for side, cfg in ((side1, c1), (side2, c2)):
            if side["step"] != cfg.steps:
                raise SystemExit(f"{side['stage']} stopped at step {side['step']} of {cfg.steps}: rerun with --resume")
            # the recipe, not the paths: a checkpoint trained with other settings must not be exported as
            # it (a field newer than the sidecar is skipped: the run had its default behaviour)
            paths = ("out_dir", "stage1_checkpoint", "init_checkpoint")
            differ = sorted(k for k, v in cfg.to_dict().items()
                            if k not in paths and k in side["config"] and side["config"][k] != v)
            if differ:
                raise SystemExit(f"{side['stage']} checkpoint was trained with other settings: {differ}")
        export(s1_ckpt, den_ckpt, c1, c2, {"stage1": side1["step"], "denoiser": side2["step"]},
               {"stage1": side1["seconds"], "denoiser": side2["seconds"]},
               {"stage1": side1["val_psnr"], "denoiser": side2["val_psnr"]},
               "python scripts/train_demo.py " + " ".join(sys.argv[1:]), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
