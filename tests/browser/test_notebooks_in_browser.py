"""Every notebook, in smoke mode, in headless Chromium on both frontend stacks.

Runs when ``DEHAZEDDPM_BROWSER_STACKS`` names the stacks' virtual environments
(``classic=/path/to/venv,lab=/path/to/venv``; ``.ci/browser`` builds them) and Chromium and
Playwright are installed; skipped otherwise (the README's test command does not need a browser).
Screenshots and a JSON report per notebook go to ``DEHAZEDDPM_BROWSER_RESULTS`` (default
``results/browser``).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest

from .frontends import CHROMIUM, CHROMIUM_ARGS, REPO, JupyterServer, run_notebook

STACKS = dict(item.split("=", 1) for item in os.environ.get("DEHAZEDDPM_BROWSER_STACKS", "").split(",") if "=" in item)
RESULTS = Path(os.environ.get("DEHAZEDDPM_BROWSER_RESULTS", REPO / "results" / "browser"))
NOTEBOOKS = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# the notebooks' widget cells (each must render and respond to every control)
WIDGET_CELLS = {"01_quickstart.ipynb": 1, "02_stage1_physics.ipynb": 1, "03_denoising_trajectory.ipynb": 1,
                "04_why_reference_inference_gives_noise.ipynb": 0, "05_evaluate.ipynb": 1,
                "06_finetune.ipynb": 0}

pytestmark = pytest.mark.skipif(not STACKS, reason="set DEHAZEDDPM_BROWSER_STACKS (see .ci/browser) to run")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM} (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", params=sorted(STACKS) or ["none"])
def server(request, tmp_path_factory):
    stack = request.param
    with JupyterServer(stack, Path(STACKS[stack]), tmp_path_factory.mktemp(f"jupyter_{stack}")) as s:
        yield s


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_the_browser(browser, server, name) -> None:
    report = run_notebook(browser, server, name, RESULTS, widget_cells=WIDGET_CELLS[name])
    out = RESULTS / server.stack / f"{Path(name).stem}.json"
    out.write_text(json.dumps(asdict(report), indent=2) + "\n")
    assert report.problems() == [], f"{server.stack} {name}: {report.problems()} (screenshots in {out.parent})"
    assert report.widgets == WIDGET_CELLS[name], f"{report.widgets} widget cells rendered"
    assert len(report.controls_moved) >= WIDGET_CELLS[name]
    assert report.images, "no figure was shown"
