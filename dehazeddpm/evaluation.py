"""One evaluation harness: pair files, score a pipeline over pairs and seeds, summarise.

Layer: evaluation, above ``inference`` (it runs a pipeline) and ``data`` (the pairing rule and the
public datasets' readers), below ``viz`` and ``cli``. ``dehazeddpm eval``, notebook 05, the
benchmarks and the scripts all score through :func:`evaluate`, so a number means the same thing
wherever it is printed.

Scoring is done as the papers do and as a user meets the result: the pipeline's 8-bit image
(``res.image``) against the ground truth, both RGB in [0, 1] at full resolution.

- ``psnr``: over all pixels and channels, dB.
- ``ssim``: Wang et al.'s Gaussian window (11 taps, sigma 1.5), per RGB channel then averaged,
  over the valid window positions (:func:`dehazeddpm.metrics.ssim`; equals scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  channel_axis=-1)``). Papers that compute SSIM on the Y channel or with an 8x8 box window
  report other numbers.
- ``ciede2000``: the mean CIEDE2000 colour difference (lower is better).
- ``lpips``: LPIPS (AlexNet, v0.1) when its weights are on the machine (:mod:`dehazeddpm.perceptual`).
- ``haze``: the no-reference mean dark channel of the result, [0, 1], higher hazier
  (:func:`dehazeddpm.metrics.haze_density`); also scored for photos without ground truth.
- ``abs_da``, ``abs_db``: the colour cast, |mean a*| and |mean b*| (CIE Lab) of the result
  minus the ground truth's.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .data.datasets import pair_key
from .data.public import DATASETS, DatasetError, Pair, dataset_pairs
from .inference.pipeline import BrokenModelError, DehazePipeline, DehazeResult
from .io.images import ImageReadError, is_image_file, load_image
from .metrics import ciede2000, haze_density, mean_ab, psnr, ssim
from .utils import atomic_write

__all__ = ["DATASETS", "DEFAULT_CALL", "HAZY", "HIGHER_IS_BETTER", "METRICS", "PUBLISHED", "REPORT_FORMATS", "STAGE1",
           "DatasetError", "JournalError", "Pair", "PairingError", "by_image", "dataset_pairs", "evaluate",
           "comparison", "expected_rows", "format_report", "load_pairs", "mean_of", "pair_folders", "pairs_in", "score",
           "summarize"]

# Runs of :func:`evaluate`: pipeline options by name. None scores the input itself (the hazy
# image, or an already dehazed one); ``{"steps": 0}`` is stage 1's J; ``{}`` the weights' default.
HAZY: Optional[Mapping[str, Any]] = None
STAGE1: Mapping[str, Any] = {"steps": 0}
DEFAULT_CALL: Mapping[str, Any] = {}
METRICS = ("psnr", "ssim", "ciede2000", "lpips", "haze", "abs_da", "abs_db")
# the direction of each metric, for tables: True when higher is better
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "ciede2000": False, "lpips": False, "haze": False,
                    "abs_da": False, "abs_db": False}


# Published PSNR / SSIM on each dataset's standard test split, with where each number is stated.
# As printed by their authors: SSIM conventions (window, colour space) differ between papers.
_FOCALNET = "Cui et al., FocalNet (ICCV 2023), README of github.com/c-yn/FocalNet"
_CONVIR = "Cui et al., ConvIR (TPAMI 2024), README of github.com/c-yn/ConvIR"
_FSNET = "Cui et al., FSNet (TPAMI 2023), README of github.com/c-yn/FSNet"
PUBLISHED: Tuple[Dict[str, Any], ...] = tuple(
    {"method": method, "dataset": dataset, "psnr": p, "ssim": q, "source": source}
    for method, source, scores in (
        ("FocalNet", _FOCALNET, {"nh-haze": (20.43, 0.79), "dense-haze": (17.07, 0.63), "o-haze": (25.50, 0.94)}),
        ("ConvIR-S", _CONVIR, {"nh-haze": (20.65, 0.807), "dense-haze": (17.45, 0.648), "o-haze": (25.25, 0.784),
                               "i-haze": (21.95, 0.888), "sots-indoor": (41.53, 0.996),
                               "sots-outdoor": (37.95, 0.994)}),
        ("ConvIR-B", _CONVIR, {"nh-haze": (20.66, 0.802), "dense-haze": (16.86, 0.621), "o-haze": (25.36, 0.780),
                               "i-haze": (22.44, 0.887), "sots-indoor": (42.72, 0.997),
                               "sots-outdoor": (39.42, 0.996)}),
        ("FSNet", _FSNET, {"nh-haze": (20.55, 0.81), "dense-haze": (17.13, 0.65), "sots-indoor": (42.45, 0.997),
                           "sots-outdoor": (40.40, 0.997)}),
    )
    for dataset, (p, q) in scores.items())


def comparison(dataset: str, summary: Sequence[Mapping[str, Any]] = (), label: str = "this package") -> List[Dict[str, Any]]:
    """The published rows of ``dataset`` (:data:`PUBLISHED`, best PSNR first) and, below them, the
    runs of ``summary`` (:func:`summarize` of rows scored on the same split) as
    ``"<label>: <run>"``: one table of method, PSNR, SSIM and source."""
    rows = sorted((dict(r) for r in PUBLISHED if r["dataset"] == dataset), key=lambda r: -r["psnr"])
    rows = [{k: r[k] for k in ("method", "psnr", "ssim", "source")} for r in rows]
    rows += [{"method": f"{label}: {s['run']}", "psnr": s.get("psnr"), "ssim": s.get("ssim"),
              "source": "measured here"} for s in summary]
    return rows


class PairingError(ValueError):
    """Files that cannot be paired: several images of one pairing key in a folder."""


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


class JournalError(ValueError):
    """A journal of rows written for another evaluation (other pairs, runs, seeds or weights)."""


def load_pairs(dataset: str, root: Union[str, Path], split: str = "test") -> List[Pair]:
    """The pairs to evaluate: a public dataset by name (:data:`DATASETS`, its ``split``), or
    ``dataset="folder"`` for a folder with ``hazy/`` and ``gt/`` subfolders paired by the one rule
    (:func:`pairs_in`; there an image without a partner is a :class:`DatasetError` naming it)."""
    if dataset == "folder":
        pairs, lonely = pairs_in(root)
        if lonely:
            raise DatasetError(f"{lonely[0]} has no partner in {root}")
        if not pairs:
            raise DatasetError(f"no image pairs in {root} (expected hazy/ and gt/ subfolders)")
        return pairs
    return dataset_pairs(dataset, root, split)


def score(pred: torch.Tensor, gt: torch.Tensor, lpips: Optional[torch.nn.Module] = None) -> Dict[str, float]:
    """The metrics of ``pred`` against ``gt`` (both (1, 3, H, W), [0, 1]; see the module docstring):
    psnr, ssim, ciede2000, haze, abs_da, abs_db, and lpips when an :class:`~dehazeddpm.perceptual.LPIPS`
    is given."""
    if pred.shape != gt.shape:
        raise ValueError(f"size {tuple(pred.shape[-2:])} differs from ground truth {tuple(gt.shape[-2:])}")
    (a, b), (ga, gb) = mean_ab(pred), mean_ab(gt)
    out = {"psnr": psnr(pred, gt), "ssim": ssim(pred, gt), "ciede2000": ciede2000(pred, gt),
           "haze": haze_density(pred), "abs_da": abs(a - ga), "abs_db": abs(b - gb)}
    if lpips is not None:
        device = next(lpips.parameters()).device
        with torch.inference_mode():
            out["lpips"] = float(lpips(pred.to(device), gt.to(device))[0])
    return out


OnResult = Callable[[Pair, str, int, Optional[DehazeResult]], None]


def _is_deterministic(options: Optional[Mapping[str, Any]]) -> bool:
    return options is None or options.get("steps") == 0


def expected_rows(pairs: Sequence[Pair], runs: Mapping[str, Optional[Mapping[str, Any]]],
                  seeds: Sequence[int]) -> int:
    """How many rows :func:`evaluate` gives (a progress bar's total)."""
    return len(pairs) * sum(1 if _is_deterministic(o) else len(seeds) for o in runs.values())


def _read_journal(path: Path, identity: Mapping[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """Rows of a journal written for ``identity``, by pair name; a new journal when there is none."""
    header = {"dehazeddpm_eval_journal": 1, "identity": identity}
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: tmp.write_text(json.dumps(header) + "\n"))
        return {}
    lines = path.read_text().splitlines()
    try:
        found = json.loads(lines[0])["identity"] if lines else None
    except (ValueError, KeyError, TypeError):
        found = None
    if found != json.loads(json.dumps(identity)):
        if isinstance(found, dict):
            key = next((k for k in identity if found.get(k) != json.loads(json.dumps(identity[k]))), "settings")
            what = f"was written for another evaluation (its {key} differ)"
        else:
            what = "is not a journal of dehazeddpm eval"
        raise JournalError(f"{path} {what}; delete it to start over, or report to another file")
    done: Dict[str, List[Dict[str, Any]]] = {}
    for line in lines[1:]:
        try:
            block = json.loads(line)
        except ValueError:
            break  # the line a kill cut short: that pair is done again
        done[block["name"]] = block["rows"]
    return done


def _append_journal(path: Path, name: str, rows: List[Dict[str, Any]]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps({"name": name, "rows": rows}) + "\n")
        f.flush()
        os.fsync(f.fileno())


def evaluate(pipe: Optional[DehazePipeline], pairs: Sequence[Pair], runs: Mapping[str, Optional[Mapping[str, Any]]],
             seeds: Sequence[int] = (0,), *, max_pixels: Optional[int] = None, progress: bool = False,
             on_result: Optional[OnResult] = None, on_error: Optional[Callable[[Pair, str], None]] = None,
             lpips: Optional[torch.nn.Module] = None, journal: Union[str, Path, None] = None,
             identity: Optional[Mapping[str, Any]] = None) -> List[Dict[str, Any]]:
    """Score each run over ``pairs`` and ``seeds``: one row per (pair, run, seed).

    runs: ``{name: options}``; options are the pipeline's keywords (a dict of
        :class:`~dehazeddpm.options.SamplingOptions` fields, ``samples=K`` for the mean of K
        samples), :data:`STAGE1` for stage 1's J, :data:`DEFAULT_CALL` for the weights' default,
        or :data:`HAZY` (None) to score the input itself. Deterministic runs (HAZY, STAGE1) are
        scored with the first seed only.
    pipe: may be None when every run is HAZY.
    on_result: ``on_result(pair, run, seed, result)`` after each row (result None for HAZY and
        for rows read back from the journal).
    on_error: ``on_error(pair, reason)`` for a pair that could not be read or scored; its rows
        then carry ``error`` and no metrics. A broken model (:class:`BrokenModelError`) is raised.
    lpips: an LPIPS network (:func:`dehazeddpm.perceptual.load_lpips`) to score with, or None.
    journal: a JSON-lines file that each finished pair's rows are appended to; a rerun with the
        same pairs, runs, seeds and ``identity`` (e.g. the weights) takes them from it instead
        of computing them again, so an interrupted evaluation goes on where it stopped. One
        written for anything else is a :class:`JournalError`.

    Rows: ``name``, ``run``, ``seed``, the metrics of :func:`score`, ``seconds``.
    """
    done: Dict[str, List[Dict[str, Any]]] = {}
    if journal is not None:
        journal = Path(journal)
        ident = {"pairs": [[p.name, str(p.input), str(p.gt)] for p in pairs],
                 "runs": {k: None if v is None else dict(v) for k, v in runs.items()}, "seeds": list(seeds),
                 "lpips": lpips is not None, "max_pixels": max_pixels, **dict(identity or {})}
        done = _read_journal(journal, ident)
    rows: List[Dict[str, Any]] = []
    for pair in pairs:
        if pair.name in done:
            rows.extend(done[pair.name])
            for r in done[pair.name]:
                if on_result is not None:
                    on_result(pair, r["run"], r["seed"], None)
            continue
        mine: List[Dict[str, Any]] = []
        try:
            gt = load_image(pair.gt, max_pixels=max_pixels)
            inp = load_image(pair.input, max_pixels=max_pixels)
            for run, options in runs.items():
                mine.extend(_score_run(pipe, pair, inp, gt, run, options, seeds, progress, on_result, lpips))
        except BrokenModelError:
            raise
        except (ImageReadError, ValueError, OSError, MemoryError) as exc:
            reason = "not enough memory for an image of this size" if isinstance(exc, MemoryError) else str(exc)
            if on_error is not None:
                on_error(pair, reason)
            rows.extend({"name": pair.name, "run": run, "seed": None, "error": reason} for run in runs)
            continue
        rows.extend(mine)
        if journal is not None:
            _append_journal(journal, pair.name, mine)
    return rows


def _score_run(pipe: Optional[DehazePipeline], pair: Pair, inp: torch.Tensor, gt: torch.Tensor, run: str,
               options: Optional[Mapping[str, Any]], seeds: Sequence[int], progress: bool,
               on_result: Optional[OnResult], lpips: Optional[torch.nn.Module]) -> List[Dict[str, Any]]:
    rows = []
    for seed in (seeds[:1] if _is_deterministic(options) else seeds):
        t0 = time.perf_counter()
        if options is None:
            res, pred = None, inp
        else:
            if pipe is None:
                raise ValueError(f"run {run!r} needs a pipeline")
            res = pipe(inp, seed=seed, progress=progress, options=options)
            pred = load_image(res.image)  # the 8-bit image a user gets
        seconds = time.perf_counter() - t0
        rows.append({"name": pair.name, "run": run, "seed": seed, **score(pred, gt, lpips), "seconds": seconds})
        if on_result is not None:
            on_result(pair, run, seed, res)
    return rows


def _finite_mean(values: Iterable[Optional[float]]) -> Optional[float]:
    """The mean of the finite values (an identical pair's infinite PSNR has no place in a mean)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _metrics_in(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    return [m for m in METRICS if any(m in r for r in rows)]


def summarize(rows: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
    """Per run: the mean of each metric and of the seconds over the rows without an error, and
    their count (seeds and images together)."""
    out: List[Dict[str, Any]] = []
    metrics = _metrics_in(rows) or ["psnr", "ssim"]
    for run in dict.fromkeys(r["run"] for r in rows):
        good = [r for r in rows if r["run"] == run and "error" not in r]
        mean = {k: _finite_mean(r.get(k) for r in good) for k in (*metrics, "seconds")}
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
                row[f"{metric}_{run}"] = _finite_mean(r.get(metric) for r in mine if r["run"] == run)
        row["seconds"] = sum(r["seconds"] for r in mine)
        out[name] = row
    return list(out.values())


def mean_of(rows: Sequence[Mapping[str, Any]], name: str = "mean") -> Dict[str, Any]:
    """The column means of :func:`by_image` rows, as one more row called ``name``."""
    keys = [k for k in (rows[0] if rows else {}) if k != "name"]
    return {"name": name, **{k: _finite_mean(r[k] for r in rows) for k in keys}}


REPORT_FORMATS = ("csv", "json", "md")


def _cell(v: Any, digits: int) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "inf" if v == math.inf else f"{v:.{digits}f}"
    return str(v)


def format_report(rows: Sequence[Mapping[str, Any]], fmt: str, meta: Optional[Mapping[str, Any]] = None) -> str:
    """Every row (one per image, run and seed) and each run's means, as ``csv``, ``json`` or
    ``md`` (Markdown: the means, then the rows). ``meta`` (what was evaluated: dataset, split,
    weights, options, seeds) heads the JSON and the Markdown. An identical pair's PSNR is
    infinite: ``inf`` in CSV and Markdown, null with ``"identical": true`` in JSON (a failed
    row has ``"error"`` instead), and left out of the mean PSNR (its SSIM of 1 stays in)."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format must be one of {', '.join(REPORT_FORMATS)}, got {fmt!r}")
    metrics = _metrics_in(rows) or ["psnr", "ssim"]
    summary = summarize(rows)
    columns = ["name", "run", "seed", *metrics, "seconds"]
    errors = any("error" in r for r in rows)
    if fmt == "json":
        def finite(v: Any) -> Any:  # strict JSON: an infinite PSNR (identical images) is null
            return None if isinstance(v, float) and not math.isfinite(v) else v

        images = [{**{k: finite(v) for k, v in r.items()}, **({"identical": True} if r.get("psnr") == math.inf else {})}
                  for r in rows]
        return json.dumps({"meta": dict(meta or {}), "images": images,
                           "summary": {s["run"]: {k: finite(v) for k, v in s.items() if k != "run"} for s in summary},
                           "identical": sum(1 for r in images if r.get("identical"))},
                          indent=2, allow_nan=False) + "\n"
    table = [[_cell(r.get(c), 4 if c in ("psnr", "seconds", "ciede2000", "abs_da", "abs_db") else 6)
              for c in columns] + ([r.get("error", "")] if errors else []) for r in rows]
    means = [["mean", s["run"], ""] + [_cell(s.get(m), 4 if m in ("psnr", "ciede2000", "abs_da", "abs_db") else 6)
                                       for m in metrics] + [_cell(s["seconds"], 4)] + ([""] if errors else [])
             for s in summary]
    header = columns + (["error"] if errors else [])
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([header, *table, *means])
        return buf.getvalue()
    lines = [f"- {k}: {v}" for k, v in (meta or {}).items()]
    arrow = {m: " ↑" if HIGHER_IS_BETTER[m] else " ↓" for m in metrics}
    head = ["run", "count", *(m + arrow[m] for m in metrics), "s/image"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join([s["run"], str(s["count"])] + m[3:]) + " |"
              for s, m in zip(summary, (row[:3 + len(metrics) + 1] for row in means))]
    lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in table]
    return "\n".join(lines).lstrip("\n") + "\n"
