"""Rules R7, R8, R9, R10 (also R11's verdict), R13, S1, S2, S3, W1 to W5, D7 and D8 (docs/benchmarks.md): which demo stage 1 ships, and whether its matched denoiser does.

Usage::

    python benchmarks/stage1_rule.py --candidate round6=R6_STAGE1 --candidate round7=R7_STAGE1
    python benchmarks/stage1_rule.py --rule r8 --round5 R5_STAGE1 --candidate round9=R9_STAGE1
    python benchmarks/stage1_rule.py --rule r9 --round5 R5_STAGE1 --candidate round10=R10_STAGE1
    python benchmarks/stage1_rule.py --rule r10 --candidate round11=R11_STAGE1
    python benchmarks/stage1_rule.py --rule r10 --candidate round12=R12_STAGE1  # Rule R11: R10's tests
    python benchmarks/stage1_rule.py --rule r13 --candidate round17=R17_STAGE1  # photos neither trained on
    python benchmarks/stage1_rule.py --pair R7_STAGE1 R7_DENOISER          # Rule D7
    python benchmarks/stage1_rule.py --rule s1                             # Rule S1
    python benchmarks/stage1_rule.py --rule s2                             # Rule S2
    python benchmarks/stage1_rule.py --rule w1                             # Rule W1
    python benchmarks/stage1_rule.py --rule w2                             # Rule W2
    python benchmarks/stage1_rule.py --rule w3                             # Rule W3
    python benchmarks/stage1_rule.py --rule w4                             # Rule W4
    python benchmarks/stage1_rule.py --rule d8 --candidate round15=R15_DENOISER  # Rule D8: denoiser files
    python benchmarks/stage1_rule.py --rule s3                             # Rule S3
    python benchmarks/stage1_rule.py --rule w5                             # Rule W5
    python benchmarks/stage1_rule.py --rule w5b                            # Rule W5b: photos stage 1 never saw

Every rule here but W5b and R13 judges on training-photo pairs (``make_eval_set(split="train")``,
the 8 photos of :data:`NAMES`; W5b and R13 also on photos stage 1 never trained on), never on the eval photos, per
(haze kind, size) cell: kinds depth, nh and dense, shorter sides 128 and 384, haze seeds 0, 1, 2. Each cell's mean is over photos and seeds; cells
are never averaged together.

R7 scores stage 1's J (as the pipeline runs it, at the demo's working size) of the bundled stage 1
and of each candidate. A candidate passes when every nh and dense cell gains at least
:data:`GAIN_DB` over the bundled stage 1 and no depth cell loses more than :data:`DEPTH_LOSS_DB`.
Of those that pass, the largest smallest nh/dense gain wins, unless another passing candidate's is
within :data:`CLOSE_DB` of it with a lower mean colour error (|a*| + |b*| error over all cells).

R8 (a colour round) also scores round 5's stage 1 (``--round5``; the issue's baseline). A
candidate replaces the bundled stage 1 when it passes R7 against round 5, no cell's PSNR is more
than :data:`R8_PSNR_DB` below the bundled one's, and its colour error is at least
:data:`R8_COLOUR` below the bundled one's in every nh and dense cell and at most
:data:`R8_DEPTH_COLOUR` above it in any depth cell; the lowest nh/dense colour error wins.

R9 (per photo) also keeps each photo's mean over the haze seeds. A candidate replaces the bundled
stage 1 when it passes R7 against round 5, no photo in any cell is more than :data:`R9_PHOTO_DB`
below round 5's, no nh or dense cell is more than :data:`R9_HARD_DB` below the bundled one's and
no cell's colour error is more than :data:`R9_COLOUR` above the bundled one's; the highest
smallest per-photo gain over round 5 wins.

R10 (a dense round) judges a candidate against the bundled stage 1 alone: every dense cell gains at
least :data:`R10_DENSE_DB`, no other cell loses more than :data:`R10_CELL_DB`, no photo in any cell
loses more than :data:`R10_PHOTO_DB` and no cell's colour error rises more than :data:`R9_COLOUR`;
the largest smallest dense gain wins.

R13 (a round on more photos) judges a candidate against the bundled stage 1 on photos neither
trained on (:data:`JUDGE_SET`, :func:`judge_pairs`, over :data:`W5B_SEEDS`): every cell gains at
least :data:`R13_GAIN_DB`, no photo in any cell loses more than :data:`R10_PHOTO_DB`, no cell's
colour error rises more than :data:`R9_COLOUR`; and on the rule photos no cell loses more than
:data:`R10_CELL_DB`. The largest smallest gain on the judge photos wins.

S1 scores the bundled weights' default call against calls that average K samples of fewer steps
each at the same UNet work (:data:`S1_CANDIDATES`). One replaces the default when no cell's SSIM is
lower and no cell's PSNR lower by more than :data:`S1_PSNR_DB`; the highest smallest (SSIM - SSIM
of J) wins, the fewer samples within :data:`S1_CLOSE_SSIM` of it. (Its wall time is judged
separately, by ``benchmarks/default_call.py``.)

S2 does the same among calls whose first step is no closer to J than the call issue #26 was filed
against (:data:`S2_CANDIDATES`, judged against :data:`S2_BASELINE`, with S1's margins).

W1 does the same for the denoiser at a working size (:data:`W1_CANDIDATES`, ``denoise_size``),
judged against the default call at full resolution on :data:`W1_SIZES`.

W2 scores the bundled stage 1's J at other working sizes (:data:`W2_CANDIDATES`, ``stage1_size``)
against today's 128 px: each nh and dense cell must gain :data:`W2_GAIN_DB`, no depth cell lose
more than :data:`W2_DEPTH_DB`, no photo more than :data:`R10_PHOTO_DB`, no cell's colour error rise
more than :data:`R9_COLOUR`; the largest smallest nh/dense gain wins, the smaller working size
within :data:`W2_CLOSE_DB` of it.

W3 scores stage 1's J and the default call with the input's fine detail (:data:`W3_CANDIDATES`,
``stage1_detail``) against today's: in every cell J may lose at most :data:`S1_PSNR_DB` and no
SSIM, no photo more than :data:`R10_PHOTO_DB`, no colour error rise more than :data:`R9_COLOUR`,
and the default call may lose at most :data:`S1_PSNR_DB` and no SSIM; the largest smallest J
gain wins, the smaller N within :data:`W2_CLOSE_DB` of it.

W4 scores stage 1's J and the default call on images smaller than stage 1's working size, with the
input's detail taken at the image's size (the package) against at the enlarged size stage 1 ran at
(:class:`DetailAtNetSize`, the behaviour before W4), on :data:`W4_SIZES`, with W3's tests.

D7 scores the demo default call with a stage 1 and the bundled denoiser against the same stage 1
with a new denoiser (sampling seed 0). The new denoiser ships with the stage 1 when its mean PSNR
over the cells is not lower and its mean SSIM is not lower by more than :data:`D7_SSIM`.

D8 scores the default call with the bundled stage 1 and each candidate denoiser (``--candidate
NAME=DENOISER``) against the bundled denoiser on :data:`D8_SIZES`: D7's means, and no cell may lose
more than :data:`D8_CELL_DB` or :data:`D8_CELL_SSIM`; the passing candidate with the highest worst
SSIM gap to J over the cells wins, the higher mean PSNR within :data:`S1_CLOSE_SSIM` of it.

S3 scores the default call against calls from the same start and chain that average K samples
and/or denoise the working-size image in one tile (:data:`S3_CANDIDATES`) on :data:`D8_SIZES`, with
S1's margins and no colour error more than :data:`R9_COLOUR` above the baseline's; the highest
worst SSIM gap to J wins, the one with less UNet work within :data:`S1_CLOSE_SSIM` of it.

W5 scores stage 1's J and the default call with stage 1 averaged with its mirror
(:data:`W5_CANDIDATES`, ``stage1_flip``) against one pass, on :data:`D8_SIZES`, with W3's tests.
W5b scores the same two J on photos the shipped stage 1 never trained on (:data:`UNSEEN_PHOTOS`,
:func:`unseen_pairs`) over :data:`W5B_SEEDS`: the mirror stays the default only if no cell loses more
than :data:`S1_PSNR_DB`.

Writes JSON and prints a markdown table and the verdict.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from dehazeddpm.data import INDEPENDENT_PHOTOS, JUDGE_PHOTOS, MORE_TRAIN_PHOTOS, TRAIN_PHOTOS, make_eval_set
from dehazeddpm.diffusion import sampling_schedule
from dehazeddpm.evaluation import DEFAULT_CALL, STAGE1, Pair, by_image, evaluate, summarize
from dehazeddpm.hub import WeightsError
from dehazeddpm.inference import DehazePipeline, pin_threads, stage1_at_size
from dehazeddpm.io import CheckpointError, ImageReadError
from dehazeddpm.models import Stage1Output
from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
NAMES = list(TRAIN_PHOTOS)[::2]  # every other training photo, as Rule R6
KINDS = ("depth", "nh", "dense")
SIZES = (128, 384)
HAZE_SEEDS = (0, 1, 2)
GAIN_DB = 1.0       # each nh and dense cell, over the bundled stage 1
DEPTH_LOSS_DB = 0.2  # the most a depth cell may lose
CLOSE_DB = 0.5
D7_SSIM = 0.005
R8_PSNR_DB = 0.1     # the most any cell may lose against the bundled stage 1
R8_COLOUR = 1.0      # the least each nh and dense cell's colour error must drop (Lab units)
R8_DEPTH_COLOUR = 0.3  # the most a depth cell's colour error may rise
R9_PHOTO_DB = 1.0    # the most one photo (mean over the haze seeds) may lose against round 5, in any cell
R9_HARD_DB = 0.3     # the most an nh or dense cell may lose against the bundled stage 1
R9_COLOUR = 0.3      # the most any cell's colour error may rise against the bundled stage 1
R10_DENSE_DB = 0.3   # the least each dense cell must gain over the bundled stage 1
R10_CELL_DB = 0.1    # the most a depth or nh cell may lose against it
R10_PHOTO_DB = 0.5   # the most one photo (mean over the haze seeds) may lose against it, in any cell
ROUND5_RULES = ("r8", "r9")  # the rules that also score round 5's stage 1 (--round5)
# Rule S1: today's default, and K samples of fewer steps at the same UNet work (start 0.3 runs
# 6 of 20 respaced steps, 3 of 10, 2 of 7)
S1_CANDIDATES: Dict[str, Dict[str, Any]] = {"today": {}, "2 of 10 steps": {"samples": 2, "steps": 10},
                                            "3 of 7 steps": {"samples": 3, "steps": 7}}
S1_PSNR_DB = 0.05
S1_CLOSE_SSIM = 0.002
# Rule S2: the call #26 was filed against (its first step t = 526) and calls at the same UNet work
# whose first step is no lower, in order of more steps per sample; "3 of 7 steps" (t = 333) is
# scored for the record only. S2 reuses S1's margins.
S2_BASELINE = "1 of 20 steps"
S2_CANDIDATES: Dict[str, Dict[str, Any]] = {S2_BASELINE: {"samples": 1, "steps": 20},
                                            "3 of 2 steps": {"samples": 3, "steps": 2},
                                            "6 of 1 step": {"samples": 6, "steps": 1},
                                            "3 of 7 steps": {"samples": 3, "steps": 7}}
# Rule W1: the denoiser at a working size (``denoise_size``), in order of preference (the larger
# working size, nearer the full-resolution method, first); judged with S1's margins, on 64 px
# cells too, where the eval table misses most
W1_BASELINE = "full resolution"
W1_CANDIDATES: Dict[str, Dict[str, Any]] = {W1_BASELINE: {"denoise_size": 0}, "at 256 px": {"denoise_size": 256},
                                            "at 192 px": {"denoise_size": 192}, "at 128 px": {"denoise_size": 128}}
W1_SIZES = (64, 128, 384)
# Rule W2: stage 1's working size for the bundled weights; the baseline is today's
W2_BASELINE = "at 128 px"
W2_CANDIDATES: Dict[str, Dict[str, Any]] = {f"at {n} px": {"stage1_size": n} for n in (128, 96, 160, 192, 256)}
W2_GAIN_DB = 0.2     # the least each nh and dense cell must gain over the baseline
W2_DEPTH_DB = 0.1    # the most a depth cell may lose
W2_CLOSE_DB = 0.1    # within this of the best smallest gain, the smaller working size wins
# Rule W3: J's detail finer than N px from the input (``stage1_detail``); the baseline is today's
W3_BASELINE = "own J"
W3_CANDIDATES: Dict[str, Dict[str, Any]] = {W3_BASELINE: {"stage1_detail": 0},
                                            **{f"detail below {n} px": {"stage1_detail": n} for n in (2, 3, 4)}}
# Rule W4: sizes where stage 1 enlarges the image (its working size is 128); at 128 px and above
# the two placements of the detail are the same computation
W4_SIZES = (64, 96)
W4_BASELINE = "at the enlarged size"
W4_CANDIDATE = "at the image's size"
# Rule D8: a denoiser round judged on the sizes the eval misses at and the enlarged path
D8_SIZES = (64, 128, 384)
D8_CELL_DB = 0.1     # the most one cell's PSNR may lose against the bundled denoiser
D8_CELL_SSIM = 0.01  # the most one cell's SSIM may lose
# Rule S3: the same chain and start (t = 526), K samples averaged and/or the 128 px working image
# denoised in one tile (a tile of 256 covers it up to 2:1; beyond, tiles overlap by a quarter); the
# baseline, then the candidates in order of UNet work per image, least first (at 128x171: K x one
# 128x171 tile; the baseline 2 of 128x136). Spelled out in full, so that the rule judges the same
# calls after the demo's defaults became the winner's.
S3_BASELINE = "today"
S3_CANDIDATES: Dict[str, Dict[str, Any]] = {
    S3_BASELINE: {"samples": 1, "tile_size": 136, "tile_overlap": 8},
    "one tile": {"samples": 1, "tile_size": 256},
    "2 samples, one tile": {"samples": 2, "tile_size": 256},
    "3 samples, one tile": {"samples": 3, "tile_size": 256},
    "2 samples": {"samples": 2, "tile_size": 136, "tile_overlap": 8}}
# Rule W5: one stage-1 pass against the mean of the image's and its mirror's, both spelled out
W5_BASELINE = "one pass"
W5_CANDIDATE = "with its mirror"
W5_CANDIDATES: Dict[str, Dict[str, Any]] = {W5_BASELINE: {"stage1_flip": False}, W5_CANDIDATE: {"stage1_flip": True}}

# Rule W5b: photos the shipped stage 1 (round 8's, trained on TRAIN_PHOTOS) never trained on, other
# than the eval photos: glymur's two, and matplotlib's portrait (reserved for evaluation, never trained on)
UNSEEN_PHOTOS = (*MORE_TRAIN_PHOTOS, *INDEPENDENT_PHOTOS)
W5B_SEEDS = (0, 1, 2, 3, 4, 5)
# Rule R13: photos no shipped or candidate stage 1 trains on (the CC BY-SA wallpapers, and
# matplotlib's portrait), for rounds that train on glymur's photos or the wallpapers
JUDGE_SET = (*JUDGE_PHOTOS, *INDEPENDENT_PHOTOS)
R13_GAIN_DB = 0.1    # the least every cell of the judge photos must gain over the bundled stage 1

Cell = Tuple[str, int]


class DetailAtNetSize(DehazePipeline):
    """Stage 1's J as before Rule W4: the input's detail taken at the size stage 1 ran at, also when
    that size enlarged the image (the baseline W4 judges against)."""

    def stage1_outputs(self, x01: torch.Tensor, size: Optional[int] = None, precision: str = "fp32",
                       detail: int = 0, flip: bool = False) -> Stage1Output:
        if not (detail and size):
            return super().stage1_outputs(x01, size, precision, detail, flip)

        def at_net_size(img: torch.Tensor) -> Stage1Output:
            return DehazePipeline.stage1_outputs(self, img, None, precision, detail, flip)

        with torch.inference_mode():
            return stage1_at_size(at_net_size, x01.to(self.device), size)


def rule_pairs(out_dir: str, size: int, seed: int, kind: str) -> List[Tuple[Path, Path]]:
    """The rules' pairs: the photos of :data:`NAMES`, hazed as ``make_eval_set`` hazes them."""
    return make_eval_set(out_dir, size=size, seed=seed, kind=kind, split="train", names=NAMES)


