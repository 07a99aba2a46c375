"""One evaluation harness: pair files, score a pipeline over pairs and seeds, summarise.

Layer: evaluation, above ``inference`` (it runs a pipeline) and ``data`` (the pairing rule), below
``viz`` and ``cli``. ``dehazeddpm eval``, notebook 05, the benchmarks and the scripts all score
through :func:`evaluate`, so a number means the same thing wherever it is printed.

Scoring is done as a user meets the result: the pipeline's 8-bit image (``res.image``) against
the ground truth, both [0, 1] RGB; PSNR over all pixels and channels, SSIM with the Gaussian
window of :func:`dehazeddpm.metrics.ssim`, and the colour cast as |mean a*| and |mean b*| (CIE
Lab) of the result minus the ground truth's.
"""
from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .data.datasets import pair_key
from .inference.pipeline import BrokenModelError, DehazePipeline, DehazeResult
from .io.images import ImageReadError, is_image_file, load_image
from .metrics import mean_ab, psnr, ssim

__all__ = ["DEFAULT_CALL", "HAZY", "STAGE1", "Pair", "PairingError", "by_image", "evaluate", "format_report",
           "mean_of", "pair_folders", "pairs_in", "score", "summarize"]

# Runs of :func:`evaluate`: pipeline options by name. None scores the input itself (the hazy
# image, or an already dehazed one); ``{"steps": 0}`` is stage 1's J; ``{}`` the weights' default.
HAZY: Optional[Mapping[str, Any]] = None
STAGE1: Mapping[str, Any] = {"steps": 0}
DEFAULT_CALL: Mapping[str, Any] = {}
METRICS = ("psnr", "ssim", "abs_da", "abs_db")


class PairingError(ValueError):
    """Files that cannot be paired: several images of one pairing key in a folder."""


@dataclass(frozen=True)
class Pair:
    """One evaluation pair: ``name`` (the pairing key), the input image and its ground truth."""

    name: str
    input: Path
    gt: Path


