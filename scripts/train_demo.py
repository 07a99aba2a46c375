"""Train the bundled demo weights on CPU (seeded) from a recipe file, and record their provenance.

Usage::

    python scripts/train_demo.py --recipe scripts/recipes/demo_round8.json [--out runs/demo]
                                 [--phase all|stage1|denoiser|export] [--resume] [--install]

Each shipped or measured round is one file under ``scripts/recipes/`` (``demo_round8.json``: the
bundled weights; the others measured and not shipped, each file's ``shipped`` and ``about`` say
so): the training configs of both stages (or either file kept unchanged, ``kept``), the seed, the UNet
config and schedule, and the initial weights as (commit, path, sha256), taken from git history and
checked. Stage 1 may train in phases (``more``: each from the previous phase's result); a phase
finished earlier with the recipe's settings is kept on a rerun. Stage 1 is the standard
``Stage1Net``; stage 2 a small SR3 UNet. Both train on synthetic haze over the built-in training
photos only (the recipe's ``photos``: ``"train"``, ``dehazeddpm.data.TRAIN_PHOTOS``, or
``"train_all"``, with ``MORE_TRAIN_PHOTOS``, or ``"train_wide"``, with ``WIDE_TRAIN_PHOTOS`` too; the
eval and judge photos are disjoint) for a fixed number of
steps, so a rerun with one torch thread retraces the run.

``export`` writes the fp16 files, ``demo_provenance.json`` and the registry entry into
``OUT/export/``; only ``--install`` copies them over ``dehazeddpm/assets/`` and the ``demo`` entry
of ``weights.json`` (what the package ships).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from dehazeddpm.diffusion import NoiseSchedule
from dehazeddpm.hub import sha256_file
from dehazeddpm.io import load_denoiser, load_stage1, save_denoiser, save_stage1
from dehazeddpm.training import RunExistsError, TrainConfig, provenance, train_denoiser, train_stage1
from dehazeddpm.utils import atomic_write, write_json

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "dehazeddpm" / "assets"
SHIPPED = ROOT / "scripts" / "recipes" / "demo_round15.json"


def _registry_path() -> Path:
    return ROOT / "dehazeddpm" / "hub" / "weights.json"


def _dumps(obj) -> str:
    """indent=2 JSON with lists of numbers on one line (the registry's hand-written style)."""
    text = json.dumps(obj, indent=2)
    return re.sub(r"\[\s*([-0-9.e,\s]+?)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text)


def registry_entry(recipe: Dict[str, Any], s1: Path, den: Path) -> Dict[str, Any]:
    """The registry's ``demo`` entry for these files (sha256, size, unet_config, schedule, dataset, notes)."""
    e = json.loads(_registry_path().read_text())["entries"]["demo"]
    trained = _trained(recipe)
    splits = {part["config"].get("photos", "train") for part in trained.values()}
    widest = next((s for s in ("train_wide", "train_all") if s in splits), "train")
    e["dataset"] = ("synthetic depth-driven and non-homogeneous haze over the built-in training photos " + {
        "train": "(dehazeddpm.data.TRAIN_PHOTOS: scikit-image, PyWavelets and mahotas wheels)",
        "train_all": "(dehazeddpm.data.TRAIN_PHOTOS and MORE_TRAIN_PHOTOS: scikit-image, PyWavelets, mahotas and "
                     "glymur wheels)",
        "train_wide": "(dehazeddpm.data.TRAIN_PHOTOS, MORE_TRAIN_PHOTOS and WIDE_TRAIN_PHOTOS: scikit-image, "
                      "PyWavelets, mahotas and glymur wheels, and CC BY / CC0 wallpaper photos credited in "
                      "dehazeddpm/assets/photos/README.md)"}[widest])
    e["notes"] = recipe["registry_note"]
    for role, f in (("stage1", s1), ("denoiser", den)):
        e[role]["sha256"] = sha256_file(f)
        e[role]["size"] = f.stat().st_size
    e["unet_config"] = dict(recipe["unet"])
    e["schedule"] = dict(recipe["schedule"])
    return e


def export(recipe: Dict[str, Any], s1_ckpt: Path, den_file: Path, sides: Dict[str, dict], configs: Dict[str, TrainConfig],
           dest: Path, command: str, threads: int, phases: Sequence[TrainConfig] = ()) -> Dict[str, Path]:
    """Write the fp16 files, demo_provenance.json and demo_entry.json into ``dest``; returns their paths."""
    unet = dict(recipe["unet"])
    s1_path = dest / "demo_stage1.pth"
    if "kept" in recipe["stage1"]:
        atomic_write(s1_path, lambda tmp: shutil.copyfile(s1_ckpt, tmp))  # byte for byte (already fp16)
    else:
        # fp16 storage halves the package data; load_state_dict copies back into fp32 parameters
        save_stage1(load_stage1(s1_ckpt).half(), s1_path)
    den_path = dest / "demo_denoiser.pth"
    if "kept" in recipe["denoiser"]:
        atomic_write(den_path, lambda tmp: shutil.copyfile(den_file, tmp))  # byte for byte (already fp16)
    else:
        # the reference's *_gen.pth layout plus the entry's defaults, so the file alone runs like `--weights demo`
        defaults = json.loads(_registry_path().read_text())["entries"]["demo"].get("defaults")
        save_denoiser(load_denoiser(den_file, **unet).half(), den_path,
                      schedule=NoiseSchedule.from_config(recipe["schedule"]), defaults=defaults)
    load_denoiser(den_path, **unet)  # strict: the file matches the recipe's UNet
    prov = {
        "round": recipe["round"], "recipe": {k: c.to_dict() for k, c in configs.items()},
        "stage1_phases": [c.to_dict() for c in phases],
        "steps_done": {k: v["step"] for k, v in sides.items()}, "seconds": {k: v["seconds"] for k, v in sides.items()},
        "init": {role: {"commit": part["init"][0], "path": part["init"][1], "sha256": part["init"][2],
                        "made_by": part["made_by"]} for role, part in _trained(recipe).items()},
        "final_val_psnr": {k: v["val_psnr"][-1][1] for k, v in sides.items() if v.get("val_psnr")},
        "val_history": {k: v.get("val_psnr") for k, v in sides.items()}, "command": command, "threads": threads,
        "device": "cpu", "seed": recipe["seed"], "provenance": provenance(),
        "files": {p.name: sha256_file(p) for p in (s1_path, den_path)},
    }
    for role in ("stage1", "denoiser"):
        if "kept" in recipe[role]:
            kept = recipe[role]["kept"]
            prov[f"{role}_kept"] = {"commit": kept[0], "path": kept[1], "sha256": kept[2],
                                    "made_by": recipe[role]["made_by"]}
    write_json(dest / "demo_provenance.json", prov)
    write_json(dest / "demo_entry.json", registry_entry(recipe, s1_path, den_path))
    print(json.dumps({k: prov[k] for k in ("steps_done", "seconds", "final_val_psnr")}, indent=2))
    return {"stage1": s1_path, "denoiser": den_path, "provenance": dest / "demo_provenance.json",
            "entry": dest / "demo_entry.json"}


def install(files: Dict[str, Path]) -> None:
    """Copy an export over the bundled assets and the registry's ``demo`` entry (what the package ships)."""
    for key, name in (("stage1", "demo_stage1.pth"), ("denoiser", "demo_denoiser.pth"),
                      ("provenance", "demo_provenance.json")):
        atomic_write(ASSETS / name, lambda tmp, src=files[key]: shutil.copyfile(src, tmp))
    reg = json.loads(_registry_path().read_text())
    reg["entries"]["demo"] = json.loads(files["entry"].read_text())
    text = _dumps(reg) + "\n"
    atomic_write(_registry_path(), lambda tmp: tmp.write_text(text))
    print(f"installed into {ASSETS} and the demo entry of {_registry_path()}")


def _trained(recipe: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The parts of a recipe that train (those with a config), by role."""
    return {role: recipe[role] for role in ("stage1", "denoiser") if "config" in recipe[role]}


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


def stage1_phases(s1: Dict[str, Any], out: Path, init: Path) -> List[TrainConfig]:
    """Stage 1's training phases: the recipe's ``config`` from ``init``, then each of ``more`` (if
    any) from the previous phase's result, in ``OUT/stage1``, ``OUT/stage1_2``, ...; the last is
    the stage 1 the round exports."""
    phases: List[TrainConfig] = []
    for k, conf in enumerate([s1["config"]] + list(s1.get("more", []))):
        start = init if k == 0 else Path(phases[-1].out_dir) / "stage1_final.pth"
        # recipes older than the precision key were trained in fp32: that is what reproduces them
        phases.append(TrainConfig(out_dir=str(out / ("stage1" if k == 0 else f"stage1_{k + 1}")),
                                  init_checkpoint=str(start), **{"precision": "fp32", **conf}))
    return phases


def _train(run, cfg: TrainConfig, resume: bool) -> None:
    """``run(cfg)``; an unfinished run already in its folder is one line (this script has no
    --overwrite: nothing it made is ever deleted)."""
    try:
        run(cfg, resume=resume)
    except RunExistsError as exc:
        raise SystemExit(f"{cfg.out_dir} holds an unfinished {cfg.stage} run: rerun with --resume to continue "
                         "it, or give another --out") from exc


def _sidecar(ckpt: Path) -> dict:
    return json.loads(ckpt.with_suffix(".json").read_text())


def _check_trained(name: str, ckpt: Path, cfg: TrainConfig) -> dict:
    """The sidecar of a finished run of ``cfg`` (SystemExit if unfinished or made with other settings)."""
    side = _sidecar(ckpt)
    if side["step"] != cfg.steps:
        raise SystemExit(f"{name} stopped at step {side['step']} of {cfg.steps}: rerun with --resume")
    # the recipe, not the paths: a checkpoint trained with other settings must not be exported as
    # it (a field newer than the sidecar is skipped: the run had its default behaviour)
    paths = ("out_dir", "stage1_checkpoint", "init_checkpoint")
    differ = sorted(k for k, v in cfg.to_dict().items()
                    if k not in paths and k in side["config"] and side["config"][k] != v)
    if differ:
        raise SystemExit(f"{name} checkpoint was trained with other settings: {differ}")
    return side


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(SHIPPED), help="a recipe file (default: the shipped round's)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--phase", choices=("all", "stage1", "denoiser", "export"), default="all",
                    help="run one phase (each later phase reads the earlier ones' results from OUT)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: robust on a shared CPU)")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted phase from OUT")
    ap.add_argument("--install", action="store_true",
                    help="after export, copy the files over dehazeddpm/assets and the registry's demo entry")
    args = ap.parse_args(argv)
    try:
        recipe = json.loads(Path(args.recipe).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        ap.error(f"--recipe: cannot read {args.recipe}: {exc}")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    den_ckpt = out / "denoiser" / "denoiser_final.pth"
    s1 = recipe["stage1"]
    configs: Dict[str, TrainConfig] = {}
    if "kept" in s1:  # a denoiser-only round: the stage 1 file as it is, from git history
        phases: List[TrainConfig] = []
        s1_ckpt = out / "init" / f"demo_stage1_{s1['kept'][0][:7]}.pth"
    else:
        init1 = out / "init" / f"demo_stage1_{s1['init'][0][:7]}.pth"
        phases = stage1_phases(s1, out, init1)
        c1 = phases[-1]
        s1_ckpt = Path(c1.out_dir) / "stage1_final.pth"
        configs["stage1"] = c1
    den = recipe["denoiser"]
    if "config" in den:
        init2 = out / "init" / f"demo_denoiser_{den['init'][0][:7]}.pth"
        configs["denoiser"] = TrainConfig(out_dir=str(out / "denoiser"), init_checkpoint=str(init2),
                                          stage1_checkpoint=str(s1_ckpt), unet=dict(recipe["unet"]),
                                          schedule=dict(recipe["schedule"]), **{"precision": "fp32", **den["config"]})
    if args.phase in ("all", "stage1") and "kept" in s1:
        fetch_from_git(tuple(s1["kept"]), s1_ckpt)
        print(f"stage 1 kept: {s1['kept'][1]} at {s1['kept'][0][:7]}")
    elif args.phase in ("all", "stage1"):
        fetch_from_git(tuple(s1["init"]), init1)
        for cfg in phases:
            if (Path(cfg.out_dir) / "stage1_final.pth").is_file() and not args.resume:
                _check_trained(f"stage 1 ({cfg.out_dir})", Path(cfg.out_dir) / "stage1_final.pth", cfg)
                print(f"{cfg.out_dir}: finished earlier with this recipe's settings; kept")
                continue
            _train(train_stage1, cfg, args.resume)
    if args.phase in ("all", "denoiser") and "config" in den:
        if "kept" in s1:
            fetch_from_git(tuple(s1["kept"]), s1_ckpt)
        else:
            _check_trained("stage1", s1_ckpt, c1)
        fetch_from_git(tuple(den["init"]), init2)
        _train(train_denoiser, configs["denoiser"], args.resume)
    if args.phase in ("all", "export"):
        if "kept" in s1:
            fetch_from_git(tuple(s1["kept"]), s1_ckpt)
        sides = {role: _check_trained(role, ckpt, configs[role])
                 for role, ckpt in (("stage1", s1_ckpt), ("denoiser", den_ckpt)) if role in configs}
        den_file = den_ckpt if "config" in den else fetch_from_git(
            tuple(den["kept"]), out / "init" / f"demo_denoiser_{den['kept'][0][:7]}.pth")
        files = export(recipe, s1_ckpt, den_file, sides, configs, out / "export",
                       "python scripts/train_demo.py " + " ".join(sys.argv[1:] if argv is None else argv), args.threads,
                       phases)
        if args.install:
            install(files)
        else:
            print(f"exported to {out / 'export'}; --install puts them in place of the bundled weights")
    return 0


if __name__ == "__main__":
    sys.exit(main())