def _pairs_of_splits(out_dir: str, size: int, seed: int, kind: str,
                     parts: Sequence[Tuple[str, Optional[Sequence[str]]]]) -> List[Tuple[Path, Path]]:
    """``make_eval_set``'s pairs for each (split, names or None) of ``parts``, one subfolder each."""
    return [pair for split, names in parts
            for pair in make_eval_set(Path(out_dir) / split, size=size, seed=seed, kind=kind, split=split, names=names)]


def unseen_pairs(out_dir: str, size: int, seed: int, kind: str) -> List[Tuple[Path, Path]]:
    """Rule W5b's pairs: photos the shipped stage 1 never trained on, other than the eval photos
    (:data:`UNSEEN_PHOTOS`), made by ``make_eval_set`` as every rule's pairs are."""
    return _pairs_of_splits(out_dir, size, seed, kind, [("train_all", MORE_TRAIN_PHOTOS), ("independent", None)])


def judge_pairs(out_dir: str, size: int, seed: int, kind: str) -> List[Tuple[Path, Path]]:
    """Rule R13's pairs: :data:`JUDGE_SET`, made by ``make_eval_set`` as every rule's pairs are."""
    return _pairs_of_splits(out_dir, size, seed, kind, [("judge", None), ("independent", None)])


def cell_scores(pipe: DehazePipeline, run: Dict[str, Any], seeds: Sequence[int] = (0,),
                sizes: Sequence[int] = SIZES, pairs_of: Callable[[str, int, int, str], List[Tuple[Path, Path]]]
                = rule_pairs, haze_seeds: Sequence[int] = HAZE_SEEDS) -> Dict[Cell, Dict[str, Any]]:
    """{(kind, size): mean psnr, ssim, abs_da, abs_db} of ``run`` over ``pairs_of``'s photos (the
    rules': NAMES) x ``haze_seeds`` (x ``seeds``), and ``photos``: {photo: its mean PSNR over the seeds}."""
    out: Dict[Cell, Dict[str, Any]] = {}
    for kind in KINDS:
        for size in sizes:
            rows: List[Dict[str, Any]] = []
            for hs in haze_seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    pairs = [Pair(h.stem, h, g) for h, g in pairs_of(tmp, size, hs, kind)]
                    rows += evaluate(pipe, pairs, {"run": run}, seeds)
            s = summarize(rows)[0]
            out[(kind, size)] = {**{k: float(s[k]) for k in ("psnr", "ssim", "abs_da", "abs_db")},
                                 "photos": {p["name"]: p["psnr_run"] for p in by_image(rows, ("psnr",))}}
            print(f"  {kind:5s} {size:4d}  PSNR {s['psnr']:6.2f}  SSIM {s['ssim']:.4f}  |da| {s['abs_da']:.2f}  "
                  f"|db| {s['abs_db']:.2f}", flush=True)
    return out