def _index(folder: Path) -> Dict[str, Path]:
    files: Dict[str, List[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_image_file(p) and not p.name.startswith("."):
            files.setdefault(pair_key(p.stem), []).append(p)
    clashes = [" and ".join(p.name for p in ps) for ps in files.values() if len(ps) > 1]
    if clashes:
        raise PairingError(f"{folder} holds several images of one name, which cannot all be paired: "
                           + "; ".join(clashes))
    return {k: ps[0] for k, ps in files.items()}


def pair_folders(input_dir: Union[str, Path], gt_dir: Union[str, Path]) -> Tuple[List[Pair], List[str]]:
    """Pair the image files of two folders by :func:`~dehazeddpm.data.datasets.pair_key` of their
    stems (``01_hazy.png`` with ``01_GT.png``, ``a.png`` with ``a.png``): the one pairing rule.

    Returns ``(pairs sorted by name, paths without a partner)``. Several images of one key in a
    folder is a :class:`PairingError`; a missing folder a ``FileNotFoundError``.
    """
    folders = [Path(input_dir), Path(gt_dir)]
    for d in folders:
        if not d.is_dir():
            raise FileNotFoundError(f"not a folder: {d}")
    a, g = (_index(d) for d in folders)
    pairs = [Pair(k, a[k], g[k]) for k in sorted(set(a) & set(g))]
    lonely = [str(a[k]) for k in sorted(set(a) - set(g))] + [str(g[k]) for k in sorted(set(g) - set(a))]
    return pairs, lonely


def pairs_in(folder: Union[str, Path]) -> Tuple[List[Pair], List[str]]:
    """The pairs of a folder with ``hazy/`` and ``gt/`` subfolders (what ``make_eval_set`` writes),
    by :func:`pair_folders`."""
    folder = Path(folder)
    return pair_folders(folder / "hazy", folder / "gt")


def score(pred: torch.Tensor, gt: torch.Tensor) -> Dict[str, float]:
    """PSNR (dB), SSIM and the colour cast of ``pred`` against ``gt``, both (1, 3, H, W) in [0, 1]."""
    if pred.shape != gt.shape:
        raise ValueError(f"size {tuple(pred.shape[-2:])} differs from ground truth {tuple(gt.shape[-2:])}")
    (a, b), (ga, gb) = mean_ab(pred), mean_ab(gt)
    return {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt), "abs_da": abs(a - ga), "abs_db": abs(b - gb)}


OnResult = Callable[[Pair, str, int, Optional[DehazeResult]], None]


def evaluate(pipe: Optional[DehazePipeline], pairs: Sequence[Pair], runs: Mapping[str, Optional[Mapping[str, Any]]],
             seeds: Sequence[int] = (0,), *, max_pixels: Optional[int] = None, progress: bool = False,
             on_result: Optional[OnResult] = None, on_error: Optional[Callable[[Pair, str], None]] = None
             ) -> List[Dict[str, Any]]:
    """Score each run over ``pairs`` and ``seeds``: one row per (pair, run, seed).

    runs: ``{name: options}``; options are the pipeline's keywords (a dict of
        :class:`~dehazeddpm.options.SamplingOptions` fields), :data:`STAGE1` for stage 1's J,
        :data:`DEFAULT_CALL` for the weights' default, or :data:`HAZY` (None) to score the input
        itself. Deterministic runs (HAZY, STAGE1) are scored with the first seed only.
    pipe: may be None when every run is HAZY.
    on_result: ``on_result(pair, run, seed, result)`` after each row (result None for HAZY).
    on_error: ``on_error(pair, reason)`` for a pair that could not be read or scored; its rows
        then carry ``error`` and no metrics. A broken model (:class:`BrokenModelError`) is raised.

    Rows: ``name``, ``run``, ``seed``, ``psnr``, ``ssim``, ``abs_da``, ``abs_db``, ``seconds``.
    """
    rows: List[Dict[str, Any]] = []
    for pair in pairs:
        try:
            gt = load_image(pair.gt, max_pixels=max_pixels)
            inp = load_image(pair.input, max_pixels=max_pixels)
            for run, options in runs.items():
                rows.extend(_score_run(pipe, pair, inp, gt, run, options, seeds, progress, on_result))
        except BrokenModelError:
            raise
        except (ImageReadError, ValueError, OSError, MemoryError) as exc:
            reason = "not enough memory for an image of this size" if isinstance(exc, MemoryError) else str(exc)
            if on_error is not None:
                on_error(pair, reason)
            rows = [r for r in rows if r["name"] != pair.name]
            rows.extend({"name": pair.name, "run": run, "seed": None, "error": reason} for run in runs)
    return rows


def _score_run(pipe: Optional[DehazePipeline], pair: Pair, inp: torch.Tensor, gt: torch.Tensor, run: str,
               options: Optional[Mapping[str, Any]], seeds: Sequence[int], progress: bool,
               on_result: Optional[OnResult]) -> List[Dict[str, Any]]:
    deterministic = options is None or options.get("steps") == 0
    rows = []
    for seed in (seeds[:1] if deterministic else seeds):
        t0 = time.perf_counter()
        if options is None:
            res, pred = None, inp
        else:
            if pipe is None:
                raise ValueError(f"run {run!r} needs a pipeline")
            res = pipe(inp, seed=seed, progress=progress, options=options)
            pred = load_image(res.image)  # the 8-bit image a user gets
        row = {"name": pair.name, "run": run, "seed": seed, **score(pred, gt),
               "seconds": time.perf_counter() - t0}
        rows.append(row)
        if on_result is not None:
            on_result(pair, run, seed, res)
    return rows


def _finite_mean(values: Iterable[Optional[float]]) -> Optional[float]:
    """The mean of the finite values (an identical pair's infinite PSNR has no place in a mean)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def summarize(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per run: the mean of each metric and of the seconds over the rows without an error, and
    their count (seeds and images together)."""
    out: List[Dict[str, Any]] = []
    for run in dict.fromkeys(r["run"] for r in rows):
        good = [r for r in rows if r["run"] == run and "error" not in r]
        mean = {k: _finite_mean(r[k] for r in good) for k in (*METRICS, "seconds")}
        out.append({"run": run, **mean, "count": len(good)})
    return out


def by_image(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("psnr", "ssim")
             ) -> List[Dict[str, Any]]:
    """One row per image, the runs side by side: ``{"name", "psnr_<run>", "ssim_<run>", ...,
    "seconds"}`` (seconds summed over the runs; an image with an error is left out). With several
    seeds a run's value is its mean over them."""
    out: Dict[str, Dict[str, Any]] = {}
    failed = {r["name"] for r in rows if "error" in r}
    runs = list(dict.fromkeys(r["run"] for r in rows))
    for name in dict.fromkeys(r["name"] for r in rows if r["name"] not in failed):
        mine = [r for r in rows if r["name"] == name]
        row: Dict[str, Any] = {"name": name}
        for metric in metrics:
            for run in runs:
                row[f"{metric}_{run}"] = _finite_mean(r[metric] for r in mine if r["run"] == run)
        row["seconds"] = sum(r["seconds"] for r in mine)
        out[name] = row
    return list(out.values())


def mean_of(rows: Sequence[Mapping[str, Any]], name: str = "mean") -> Dict[str, Any]:
    """The column means of :func:`by_image` rows, as one more row called ``name``."""
    keys = [k for k in (rows[0] if rows else {}) if k != "name"]
    return {"name": name, **{k: _finite_mean(r[k] for r in rows) for k in keys}}


def format_report(rows: Sequence[Mapping[str, Any]], fmt: str, run: Optional[str] = None) -> str:
    """The rows of one run (default: the first) and their mean, as ``csv`` or ``json``:
    ``name, psnr, ssim`` per image, then the mean. An identical pair's PSNR is infinite: ``inf`` in
    CSV, null with ``"identical": true`` in JSON (a failed row has ``"error"`` instead), and left
    out of the mean PSNR (its SSIM of 1 stays in)."""
    run = run if run is not None else (rows[0]["run"] if rows else None)
    mine = [r for r in rows if r["run"] == run]
    good = [r for r in mine if "error" not in r]
    mean = {"name": "mean", "psnr": _finite_mean(r["psnr"] for r in good),
            "ssim": _finite_mean(r["ssim"] for r in good)}
    images = [{"name": r["name"], "psnr": r.get("psnr"), "ssim": r.get("ssim"),
               **({"error": r["error"]} if "error" in r else {}),
               **({"identical": True} if r.get("psnr") == math.inf else {})} for r in mine]
    if fmt == "json":
        def finite(v: Any) -> Any:  # strict JSON: an infinite PSNR (identical images) is null
            return None if isinstance(v, float) and not math.isfinite(v) else v

        clean = [{k: finite(v) for k, v in r.items()} for r in images + [mean]]
        identical = sum(1 for r in images if r.get("identical"))
        return json.dumps({"images": clean[:-1], "mean": clean[-1], "count": len(good), "identical": identical},
                          indent=2, allow_nan=False) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", "psnr", "ssim"])
    for r in images + [mean]:
        writer.writerow([r["name"], "" if r["psnr"] is None else "inf" if r["psnr"] == math.inf else f"{r['psnr']:.4f}",
                         "" if r["ssim"] is None else f"{r['ssim']:.6f}"])
    return buf.getvalue()
