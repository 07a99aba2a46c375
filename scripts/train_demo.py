"""Train the bundled demo weights on CPU (seeded) and record their provenance.

Usage: ``python scripts/train_demo.py [--out runs/demo] [--phase all|stage1|export] [--resume]``.
Stage 1 is the standard ``Stage1Net``; stage 2 is a small SR3 UNet (image_size 64). Both were
trained on synthetic haze over ``haze.builtin_photos("train")`` only (the eval photos are
disjoint), for a fixed number of steps with a cosine learning rate, so a rerun with one torch
thread retraces the same run.

This round trains stage 1 only: it continues the previous demo stage 1 (``INIT_STAGE1``, itself
trained on random-depth haze) for 800 steps on 128 px crops, so it sees whole images at the eval
size. The denoiser is the earlier demo denoiser unchanged (``KEPT_DENOISER``; docs/benchmarks.md).
``RECIPE_CHAIN`` says how the earlier weights were made; both files are taken from git history
and checked by sha256. ``export`` writes ``dehazeddpm/assets/demo_{stage1,denoiser}.pth`` (fp16),
``demo_provenance.json`` and fills the ``demo`` entry of ``weights.json`` (config, sha256, size).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dehazeddpm.io import load_denoiser, load_stage1, save_stage1  # noqa: E402
from dehazeddpm.training import TrainConfig, provenance, train_stage1  # noqa: E402
from dehazeddpm.hub import sha256_file  # noqa: E402
from dehazeddpm.utils import atomic_write  # noqa: E402

ASSETS = ROOT / "dehazeddpm" / "assets"
SEED = 1  # this round (the earlier rounds used 0)
STAGE1 = dict(stage="stage1", crop=128, min_scale=0.25, batch_size=4, steps=800, lr=1e-4, lr_schedule="cosine",
              seed=SEED, val_every=200, num_val=4, val_crop=128, save_every=200, progress=False, augment=True,
              random_depth=0.5)
UNET = {"in_channel": 7, "out_channel": 3, "inner_channel": 32, "norm_groups": 16, "channel_mults": [1, 2, 2],
        "attn_res": [16], "res_blocks": 1, "dropout": 0.0, "image_size": 64, "use_affine_level": False}
SCHEDULE = {"schedule": "linear", "n_timestep": 2000, "linear_start": 1e-6, "linear_end": 1e-2}
# Stage 1 starts from the previous demo stage 1; the denoiser is an earlier one, kept as it is
# (commit, path, sha256): see fetch_from_git.
INIT_STAGE1 = ("6ee74d2e38ca182e229dc6e4652f3bf52e7c688c", "dehazeddpm/assets/demo_stage1.pth",
               "97e99aa2db82f5e4f6ac00110c894c7e2593b4a32ff700fdb20d5b7f3cf54116")
KEPT_DENOISER = ("1764464a9168c7c9724f03b719971746d53ffd7f", "dehazeddpm/assets/demo_denoiser.pth",
                 "42579b9c251aed2ac9d29db82c273499a1cdce609281f0dc4648fbecf345eedc")
# How the initial weights were made, oldest first (each run is this script at that commit).
RECIPE_CHAIN = {
    "stage1": ["1764464: 2500 steps from random init, 13 TRAIN_PHOTOS, augment, Adam lr 5e-4 cosine (1931 s)",
               "6ee74d2: 2500 more steps, random_depth=0.5, lr 2.5e-4 cosine (2200 s)"],
    "denoiser": ["0cd93af: 6400 steps from random init on the first six TRAIN_PHOTOS (condition: that run's stage 1)",
                 "1764464: 4800 steps, 13 TRAIN_PHOTOS, augment, lr 2e-4 cosine (2385 s; condition: the 1764464 stage 1)",
                 "kept unchanged since: its condition is now this round's stage 1"],
}


def _registry_path() -> Path:
    return ROOT / "dehazeddpm" / "hub" / "weights.json"


def _dumps(obj) -> str:
    """indent=2 JSON with lists of numbers on one line (the registry's hand-written style)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def update_registry(s1: Path, den: Path, note: str) -> None:
    """Fill the demo entry only (sha256, size, unet_config, schedule, dataset, notes)."""
    reg_path = _registry_path()
    reg = json.loads(reg_path.read_text())
    e = reg["entries"]["demo"]
    e["dataset"] = "synthetic haze over the built-in scikit-image training photos (dehazeddpm.data.TRAIN_PHOTOS)"
    e["notes"] = note
    for role, f in (("stage1", s1), ("denoiser", den)):
        e[role]["sha256"] = sha256_file(f)
        e[role]["size"] = f.stat().st_size
    e["unet_config"] = dict(UNET)
    e["schedule"] = dict(SCHEDULE)
    text = _dumps(reg) + "\n"
    atomic_write(reg_path, lambda tmp: tmp.write_text(text))


def export(s1_ckpt: Path, den_file: Path, c1: TrainConfig, side1: dict, command: str, threads: int) -> None:
    """Write the fp16 assets, demo_provenance.json and the registry entry from the final stage-1
    checkpoint and the kept denoiser file."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    # fp16 storage halves the package data; load_state_dict copies back into fp32 parameters
    s1_path = save_stage1(load_stage1(s1_ckpt).half(), ASSETS / "demo_stage1.pth")
    den_path = ASSETS / "demo_denoiser.pth"
    if not den_path.is_file() or sha256_file(den_path) != KEPT_DENOISER[2]:
        atomic_write(den_path, lambda tmp: shutil.copyfile(den_file, tmp))  # byte for byte (already fp16)
    load_denoiser(den_path, **dict(UNET))  # strict: the file matches UNET
    prov = {
        "recipe": {"stage1": c1.to_dict()},
        "steps_done": {"stage1": side1["step"]}, "seconds": {"stage1": side1["seconds"]},
        "init": {"stage1": {"commit": INIT_STAGE1[0], "path": INIT_STAGE1[1], "sha256": INIT_STAGE1[2],
                            "made_by": RECIPE_CHAIN["stage1"]}},
        "denoiser_kept": {"commit": KEPT_DENOISER[0], "path": KEPT_DENOISER[1], "sha256": KEPT_DENOISER[2],
                          "made_by": RECIPE_CHAIN["denoiser"]},
        "final_val_psnr": {"stage1": side1["val_psnr"][-1][1]},
        "val_history": {"stage1": side1["val_psnr"]}, "command": command, "threads": threads, "device": "cpu",
        "seed": SEED,
        "provenance": provenance(),
        "files": {p.name: sha256_file(p) for p in (s1_path, den_path)},
    }
    (ASSETS / "demo_provenance.json").write_text(json.dumps(prov, indent=2, default=str) + "\n")
    update_registry(s1_path, den_path,
                    f"Trained on CPU by scripts/train_demo.py: stage 1 2500 steps, 2500 more with "
                    f"random_depth=0.5, then {side1['step']} on 128 px crops ({side1['seconds'] / 60:.0f} min); "
                    "the denoiser of the earlier demo weights unchanged (6400 + 4800 steps). fp16 files. Stage 1 "
                    "runs at a 128 px working size (defaults.stage1_size; docs/benchmarks.md, Findings 10). Demo "
                    "quality only, not the paper's models. Provenance: assets/demo_provenance.json.")
    print(json.dumps({k: prov[k] for k in ("steps_done", "seconds", "final_val_psnr")}, indent=2))


def fetch_from_git(spec: Tuple[str, str, str], dest: Path) -> Path:
    """Write the file ``spec = (commit, path, sha256)`` from git history to ``dest`` (once) and check its sha256."""
    commit, path, sha = spec
    if not dest.is_file():
        try:
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{path}"], check=True,
                                  capture_output=True).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            raise SystemExit(f"the recipe starts from {path} at commit {commit}; run this script from a "
                             f"git clone of the repository (git show failed: {exc})") from exc
        atomic_write(dest, lambda tmp: tmp.write_bytes(blob))
    if sha256_file(dest) != sha:
        raise SystemExit(f"{dest} is not the recipe's initial weights {path}@{commit[:7]} (sha256 {sha})")
    return dest


def _sidecar(ckpt: Path) -> dict:
    return json.loads(ckpt.with_suffix(".json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--phase", choices=("all", "stage1", "export"), default="all",
                    help="run one phase (export reads OUT)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared CPU)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted phase from OUT")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    s1_ckpt = out / "stage1" / "stage1_final.pth"
    init1 = out / "init" / f"demo_stage1_{INIT_STAGE1[0][:7]}.pth"
    kept = out / "init" / f"demo_denoiser_{KEPT_DENOISER[0][:7]}.pth"
    c1 = TrainConfig(out_dir=str(out / "stage1"), init_checkpoint=str(init1), **STAGE1)
    if args.phase in ("all", "stage1"):
        fetch_from_git(INIT_STAGE1, init1)
        train_stage1(c1, resume=args.resume)
    if args.phase in ("all", "export"):
        side1 = _sidecar(s1_ckpt)
        if side1["step"] != c1.steps:
            raise SystemExit(f"stage1 stopped at step {side1['step']} of {c1.steps}: rerun with --resume")
        # the recipe, not the paths: a checkpoint trained with other settings must not be exported as
        # it (a field newer than the sidecar is skipped: the run had its default behaviour)
        paths = ("out_dir", "stage1_checkpoint", "init_checkpoint")
        differ = sorted(k for k, v in c1.to_dict().items()
                        if k not in paths and k in side1["config"] and side1["config"][k] != v)
        if differ:
            raise SystemExit(f"stage1 checkpoint was trained with other settings: {differ}")
        export(s1_ckpt, fetch_from_git(KEPT_DENOISER, kept), c1, side1,
               "python scripts/train_demo.py " + " ".join(sys.argv[1:]), args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