def colour_error(cell: Dict[str, float]) -> float:
    """|a* - a*gt| + |b* - b*gt| of one cell (its mean over pairs)."""
    return cell["abs_da"] + cell["abs_db"]


def judge_r7(bundled: Dict[Cell, Dict[str, float]], candidates: Dict[str, Dict[Cell, Dict[str, float]]]
             ) -> Dict[str, Any]:
    """Rule R7's verdict: per candidate its gains, pass/fail and why; and the winner (or None)."""
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in candidates.items():
        gains = {f"{k} {s}": cells[(k, s)]["psnr"] - bundled[(k, s)]["psnr"] for k, s in cells}
        hard = [g for c, g in gains.items() if not c.startswith("depth")]
        depth = [g for c, g in gains.items() if c.startswith("depth")]
        why = []
        if min(hard) < GAIN_DB:
            why.append(f"smallest nh/dense gain {min(hard):+.2f} dB < {GAIN_DB:+.1f}")
        if min(depth) < -DEPTH_LOSS_DB:
            why.append(f"depth loses {min(depth):+.2f} dB < {-DEPTH_LOSS_DB:+.1f}")
        colour = sum(colour_error(c) for c in cells.values()) / len(cells)
        verdicts[name] = {"gains_db": gains, "min_hard_gain": min(hard), "colour_error": colour,
                          "passes": not why, "why_not": why}
    passing = sorted((v["min_hard_gain"], n) for n, v in verdicts.items() if v["passes"])
    winner = passing[-1][1] if passing else None
    if winner is not None:
        close = [n for g, n in passing if g >= verdicts[winner]["min_hard_gain"] - CLOSE_DB]
        winner = min(close, key=lambda n: verdicts[n]["colour_error"])
    return {"candidates": verdicts, "winner": winner}


