"""What Colab needs before a notebook can import the package: install, widget manager, Drive.

The notebooks' Colab clone cell calls::

    import colab_setup
    colab_setup.setup()

On Colab it installs this repository (never torch) when ``dehazeddpm`` is not installed,
enables the custom widget manager, optionally mounts Google Drive as the weights cache, says
the device (the package's policy) and optionally prefetches weights. Everything else a notebook
needs is one call into the package, ``dd.notebook_session``. Outside Colab it only
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


def setup(weights: Optional[str] = None, *, mount_drive: bool = False, install: bool = True,
          repo_url: str = "https://github.com/dehazeddpm/dehazeddpm",
          quiet: bool = False) -> Dict[str, Any]:
    """Prepare the notebook environment; returns what was found (see module docstring).

    Keys: in_colab, repo_dir, package, device, drive_mounted, cache_dir, offline, weights, warnings.
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

    # The device, precision and tile policy is the package's (dehazeddpm.inference.device); a
    # result's describe() says what ran. Here only what the notebook needs to know first.
    result["device"] = None
    try:
        from dehazeddpm.inference.device import default_device
        result["device"] = default_device().type
        say(f"device: {result['device']}" + ("" if result["device"] == "cuda" else " (no CUDA GPU; sampling will be slow)"))
    except Exception as exc:  # a broken install is reported above; keep the notebook going
        warnings.append(f"dehazeddpm.inference unavailable: {exc}")

    result["cache_dir"] = None
    result["offline"] = None
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
