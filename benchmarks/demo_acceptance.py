"""The demo weights' acceptance checks, from two runs of ``benchmarks/quality.py`` (no model runs here).

Usage::

    python benchmarks/demo_acceptance.py BEFORE.json AFTER.json [--json out.json]

Per (haze kind, size) cell of the held-out eval photos, with the thresholds of the issue
"Bundled demo weights that clear real smoke without a colour cast":

- stage 1's J on nh and dense haze at least +2 dB over BEFORE's at 256 px and the original size;
- J on depth haze not below BEFORE's by more than 0.2 dB at any size;
- the default call's mean |a* - a*gt| and |b* - b*gt| within 3 Lab units on every kind;
- the default call not below J by more than 0.2 dB PSNR and 0.02 SSIM at any size.

Beside the checks, which judge each cell's mean as the issue does, each row names the photo whose
J lost most against BEFORE (when both runs kept their photos' numbers): a cell's mean can hide it.
Prints a markdown table (each check marked met or missed) and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from dehazeddpm.utils import write_json

ROOT = Path(__file__).resolve().parents[1]
J, DEFAULT = "stage 1 J", "default call"


def _cells(result: Dict[str, Any]) -> Dict[Tuple[str, str, str], Dict[str, float]]:
    return {(r["haze"], r["size"], r["method"]): r for r in result["rows"]}


def checks(before: Dict[str, Any], after: Dict[str, Any]) -> List[Dict[str, Any]]:
    """One row per (kind, size) present in both runs: the numbers and which checks it meets."""
    b, a = _cells(before), _cells(after)
    rows = []
    for (kind, size, method) in a:
        if method != J or (kind, size, J) not in b or (kind, size, DEFAULT) not in a:
            continue
        j0, j1, d1 = b[(kind, size, J)], a[(kind, size, J)], a[(kind, size, DEFAULT)]
        gain = j1["psnr"] - j0["psnr"]
        row: Dict[str, Any] = {
            "haze": kind, "size": size, "J_before": j0["psnr"], "J_after": j1["psnr"], "J_gain": gain,
            "default_minus_J_psnr": d1["psnr"] - j1["psnr"], "default_minus_J_ssim": d1["ssim"] - j1["ssim"],
            "default_da": d1["mean_abs_da"], "default_db": d1["mean_abs_db"],
            "default_da_before": b[(kind, size, DEFAULT)]["mean_abs_da"] if (kind, size, DEFAULT) in b else None,
            "default_db_before": b[(kind, size, DEFAULT)]["mean_abs_db"] if (kind, size, DEFAULT) in b else None,
        }
        p0, p1 = j0.get("photos") or {}, j1.get("photos") or {}
        shared = [n for n in p1 if n in p0]
        if shared:
            worst = min(shared, key=lambda n: p1[n] - p0[n])
            row["J_worst_photo"], row["J_worst_photo_gain"] = worst, p1[worst] - p0[worst]
        if kind == "depth":
            row["J_check"] = gain >= -0.2
        elif size in ("256", "original"):
            row["J_check"] = gain >= 2.0
        else:
            row["J_check"] = None  # not asked at this size
        row["colour_check"] = max(row["default_da"], row["default_db"]) <= 3.0
        row["stage2_check"] = row["default_minus_J_psnr"] >= -0.2 and row["default_minus_J_ssim"] >= -0.02
        rows.append(row)
    return rows


def _mark(ok: Optional[bool]) -> str:
    return "-" if ok is None else ("met" if ok else "**missed**")


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--json", default=str(ROOT / "runs" / "demo_acceptance.json"))
    args = ap.parse_args(argv)
    try:
        before, after = (json.loads(Path(f).read_text()) for f in (args.before, args.after))
    except (OSError, json.JSONDecodeError) as exc:
        ap.error(f"cannot read a quality.py result: {exc}")
    rows = checks(before, after)
    if not rows:
        ap.error("the two runs share no (haze, size) cell with both stage 1 J and the default call")
    lines = ["| haze | size | J before -> after (dB) | J check | J's worst photo (dB) | default - J: dB / SSIM | "
             "stage-2 check | default's abs(a*), abs(b*) error: before -> after | colour check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        before_ab = ("-" if r["default_da_before"] is None
                     else f"{r['default_da_before']:.1f}, {r['default_db_before']:.1f}")
        worst = (f"{r['J_worst_photo']} {r['J_worst_photo_gain']:+.2f}" if "J_worst_photo" in r else "-")
        lines.append(f"| {r['haze']} | {r['size']} | {r['J_before']:.2f} -> {r['J_after']:.2f} ({r['J_gain']:+.2f}) | "
                     f"{_mark(r['J_check'])} | {worst} | {r['default_minus_J_psnr']:+.2f} / {r['default_minus_J_ssim']:+.3f} | "
                     f"{_mark(r['stage2_check'])} | {before_ab} -> {r['default_da']:.1f}, {r['default_db']:.1f} | "
                     f"{_mark(r['colour_check'])} |")
    table = "\n".join(lines)
    print(table)
    write_json(args.json, {"command": "python benchmarks/demo_acceptance.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           "before": before.get("command"), "after": after.get("command"), "rows": rows,
                           "markdown": table})
    return 0


if __name__ == "__main__":
    sys.exit(main())