def judge_r8(round5: Dict[Cell, Dict[str, float]], bundled: Dict[Cell, Dict[str, float]],
             candidates: Dict[str, Dict[Cell, Dict[str, float]]]) -> Dict[str, Any]:
    """Rule R8's verdict: per candidate R7 against round 5, its PSNR and colour against the bundled
    stage 1 per cell, pass/fail and why; and the winner (or None)."""
    r7 = judge_r7(round5, candidates)["candidates"]
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in candidates.items():
        why = [f"R7 against round 5: {w}" for w in r7[name]["why_not"]]
        d_psnr = {c: cells[c]["psnr"] - bundled[c]["psnr"] for c in cells}
        d_colour = {c: colour_error(cells[c]) - colour_error(bundled[c]) for c in cells}
        worst = min(d_psnr, key=d_psnr.get)
        if d_psnr[worst] < -R8_PSNR_DB:
            why.append(f"{worst[0]} {worst[1]} loses {d_psnr[worst]:+.2f} dB < {-R8_PSNR_DB:+.1f}")
        for c, d in d_colour.items():
            if c[0] != "depth" and d > -R8_COLOUR:
                why.append(f"{c[0]} {c[1]} colour error {d:+.2f} (needs <= {-R8_COLOUR:+.1f})")
            if c[0] == "depth" and d > R8_DEPTH_COLOUR:
                why.append(f"{c[0]} {c[1]} colour error {d:+.2f} (> {R8_DEPTH_COLOUR:+.1f})")
        hard = [colour_error(v) for c, v in cells.items() if c[0] != "depth"]
        verdicts[name] = {"psnr_vs_bundled": {f"{k} {s}": v for (k, s), v in d_psnr.items()},
                          "colour_vs_bundled": {f"{k} {s}": v for (k, s), v in d_colour.items()},
                          "hard_colour_error": sum(hard) / len(hard), "passes": not why, "why_not": why}
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = min(passing, key=lambda n: verdicts[n]["hard_colour_error"]) if passing else None
    return {"candidates": verdicts, "winner": winner}


def photo_gains(base: Dict[Cell, Dict[str, Any]], cells: Dict[Cell, Dict[str, Any]]) -> Dict[str, float]:
    """{"kind size photo": PSNR gain of ``cells`` over ``base``}, each photo's mean over the seeds."""
    return {f"{k} {s} {n}": v - base[(k, s)]["photos"][n] for (k, s), c in cells.items() for n, v in c["photos"].items()}


def judge_r9(round5: Dict[Cell, Dict[str, Any]], bundled: Dict[Cell, Dict[str, Any]],
             candidates: Dict[str, Dict[Cell, Dict[str, Any]]]) -> Dict[str, Any]:
    """Rule R9's verdict: per candidate R7 against round 5, each photo's gain over round 5, its nh
    and dense PSNR and every cell's colour against the bundled stage 1, pass/fail and why; the
    bundled stage 1's own per-photo gains; and the winner (or None)."""
    r7 = judge_r7(round5, candidates)["candidates"]
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in candidates.items():
        why = [f"R7 against round 5: {w}" for w in r7[name]["why_not"]]
        gains = photo_gains(round5, cells)
        why += [f"{c} loses {g:+.2f} dB against round 5 (< {-R9_PHOTO_DB:+.1f})" for c, g in gains.items()
                if g < -R9_PHOTO_DB]
        for c, v in cells.items():
            d_psnr = v["psnr"] - bundled[c]["psnr"]
            if c[0] != "depth" and d_psnr < -R9_HARD_DB:
                why.append(f"{c[0]} {c[1]} loses {d_psnr:+.2f} dB against the bundled stage 1 (< {-R9_HARD_DB:+.1f})")
            d_colour = colour_error(v) - colour_error(bundled[c])
            if d_colour > R9_COLOUR:
                why.append(f"{c[0]} {c[1]} colour error {d_colour:+.2f} against the bundled stage 1 (> {R9_COLOUR:+.1f})")
        worst = min(gains, key=gains.get)
        verdicts[name] = {"worst_photo": worst, "worst_photo_gain": gains[worst], "photo_gains": gains,
                          "passes": not why, "why_not": why}
    bundled_gains = photo_gains(round5, bundled)
    worst = min(bundled_gains, key=bundled_gains.get)
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = max(passing, key=lambda n: verdicts[n]["worst_photo_gain"]) if passing else None
    return {"candidates": verdicts, "bundled": {"worst_photo": worst, "worst_photo_gain": bundled_gains[worst],
                                                "photo_gains": bundled_gains}, "winner": winner}


def judge_gains(base: Dict[Cell, Dict[str, Any]], cells: Dict[Cell, Dict[str, Any]], gain_kinds: Sequence[str],
                gain_db: float, loss_db: float) -> Dict[str, Any]:
    """One candidate's cells against ``base``, as R10 and W2 judge them: each cell of ``gain_kinds``
    must gain ``gain_db``, no other cell lose more than ``loss_db``, no photo more than
    :data:`R10_PHOTO_DB`, no cell's colour error rise more than :data:`R9_COLOUR`. Returns the
    smallest gain over ``gain_kinds``, the worst photo, the photo gains, passes and why not."""
    why: List[str] = []
    gains_wanted = []
    for c, v in cells.items():
        d_psnr = v["psnr"] - base[c]["psnr"]
        if c[0] in gain_kinds:
            gains_wanted.append(d_psnr)
            if d_psnr < gain_db:
                why.append(f"{c[0]} {c[1]} gains {d_psnr:+.2f} dB < {gain_db:+g}")
        elif d_psnr < -loss_db:
            why.append(f"{c[0]} {c[1]} loses {d_psnr:+.2f} dB < {-loss_db:+g}")
        d_colour = colour_error(v) - colour_error(base[c])
        if d_colour > R9_COLOUR:
            why.append(f"{c[0]} {c[1]} colour error {d_colour:+.2f} (> {R9_COLOUR:+g})")
    gains = photo_gains(base, cells)
    why += [f"{c} loses {g:+.2f} dB (< {-R10_PHOTO_DB:+g})" for c, g in gains.items() if g < -R10_PHOTO_DB]
    worst = min(gains, key=gains.get)
    return {"min_gain": min(gains_wanted) if gains_wanted else None, "worst_photo": worst, "worst_photo_gain": gains[worst],
            "photo_gains": gains, "passes": not why, "why_not": why}


