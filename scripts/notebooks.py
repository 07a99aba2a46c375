"""Keep the notebooks' two forms in step: ``notebooks/NN_name.py`` (jupytext percent format, the
source people edit and review) and ``notebooks/NN_name.ipynb`` (what Colab opens and nbval runs).

    python scripts/notebooks.py sync           # .py -> .ipynb: cells from the source, committed
                                               # outputs of unchanged NBVAL_CHECK_OUTPUT cells kept
    python scripts/notebooks.py store [NAME]   # also execute (smoke mode) and store the outputs of
                                               # the NBVAL_CHECK_OUTPUT cells

A committed notebook holds no outputs and no execution counts except on the cells marked
``# NBVAL_CHECK_OUTPUT``: nbval compares those with their stored (deterministic) outputs and
needs an execution count on them (1, 2, ... in order) to accept stored outputs.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

import jupytext
import nbformat

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CHECK = "# NBVAL_CHECK_OUTPUT"


def sources() -> List[Path]:
    """The notebook sources, in order."""
    return sorted(p for p in NB_DIR.glob("[0-9][0-9]_*.py"))


def is_check(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(CHECK)


def _clean_outputs(outputs: list) -> list:
    kept = []
    for out in outputs:
        out = nbformat.from_dict(dict(out))
        if out.output_type == "execute_result":
            out["execution_count"] = None
        if out.output_type in ("stream", "execute_result"):
            kept.append(out)
    return kept


def _execute(nb) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    os.environ["DEHAZEDDPM_SMOKE"] = "1"
    os.environ["DEHAZEDDPM_OFFLINE"] = "1"
    return NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NB_DIR)}}).execute()


def build(src: Path, store: bool) -> nbformat.NotebookNode:
    """The committed form of one notebook: cells from ``src``, ids and checked outputs from the
    existing .ipynb (or from a fresh execution with ``store``)."""
    nb = jupytext.read(src)
    target = src.with_suffix(".ipynb")
    old = nbformat.read(target, as_version=4) if target.is_file() else None
    old_by_source: Dict[str, nbformat.NotebookNode] = {c.source: c for c in (old.cells if old else [])}
    stored: Dict[int, list] = {}
    if store:
        executed = _execute(nbformat.from_dict(nb))
        stored = {i: _clean_outputs(c.get("outputs", [])) for i, c in enumerate(executed.cells) if is_check(c)}
    count = 0
    for i, cell in enumerate(nb.cells):
        prev: Optional[nbformat.NotebookNode] = old_by_source.get(cell.source)
        if prev is not None and "id" in prev:
            cell["id"] = prev["id"]  # content-matched ids: inserting a cell renumbers nothing
        if cell.cell_type != "code":
            cell.pop("outputs", None)
            cell.pop("execution_count", None)
            continue
        outputs = stored.get(i) if store else (prev.get("outputs", []) if prev is not None and is_check(cell) else [])
        cell.outputs = outputs if is_check(cell) else []
        if cell.outputs:
            count += 1
        cell.execution_count = count if cell.outputs else None
    nb.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("sync", "store"))
    ap.add_argument("names", nargs="*", help="notebook stems, e.g. 01_quickstart (default: all)")
    args = ap.parse_args(argv)
    for src in sources():
        if args.names and src.stem not in args.names:
            continue
        nb = build(src, store=args.command == "store")
        nbformat.write(nb, src.with_suffix(".ipynb"))
        print(f"wrote {src.with_suffix('.ipynb').relative_to(NB_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
