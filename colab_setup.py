"""One-call setup for the notebooks, on Colab or locally.

First cell of every notebook::

    import colab_setup
    info = colab_setup.setup(weights="demo")

On Colab it installs this repository (never torch) when ``dehazeddpm`` is not installed,
enables the custom widget manager, optionally mounts Google Drive as the weights cache, prints
the device with suggested settings, and prefetches the chosen weights. Outside Colab it only
does harmless local things: no mounting, and no pip install when ``dehazeddpm`` is already
importable. Failures are reported in the returned dict, never raised, so the notebook goes on.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

REPO_DIR = Path(__file__).resolve().parent
DRIVE_MOUNT = "/content/drive"
DRIVE_CACHE = "/content/drive/MyDrive/dehazeddpm_cache"
# A 512x512 tile of the released 64-channel UNet in fp16 fits comfortably in ~12 GB.
LARGE_TILE_MIN_FREE_BYTES = 12 * 2**30


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    if "google.colab" in sys.modules:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no "google" namespace at all
        return False


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _has_distribution(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, distribution
    try:
        distribution(name)
        return True
    except PackageNotFoundError:
        return False


def _add_repo_to_path() -> bool:
    """Make the checkout beside this file importable in the running kernel."""
    if not (REPO_DIR / "dehazeddpm").is_dir():
        return False
    if str(REPO_DIR) not in sys.path:
        sys.path.insert(0, str(REPO_DIR))
    importlib.invalidate_caches()
    return _importable("dehazeddpm")


def _ensure_package(colab: bool, install: bool, repo_url: str,
                    say: Callable[[str], None]) -> Dict[str, Any]:
    info: Dict[str, Any] = {"importable": False, "installed_now": False, "error": None}
    # On Colab a checkout is importable from the working folder before its dependencies are
    # installed, so there "installed" means pip knows the distribution.
    needed = (not _has_distribution("dehazeddpm")) if colab else not _importable("dehazeddpm")
    if needed and not colab and _add_repo_to_path():
        needed = False
    if needed and install:
        if not _importable("torch"):
            info["error"] = ("torch is not installed; install the torch build for this machine "
                             "first (this setup never installs torch)")
        else:
            local = (REPO_DIR / "setup.cfg").is_file() and (REPO_DIR / "dehazeddpm").is_dir()
            target = ["-e", str(REPO_DIR)] if local else [f"git+{repo_url}"]
            say(f"installing dehazeddpm from {target[-1]} ...")
            cmd = [sys.executable, "-m", "pip", "install", "--quiet", *target]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode == 0:
                info["installed_now"] = True
            else:
                tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
                info["error"] = f"pip install failed ({proc.returncode}): " + " | ".join(tail)
    # A fresh editable install only becomes importable after a kernel restart; the path
    # entry makes it usable now.
    if not _importable("dehazeddpm"):
        _add_repo_to_path()
    info["importable"] = _importable("dehazeddpm")
    if not info["importable"] and info["error"] is None:
        info["error"] = "dehazeddpm is not importable" + ("" if install else " (install=False)")
    return info


def _device() -> Dict[str, Any]:
    dev: Dict[str, Any] = {"device": "cpu", "gpu_name": None, "gpu_memory_gb": None,
                           "gpu_free_gb": None, "torch": None}
    try:
        import torch
    except ImportError:
        return dev
    dev["torch"] = torch.__version__
    if torch.cuda.is_available():
        idx = torch.cuda.current_device()
        dev["device"] = "cuda"
        dev["gpu_name"] = torch.cuda.get_device_name(idx)
        try:
            free, total = torch.cuda.mem_get_info(idx)
        except RuntimeError:
            free = total = torch.cuda.get_device_properties(idx).total_memory
        dev["gpu_memory_gb"] = round(total / 2**30, 1)
        dev["gpu_free_gb"] = round(free / 2**30, 1)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        dev["device"] = "mps"
    return dev


def suggested_settings(device: str, free_gb: Optional[float]) -> Dict[str, Any]:
    """fp16 / tile size / sampling steps that suit the device.

    ``tile_size`` None means "let the pipeline decide" (CPU, MPS). ``steps`` is a respaced
    sampling length for interactive use; the released schedule itself has 2000 steps.
    """
    if device != "cuda":
        return {"fp16": False, "tile_size": None, "steps": 20}
    big = free_gb is not None and free_gb * 2**30 >= LARGE_TILE_MIN_FREE_BYTES
    return {"fp16": True, "tile_size": 512 if big else 256, "steps": 100}


def _prefetch(name: str, say: Callable[[str], None]) -> Dict[str, Any]:
    report: Dict[str, Any] = {"name": name, "ok": False, "missing": False, "stage1": None,
                              "denoiser": None, "verified": False, "notes": {}, "error": None}
    try:
        from dehazeddpm import hub as W
    except Exception as exc:  # keep the notebook going
        report["error"] = f"dehazeddpm is not importable: {exc}"
        return report
    report["offline"] = W.is_offline()
    try:
        # resolve() checks the offline flag before any download, so this never touches the
        # network when DEHAZEDDPM_OFFLINE=1.
        res = W.resolve(name, download=True, progress=True)
    except (W.WeightsMissingError, W.BundledWeightsMissingError) as exc:
        report.update(missing=True, error=str(exc))
    except Exception as exc:  # any failure is reported, not raised
        report["error"] = f"{type(exc).__name__}: {exc}"
    else:
        report.update(ok=True, stage1=str(res.stage1), denoiser=str(res.denoiser),
                      verified=res.verified, notes=dict(res.notes))
    return report


def setup(weights: Optional[str] = "demo", *, mount_drive: bool = False, install: bool = True,
          repo_url: str = "https://github.com/dehazeddpm/dehazeddpm",
          quiet: bool = False) -> Dict[str, Any]:
    """Prepare the notebook environment; returns what was found (see module docstring).

    Keys: in_colab, repo_dir, package, device, gpu_name, gpu_memory_gb, gpu_free_gb, torch,
    fp16, tile_size, steps, smoke, drive_mounted, cache_dir, offline, weights, warnings.
    """
    def say(msg: str) -> None:
        if not quiet:
            print(msg)

    warnings: List[str] = []
    colab = in_colab()
    result: Dict[str, Any] = {"in_colab": colab, "repo_dir": str(REPO_DIR),
                              "drive_mounted": False, "warnings": warnings}

    result["package"] = _ensure_package(colab, install, repo_url, say)
    if result["package"]["error"]:
        warnings.append(result["package"]["error"])

    if colab:
        try:
            from google.colab import output
            output.enable_custom_widget_manager()
        except Exception as exc:  # widgets are a nicety; the rest still works
            warnings.append(f"could not enable the Colab widget manager: {exc}")

    if mount_drive:
        if colab:
            try:
                from google.colab import drive
                drive.mount(DRIVE_MOUNT)
                result["drive_mounted"] = True
                os.environ.setdefault("DEHAZEDDPM_CACHE", DRIVE_CACHE)
                Path(os.environ["DEHAZEDDPM_CACHE"]).mkdir(parents=True, exist_ok=True)
            except Exception as exc:
                warnings.append(f"could not mount Google Drive: {exc}")
        else:
            warnings.append("mount_drive ignored: not running on Colab")

    dev = _device()
    result.update(dev)
    result.update(suggested_settings(dev["device"], dev["gpu_free_gb"]))
    if dev["device"] == "cuda":
        say(f"device: {dev['gpu_name']} ({dev['gpu_free_gb']} GB free of "
            f"{dev['gpu_memory_gb']} GB)")
    else:
        say(f"device: {dev['device']} (no CUDA GPU; sampling will be slow)")
    # the sampling steps are the weights' own defaults (each result says what ran), not a device
    # setting, so they are not printed here
    say(f"suggested: fp16={result['fp16']} tile_size={result['tile_size']}")
    result["smoke"] = "CI" in os.environ or os.environ.get("DEHAZEDDPM_SMOKE", "").strip().lower() in {"1", "true", "yes", "on"}
    if result["smoke"]:
        say("smoke mode (CI or DEHAZEDDPM_SMOKE=1): tiny images and few steps, so every notebook runs on a CPU "
            "in seconds; numbers in this mode say nothing about quality")

    result["cache_dir"] = None
    result["offline"] = os.environ.get("DEHAZEDDPM_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    try:
        from dehazeddpm import hub as W
        result["cache_dir"] = str(W.cache_dir())
        result["offline"] = W.is_offline()
    except Exception as exc:
        warnings.append(f"dehazeddpm.weights unavailable: {exc}")
    if result["cache_dir"]:
        say(f"weights cache: {result['cache_dir']}" + (" (offline)" if result["offline"] else ""))

    result["weights"] = None
    if weights:
        report = _prefetch(weights, say)
        result["weights"] = report
        if report["ok"]:
            say(f"weights {weights}: ready ({report['notes'].get('denoiser', '')})")
        else:
            say(f"weights {weights}: NOT ready: {report['error']}")
    for w in warnings:
        say(f"warning: {w}")
    return result