def judge_r10(bundled: Dict[Cell, Dict[str, Any]], candidates: Dict[str, Dict[Cell, Dict[str, Any]]]
              ) -> Dict[str, Any]:
    """Rule R10's verdict: per candidate its dense gains, other cells, photos and colour against the
    bundled stage 1, pass/fail and why; and the winner (or None)."""
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in candidates.items():
        v = judge_gains(bundled, cells, ("dense",), R10_DENSE_DB, R10_CELL_DB)
        verdicts[name] = {"min_dense_gain": v.pop("min_gain"), **v}
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = max(passing, key=lambda n: verdicts[n]["min_dense_gain"]) if passing else None
    return {"candidates": verdicts, "winner": winner}


def judge_r13(bundled_judge: Dict[Cell, Dict[str, Any]], bundled_rule: Dict[Cell, Dict[str, Any]],
              candidates: Dict[str, Tuple[Dict[Cell, Dict[str, Any]], Dict[Cell, Dict[str, Any]]]]) -> Dict[str, Any]:
    """Rule R13's verdict. ``bundled_judge`` / ``bundled_rule``: the bundled stage 1's J on the judge
    photos and on the rule photos; ``candidates``: name -> (its J on the judge photos, on the rule
    photos). Per candidate: its gains, photos and colour, pass/fail and why; and the winner (or None)."""
    kinds = tuple(k for k, _ in bundled_judge)
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, (judge, rule) in candidates.items():
        v = judge_gains(bundled_judge, judge, kinds, R13_GAIN_DB, 0.0)
        seen = {f"{k} {s}": rule[(k, s)]["psnr"] - bundled_rule[(k, s)]["psnr"] for k, s in rule}
        why = list(v["why_not"]) + [f"rule photos {c} loses {d:+.2f} dB < {-R10_CELL_DB:+g}"
                                    for c, d in seen.items() if d < -R10_CELL_DB]
        verdicts[name] = {"min_gain": v["min_gain"], "worst_photo": v["worst_photo"],
                          "worst_photo_gain": v["worst_photo_gain"], "photo_gains": v["photo_gains"],
                          "rule_photo_cells": seen, "passes": not why, "why_not": why}
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = max(passing, key=lambda n: verdicts[n]["min_gain"]) if passing else None
    return {"candidates": verdicts, "winner": winner}


def judge_w2(base: Dict[Cell, Dict[str, Any]], candidates: Dict[str, Dict[Cell, Dict[str, Any]]],
             sizes: Dict[str, int]) -> Dict[str, Any]:
    """Rule W2's verdict: per candidate its nh/dense gains, depth, photos and colour against the
    baseline, pass/fail and why; the passing ones in the order they would ship; the winner (or None).
    ``sizes``: each candidate's working size (the tie-break)."""
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in candidates.items():
        v = judge_gains(base, cells, ("nh", "dense"), W2_GAIN_DB, W2_DEPTH_DB)
        verdicts[name] = {"min_hard_gain": v.pop("min_gain"), **v}
    order: List[str] = []
    left = [n for n, v in verdicts.items() if v["passes"]]
    while left:  # the best smallest gain; within W2_CLOSE_DB of it, the smaller working size
        best = max(verdicts[n]["min_hard_gain"] for n in left)
        pick = min((n for n in left if verdicts[n]["min_hard_gain"] >= best - W2_CLOSE_DB), key=sizes.get)
        order.append(pick)
        left.remove(pick)
    return {"candidates": verdicts, "order": order, "winner": order[0] if order else None}


def judge_w3(j: Dict[Cell, Dict[str, Any]], call: Dict[Cell, Dict[str, Any]],
             candidates: Dict[str, Tuple[Dict[Cell, Dict[str, Any]], Dict[Cell, Dict[str, Any]]]],
             factors: Dict[str, int]) -> Dict[str, Any]:
    """Rule W3's verdict. ``j``, ``call``: today's J and default call per cell; ``candidates``:
    name -> (its J, its default call); ``factors``: each candidate's N (the tie-break)."""
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, (cj, cc) in candidates.items():
        v = judge_gains(j, cj, (), 0.0, S1_PSNR_DB)  # no kind must gain; every cell's loss bounded
        why = list(v["why_not"])
        for c in cj:
            if cj[c]["ssim"] < j[c]["ssim"]:
                why.append(f"J {c[0]} {c[1]} SSIM {cj[c]['ssim'] - j[c]['ssim']:+.4f}")
            d_call = cc[c]["psnr"] - call[c]["psnr"]
            if d_call < -S1_PSNR_DB:
                why.append(f"default call {c[0]} {c[1]} loses {d_call:+.2f} dB < {-S1_PSNR_DB:+g}")
            if cc[c]["ssim"] < call[c]["ssim"]:
                why.append(f"default call {c[0]} {c[1]} SSIM {cc[c]['ssim'] - call[c]['ssim']:+.4f}")
        gains = [cj[c]["psnr"] - j[c]["psnr"] for c in cj]
        verdicts[name] = {"min_gain": min(gains), "worst_photo": v["worst_photo"],
                          "worst_photo_gain": v["worst_photo_gain"], "photo_gains": v["photo_gains"],
                          "passes": not why, "why_not": why}
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = None
    if passing:
        best = max(verdicts[n]["min_gain"] for n in passing)
        winner = min((n for n in passing if verdicts[n]["min_gain"] >= best - W2_CLOSE_DB), key=factors.get)
    return {"candidates": verdicts, "winner": winner}


def judge_s1(j: Dict[Cell, Dict[str, float]], runs: Dict[str, Dict[Cell, Dict[str, float]]],
             baseline: str = "today", colour_rise: Optional[float] = None) -> Dict[str, Any]:
    """Rules S1, S2 and S3: per call in ``runs`` (the ``baseline`` and the candidates, in order of
    preference: the first within :data:`S1_CLOSE_SSIM` of the best wins) its worst SSIM gap to J,
    pass/fail against the baseline and why; and the winner (the baseline when none passes).
    ``colour_rise``: the most a cell's colour error may rise over the baseline's (S3), or None."""
    today = runs[baseline]
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, cells in runs.items():
        why = []
        for c, v in cells.items():
            if v["ssim"] < today[c]["ssim"]:
                why.append(f"{c[0]} {c[1]} SSIM {v['ssim'] - today[c]['ssim']:+.4f} below the baseline's")
            if v["psnr"] < today[c]["psnr"] - S1_PSNR_DB:
                why.append(f"{c[0]} {c[1]} PSNR {v['psnr'] - today[c]['psnr']:+.2f} dB < {-S1_PSNR_DB:+.2f}")
            rise = colour_error(v) - colour_error(today[c])
            if colour_rise is not None and rise > colour_rise:
                why.append(f"{c[0]} {c[1]} colour error {rise:+.2f} > {colour_rise:+g}")
        verdicts[name] = {"worst_ssim_gap_to_j": min(v["ssim"] - j[c]["ssim"] for c, v in cells.items()),
                          "passes": name == baseline or not why, "why_not": why if name != baseline else []}
    passing = [n for n in runs if verdicts[n]["passes"]]
    best = max(verdicts[n]["worst_ssim_gap_to_j"] for n in passing)
    # runs are in order of preference (S1: fewer samples; S2: more steps per sample)
    winner = next(n for n in passing if verdicts[n]["worst_ssim_gap_to_j"] >= best - S1_CLOSE_SSIM)
    return {"candidates": verdicts, "winner": winner}


def judge_d7(old: Dict[Cell, Dict[str, float]], new: Dict[Cell, Dict[str, float]]) -> Dict[str, Any]:
    """Rule D7's verdict: mean PSNR and SSIM over the cells with the bundled and the new denoiser."""
    mean = lambda cells, k: sum(c[k] for c in cells.values()) / len(cells)  # noqa: E731
    d_psnr, d_ssim = mean(new, "psnr") - mean(old, "psnr"), mean(new, "ssim") - mean(old, "ssim")
    return {"delta_psnr": d_psnr, "delta_ssim": d_ssim, "ships": d_psnr >= 0 and d_ssim >= -D7_SSIM}


def judge_d8(j: Dict[Cell, Dict[str, float]], old: Dict[Cell, Dict[str, float]],
             candidates: Dict[str, Dict[Cell, Dict[str, float]]]) -> Dict[str, Any]:
    """Rule D8's verdict. ``j``: stage 1's J per cell; ``old``: the default call with the bundled
    denoiser; ``candidates``: name -> the default call with that denoiser."""
    verdicts: Dict[str, Dict[str, Any]] = {}
    for name, new in candidates.items():
        v = judge_d7(old, new)
        why = [] if v["ships"] else [f"mean PSNR {v['delta_psnr']:+.3f} dB, SSIM {v['delta_ssim']:+.4f} (D7)"]
        for c in new:
            if new[c]["psnr"] - old[c]["psnr"] < -D8_CELL_DB:
                why.append(f"{c[0]} {c[1]} PSNR {new[c]['psnr'] - old[c]['psnr']:+.2f} dB < {-D8_CELL_DB:+g}")
            if new[c]["ssim"] - old[c]["ssim"] < -D8_CELL_SSIM:
                why.append(f"{c[0]} {c[1]} SSIM {new[c]['ssim'] - old[c]['ssim']:+.4f} < {-D8_CELL_SSIM:+g}")
        verdicts[name] = {"delta_psnr": v["delta_psnr"], "delta_ssim": v["delta_ssim"],
                          "worst_ssim_gap_to_j": min(new[c]["ssim"] - j[c]["ssim"] for c in new),
                          "passes": not why, "why_not": why}
    passing = [n for n, v in verdicts.items() if v["passes"]]
    winner = None
    if passing:
        best = max(verdicts[n]["worst_ssim_gap_to_j"] for n in passing)
        winner = max((n for n in passing if verdicts[n]["worst_ssim_gap_to_j"] >= best - S1_CLOSE_SSIM),
                     key=lambda n: verdicts[n]["delta_psnr"])
    return {"candidates": verdicts, "winner": winner,
            "bundled_worst_ssim_gap_to_j": min(old[c]["ssim"] - j[c]["ssim"] for c in old)}


def _table(columns: Dict[str, Dict[Cell, Dict[str, float]]], sizes: Sequence[int] = SIZES) -> str:
    head = "| haze | size | " + " | ".join(columns) + " |"
    lines = [head, "|---|---|" + "---|" * len(columns)]
    for k in KINDS:
        for s in sizes:
            lines.append(f"| {k} | {s} | " + " | ".join(
                f"{c[(k, s)]['psnr']:.2f} / {c[(k, s)]['ssim']:.3f} / {c[(k, s)]['abs_da']:.1f}, {c[(k, s)]['abs_db']:.1f}"
                for c in columns.values()) + " |")
    return "\n".join(lines)


def _report(rule: str, verdict: Dict[str, Any], summary: Callable[[Dict[str, Any]], str]) -> None:
    """One line per candidate of ``verdict``: passes, or fails and why, then ``summary`` of it."""
    for n, v in verdict["candidates"].items():
        print(f"{rule} {n}: {'passes' if v['passes'] else 'fails: ' + '; '.join(v['why_not'])} ({summary(v)})")


def _judge_calls(rule: str, candidates: Dict[str, Dict[str, Any]], baseline: str, sizes: Sequence[int],
                 cols: Dict[str, Dict[Cell, Dict[str, Any]]], colour_rise: Optional[float] = None) -> Dict[str, Any]:
    """Rules S1, S3 and W1: the bundled weights' J and their default call with each of
    ``candidates``' options (the ``baseline`` among them), scored into ``cols`` on ``sizes``,
    judged by :func:`judge_s1` and reported."""
    pipe = _load(None, None)
    print("stage 1's J", flush=True)
    cols["J"] = cell_scores(pipe, dict(STAGE1), sizes=sizes)
    for name, opts in candidates.items():
        print(f"default call, {name}", flush=True)
        cols[name] = cell_scores(pipe, {**DEFAULT_CALL, **opts}, sizes=sizes)
    verdict = judge_s1(cols["J"], {n: cols[n] for n in candidates}, baseline=baseline, colour_rise=colour_rise)
    _report(rule, verdict, lambda v: f"worst SSIM gap to J {v['worst_ssim_gap_to_j']:+.4f}")
    return verdict


def _judge_j_and_call(rule: str, runs: Dict[str, Tuple[DehazePipeline, Dict[str, Any]]], baseline: str,
                      candidate: str, sizes: Sequence[int], cols: Dict[str, Dict[Cell, Dict[str, Any]]],
                      stays: str) -> Dict[str, Any]:
    """Rules W4 and W5: stage 1's J and the default call of ``runs`` (name -> pipeline, options),
    scored into ``cols`` on ``sizes``, the one ``candidate`` judged against ``baseline`` by W3's
    tests (:func:`judge_w3`) and reported; ``stays``: what the verdict says when it fails."""
    for name, (pipe, opts) in runs.items():
        print(f"stage 1's J, {name}", flush=True)
        cols[f"J, {name}"] = cell_scores(pipe, {**STAGE1, **opts}, sizes=sizes)
        print(f"default call, {name}", flush=True)
        cols[f"default, {name}"] = cell_scores(pipe, {**DEFAULT_CALL, **opts}, sizes=sizes)
    verdict = judge_w3(cols[f"J, {baseline}"], cols[f"default, {baseline}"],
                       {candidate: (cols[f"J, {candidate}"], cols[f"default, {candidate}"])}, {candidate: 0})
    _report(rule, verdict, lambda v: f"smallest J gain {v['min_gain']:+.2f} dB, worst photo "
                                     f"{v['worst_photo']} {v['worst_photo_gain']:+.2f} dB")
    print(f"{rule} ships: {verdict['winner'] or stays}"
          + (" (if its wall time passes: benchmarks/default_call.py)" if verdict["winner"] else ""))
    return verdict


def _first_step(pipe: DehazePipeline, opts: Dict[str, Any]) -> int:
    """The training-grid timestep at which the default call with ``opts`` starts from J."""
    run = sampling_schedule(pipe.schedule, opts["steps"], pipe.resolve_options(**opts).start_strength)
    return int(max(run.timesteps))


def _load(stage1: Optional[str], denoiser: Optional[str], cls: type = DehazePipeline) -> DehazePipeline:
    return cls.from_pretrained("demo", device="cpu", stage1=stage1, denoiser=denoiser, download=False,
                               progress=False)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", action="append", default=[], metavar="NAME=FILE",
                    help="a stage-1 file (Rules R7-R10), or a denoiser file (Rule D8)")
    ap.add_argument("--rule", choices=("r7", "r8", "r9", "r10", "r13", "s1", "s2", "s3", "w1", "w2", "w3", "w4", "w5",
                                      "w5b", "d8"),
                    default="r7",
                    help="the rule that judges --candidate (s1, s2, s3, w1: the default call; w2, w3, w4, w5: stage "
                         "1's working size, detail and mirror; no candidate files for these)")
    ap.add_argument("--round5", metavar="FILE", help="round 5's stage 1 (Rules R8 and R9: the baseline for R7)")
    ap.add_argument("--pair", nargs=2, metavar=("STAGE1", "DENOISER"), help="Rule D7 for this stage 1 and denoiser")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=str(ROOT / "runs" / "stage1_rule.json"))
    args = ap.parse_args(argv)
    cands = dict(c.split("=", 1) for c in args.candidate if "=" in c)
    call_rule = args.rule in ("s1", "s2", "s3", "w1", "w2", "w3", "w4", "w5", "w5b")
    if len(cands) != len(args.candidate) or not (cands or args.pair or call_rule):
        ap.error("give --candidate NAME=FILE (one or more) or --pair STAGE1 DENOISER")
    if call_rule and cands:
        ap.error(f"--rule {args.rule} judges the bundled weights' default call: give no --candidate")
    needs_round5 = args.rule in ROUND5_RULES
    if needs_round5 and not (cands and args.round5):
        ap.error(f"--rule {args.rule} needs --round5 FILE and one or more --candidate NAME=FILE")
    for f in list(cands.values()) + list(args.pair or []) + ([args.round5] if needs_round5 else []):
        if not Path(f).is_file():
            ap.error(f"no such file: {f}")
    pin_threads(args.threads)
    t0 = time.time()
    result: Dict[str, Any] = {"command": "python benchmarks/stage1_rule.py " + " ".join(sys.argv[1:] if argv is None else argv),
                              "names": NAMES, "haze_seeds": list(HAZE_SEEDS), "torch": torch.__version__}
    cols: Dict[str, Dict[Cell, Dict[str, float]]] = {}
    if cands and args.rule != "d8":
        # every file is loaded (and checked) before minutes of scoring begin
        pipes = {**({"round5": _load(args.round5, None)} if needs_round5 else {}),
                 "bundled": _load(None, None), **{name: _load(f, None) for name, f in cands.items()}}
        for name, pipe in pipes.items():
            print(name, flush=True)
            cols[name] = cell_scores(pipe, dict(STAGE1))
            if args.rule == "r13":
                print(f"{name}, judge photos", flush=True)
                cols[f"{name}, judge photos"] = cell_scores(pipe, dict(STAGE1), pairs_of=judge_pairs,
                                                            haze_seeds=W5B_SEEDS)
        judged = {n: cols[n] for n in cands}
        if args.rule == "r13":
            verdict = result["r13"] = judge_r13(cols["bundled, judge photos"], cols["bundled"],
                                                {n: (cols[f"{n}, judge photos"], cols[n]) for n in cands})
            _report("R13", verdict, lambda v: f"smallest judge-photo gain {v['min_gain']:+.2f} dB, worst photo "
                                              f"{v['worst_photo']} {v['worst_photo_gain']:+.2f} dB")
        elif args.rule == "r8":
            verdict = result["r8"] = judge_r8(cols["round5"], cols["bundled"], judged)
            _report("R8", verdict, lambda v: f"nh/dense colour error {v['hard_colour_error']:.2f}")
        elif args.rule == "r9":
            verdict = result["r9"] = judge_r9(cols["round5"], cols["bundled"], judged)
            print(f"R9 the bundled stage 1's worst photo: {verdict['bundled']['worst_photo']} "
                  f"{verdict['bundled']['worst_photo_gain']:+.2f} dB against round 5")
            _report("R9", verdict, lambda v: f"worst photo {v['worst_photo']} {v['worst_photo_gain']:+.2f} dB "
                                             "against round 5")
        elif args.rule == "r10":
            verdict = result["r10"] = judge_r10(cols["bundled"], judged)
            _report("R10", verdict, lambda v: f"smallest dense gain {v['min_dense_gain']:+.2f} dB, worst photo "
                                              f"{v['worst_photo']} {v['worst_photo_gain']:+.2f} dB")
        else:
            verdict = result["r7"] = judge_r7(cols["bundled"], judged)
            _report("R7", verdict, lambda v: f"smallest nh/dense gain {v['min_hard_gain']:+.2f} dB, "
                                             f"colour error {v['colour_error']:.2f}")
        print(f"{args.rule.upper()} ships: {verdict['winner'] or 'the bundled stage 1 (none passes)'}")
    if args.rule == "s1":
        verdict = result["s1"] = _judge_calls("S1", S1_CANDIDATES, "today", SIZES, cols)
        print(f"S1 ships: {verdict['winner']}")
    if args.rule == "s2":
        pipe = _load(None, None)
        starts = {name: _first_step(pipe, opts) for name, opts in S2_CANDIDATES.items()}
        result["first_step"] = starts
        print("stage 1's J", flush=True)
        cols["J"] = cell_scores(pipe, dict(STAGE1))
        for name, opts in S2_CANDIDATES.items():
            print(f"default call, {name} (first step t = {starts[name]})", flush=True)
            cols[name] = cell_scores(pipe, dict(opts))
        eligible = [n for n in S2_CANDIDATES if starts[n] >= starts[S2_BASELINE]]
        verdict = result["s2"] = judge_s1(cols["J"], {n: cols[n] for n in eligible}, baseline=S2_BASELINE)
        verdict["not_eligible"] = {n: f"first step t = {starts[n]} < {starts[S2_BASELINE]}"
                                   for n in S2_CANDIDATES if n not in eligible}
        _report("S2", verdict, lambda v: f"worst SSIM gap to J {v['worst_ssim_gap_to_j']:+.4f}")
        for n, why in verdict["not_eligible"].items():
            gap = min(v["ssim"] - cols["J"][c]["ssim"] for c, v in cols[n].items())
            print(f"S2 {n}: not eligible, {why} (worst SSIM gap to J {gap:+.4f})")
        print(f"S2 ships: {verdict['winner']} (if its wall time passes: benchmarks/default_call.py)")
    if args.rule == "s3":
        verdict = result["s3"] = _judge_calls("S3", S3_CANDIDATES, S3_BASELINE, D8_SIZES, cols, colour_rise=R9_COLOUR)
        print(f"S3 ships: {verdict['winner']} (if its wall time passes: benchmarks/default_call.py)")
    if args.rule == "w1":
        verdict = result["w1"] = _judge_calls("W1", W1_CANDIDATES, W1_BASELINE, W1_SIZES, cols)
        print(f"W1 ships: {verdict['winner']} (if its wall time passes: benchmarks/default_call.py)")
    if args.rule == "w2":
        pipe = _load(None, None)
        for name, opts in W2_CANDIDATES.items():
            print(f"stage 1's J, {name}", flush=True)
            cols[name] = cell_scores(pipe, {**STAGE1, **opts})
        judged = {n: cols[n] for n in W2_CANDIDATES if n != W2_BASELINE}
        verdict = result["w2"] = judge_w2(cols[W2_BASELINE], judged,
                                          {n: W2_CANDIDATES[n]["stage1_size"] for n in judged})
        _report("W2", verdict, lambda v: f"smallest nh/dense gain {v['min_hard_gain']:+.2f} dB, worst photo "
                                         f"{v['worst_photo']} {v['worst_photo_gain']:+.2f} dB")
        print(f"W2 ships: {verdict['winner'] or 'stage 1 stays at 128 px (none passes)'}"
              + (f" (if its wall time passes: benchmarks/default_call.py; then {verdict['order'][1:]})"
                 if verdict["winner"] else ""))
    if args.rule == "w3":
        pipe = _load(None, None)
        for name, opts in W3_CANDIDATES.items():
            print(f"stage 1's J, {name}", flush=True)
            cols[f"J, {name}"] = cell_scores(pipe, {**STAGE1, **opts})
            print(f"default call, {name}", flush=True)
            cols[f"default, {name}"] = cell_scores(pipe, {**DEFAULT_CALL, **opts})
        judged = {n: (cols[f"J, {n}"], cols[f"default, {n}"]) for n in W3_CANDIDATES if n != W3_BASELINE}
        verdict = result["w3"] = judge_w3(cols[f"J, {W3_BASELINE}"], cols[f"default, {W3_BASELINE}"], judged,
                                          {n: W3_CANDIDATES[n]["stage1_detail"] for n in judged})
        _report("W3", verdict, lambda v: f"smallest J gain {v['min_gain']:+.2f} dB, worst photo "
                                         f"{v['worst_photo']} {v['worst_photo_gain']:+.2f} dB")
        print(f"W3 ships: {verdict['winner'] or 'stage 1 own J (none passes)'}"
              + (" (if its wall time passes: benchmarks/default_call.py)" if verdict["winner"] else ""))
    if args.rule == "w4":
        runs = {W4_BASELINE: (_load(None, None, DetailAtNetSize), {}), W4_CANDIDATE: (_load(None, None), {})}
        result["w4"] = _judge_j_and_call("W4", runs, W4_BASELINE, W4_CANDIDATE, W4_SIZES, cols,
                                         "the detail stays at the enlarged size (the candidate fails)")
    if args.rule == "w5":
        pipe = _load(None, None)
        runs = {name: (pipe, opts) for name, opts in W5_CANDIDATES.items()}
        result["w5"] = _judge_j_and_call("W5", runs, W5_BASELINE, W5_CANDIDATE, D8_SIZES, cols,
                                         "one pass stays (the candidate fails)")
    if args.rule == "w5b":
        pipe = _load(None, None)
        for name, opts in W5_CANDIDATES.items():
            print(f"stage 1's J, {name}, unseen photos", flush=True)
            cols[f"J, {name}"] = cell_scores(pipe, {**STAGE1, **opts}, pairs_of=unseen_pairs, haze_seeds=W5B_SEEDS)
        one, both = cols[f"J, {W5_BASELINE}"], cols[f"J, {W5_CANDIDATE}"]
        change = {f"{k} {size}": both[(k, size)]["psnr"] - one[(k, size)]["psnr"] for k, size in one}
        losing = {c: d for c, d in change.items() if d < -S1_PSNR_DB}
        verdict = result["w5b"] = {"psnr_change": change, "photo_gains": photo_gains(one, both),
                                   "losing_cells": losing, "keeps": not losing}
        print("W5b J change per cell: " + ", ".join(f"{c} {d:+.3f} dB" for c, d in change.items()))
        print(f"W5b: {'the mirror stays the default' if verdict['keeps'] else 'the default goes back to one pass'}"
              f" ({'; '.join(f'{c} loses {d:+.3f} dB' for c, d in losing.items()) or 'no cell loses more than 0.05 dB'})")
    if args.rule == "d8":
        pipes = {"bundled": _load(None, None), **{name: _load(None, f) for name, f in cands.items()}}
        print("stage 1's J", flush=True)
        cols["J"] = cell_scores(pipes["bundled"], dict(STAGE1), sizes=D8_SIZES)
        for name, pipe in pipes.items():
            print(f"default call, {name} denoiser", flush=True)
            cols[f"default, {name}"] = cell_scores(pipe, dict(DEFAULT_CALL), sizes=D8_SIZES)
        verdict = result["d8"] = judge_d8(cols["J"], cols["default, bundled"], {n: cols[f"default, {n}"] for n in cands})
        _report("D8", verdict, lambda v: f"mean PSNR {v['delta_psnr']:+.3f} dB, SSIM {v['delta_ssim']:+.4f}, "
                                         f"worst SSIM gap to J {v['worst_ssim_gap_to_j']:+.4f}")
        print(f"D8 ships: {verdict['winner'] or 'the bundled denoiser (none passes)'} (the bundled denoiser's worst "
              f"SSIM gap to J {verdict['bundled_worst_ssim_gap_to_j']:+.4f})")
    if args.pair:
        s1, den = args.pair
        bundled_den, new_den = _load(s1, None), _load(s1, den)
        print("default call, bundled denoiser", flush=True)
        cols["default, bundled denoiser"] = old = cell_scores(bundled_den, dict(DEFAULT_CALL))
        print("default call, new denoiser", flush=True)
        cols["default, new denoiser"] = new = cell_scores(new_den, dict(DEFAULT_CALL))
        result["d7"] = judge_d7(old, new)
        print(f"D7: PSNR {result['d7']['delta_psnr']:+.3f} dB, SSIM {result['d7']['delta_ssim']:+.4f}: "
              f"{'the new denoiser ships' if result['d7']['ships'] else 'the bundled denoiser stays'}")
    result["cells"] = {n: {f"{k} {s}": v for (k, s), v in c.items()} for n, c in cols.items()}
    result["markdown"] = _table(cols, {"w1": W1_SIZES, "w4": W4_SIZES, "d8": D8_SIZES, "s3": D8_SIZES, "w5": D8_SIZES}.get(args.rule, SIZES))
    result["seconds"] = round(time.time() - t0, 1)
    print("PSNR / SSIM / |da|, |db| per cell\n" + result["markdown"])
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (CheckpointError, ImageReadError, WeightsError) as exc:  # a bad file given: one line, no traceback
        sys.exit(f"stage1_rule.py: {exc}")
