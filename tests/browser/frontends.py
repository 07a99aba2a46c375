"""Run the notebooks in headless Chromium on a real Jupyter frontend, the way a user would.

A stack is a virtual environment holding one frontend and the package: ``classic`` (Notebook
6.5.7 + ipywidgets 7.7.1 + widgetsnbextension 3.6.10, Colab's) or ``lab`` (JupyterLab 4 +
ipywidgets 8). :class:`JupyterServer` serves a scratch copy of ``notebooks/`` from that stack
on 127.0.0.1 (smoke mode, offline, an empty weights cache), so nothing in the checkout is written.
:func:`run_notebook` opens one notebook, runs all cells, checks what a user sees, moves every
slider and dropdown, saves, and writes full-page screenshots. Debian's ``/usr/bin/chromium`` is
driven through Playwright, never Playwright's own browser download.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BAD_TEXT = ("Error displaying widget", "Loading widget", "model not found")
# A figure shown below this fraction of its pixel width has unreadable labels; above 1 it is
# stretched (blurry).
MIN_SCALE, MAX_SCALE = 0.7, 1.02
VIEWPORT = {"width": 1400, "height": 900}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """A Jupyter server of one stack over a scratch copy of the notebooks; a context manager."""

    def __init__(self, stack: str, venv: Path, workdir: Path) -> None:
        if stack not in ("classic", "lab"):
            raise ValueError(f"stack must be 'classic' or 'lab', got {stack!r}")
        self.stack, self.venv, self.workdir = stack, Path(venv), Path(workdir)
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.proc: Optional[subprocess.Popen] = None

    @property
    def root(self) -> Path:
        return self.workdir / "notebooks"

    def __enter__(self) -> "JupyterServer":
        if self.root.exists():
            shutil.rmtree(self.root)
        shutil.copytree(REPO / "notebooks", self.root, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        shutil.copy(REPO / "colab_setup.py", self.workdir / "colab_setup.py")
        env = dict(os.environ, DEHAZEDDPM_OFFLINE="1", DEHAZEDDPM_SMOKE="1", MPLBACKEND="Agg",
                   DEHAZEDDPM_CACHE=str(self.workdir / "cache"), JUPYTER_RUNTIME_DIR=str(self.workdir / "runtime"),
                   JUPYTER_DATA_DIR=str(self.workdir / "data"), IPYTHONDIR=str(self.workdir / "ipython"),
                   PATH=f"{self.venv / 'bin'}:{os.environ.get('PATH', '')}")
        # JupyterLab: render every cell (no windowing: the screenshot shows the whole notebook) and
        # ask for no news (no network)
        settings = self.workdir / "lab_settings" / "@jupyterlab"
        for ext, name, value in (("notebook-extension", "tracker", {"windowingMode": "none"}),
                                 ("apputils-extension", "notification", {"fetchNews": "false"})):
            (settings / ext).mkdir(parents=True, exist_ok=True)
            (settings / ext / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
        env["JUPYTERLAB_SETTINGS_DIR"] = str(self.workdir / "lab_settings")
        env.pop("CI", None)  # smoke mode comes from DEHAZEDDPM_SMOKE; CI would also mean it
        env.pop("JUPYTER_CONFIG_DIR", None)
        app = "notebook" if self.stack == "classic" else "lab"
        token_flag = "--NotebookApp.token" if self.stack == "classic" else "--ServerApp.token"
        cmd = [str(self.venv / "bin" / "jupyter"), app, "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"{token_flag}={self.token}", "--port-retries=0", "--allow-root"]
        if self.stack == "lab":
            cmd.append("--LabApp.expose_app_in_browser=True")  # window.jupyterapp, to drive it
        self.log = open(self.workdir / f"server_{self.stack}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter {app} exited; see {self.log.name}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/status?token={self.token}", timeout=2)
                return self
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"jupyter {app} did not answer within 90 s; see {self.log.name}")

    def __exit__(self, *exc: Any) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()

    def url(self, name: str) -> str:
        if self.stack == "classic":
            return f"http://127.0.0.1:{self.port}/notebooks/{name}?token={self.token}"
        return f"http://127.0.0.1:{self.port}/lab/tree/{name}?token={self.token}&reset"

    def shutdown_kernels(self) -> None:
        base = f"http://127.0.0.1:{self.port}/api/kernels"
        for k in json.load(urllib.request.urlopen(f"{base}?token={self.token}", timeout=10)):
            req = urllib.request.Request(f"{base}/{k['id']}?token={self.token}", method="DELETE")
            urllib.request.urlopen(req, timeout=10)


# -- the two frontends, as JavaScript ---------------------------------------------------------------
_JS = {
    "classic": {
        # widgetsnbextension gives the kernel its widget_manager when it has loaded; the manager then
        # asks the kernel for widget state (run_notebook waits that round trip out, "settle_ms")
        "ready": "() => !!(window.Jupyter && Jupyter.notebook && Jupyter.notebook._fully_loaded"
                 " && Jupyter.notebook.kernel && Jupyter.notebook.kernel.is_connected()"
                 " && Jupyter.notebook.kernel.widget_manager)",
        # a fresh kernel without ipywidgets closes the manager's control comm, and its fallback
        # (list the kernel's comms, reopen each) raced cells already creating widgets: views never
        # rendered ("Control comm was closed too early" in the console; 1-2 notebooks in 12 runs)
        "settle_ms": 3000,
        "run_all": "() => Jupyter.notebook.execute_all_cells()",
        # a queued or running cell shows In [*] (a cell skipped after an error shows In [ ])
        "busy": "() => Array.from(document.querySelectorAll('.input_prompt')).some(p => p.textContent.includes('*'))",
        "outputs": "() => Jupyter.notebook.get_cells().map(c => c.output_area ? c.output_area.outputs : [])",
        "save": "() => Jupyter.notebook.save_notebook()",
        "cells": ".cell",
        "output_area": ".output_wrapper",
    },
    "lab": {
        "ready": "() => { const w = window.jupyterapp && jupyterapp.shell.currentWidget;"
                 " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                 " && w.sessionContext.session.kernel.status === 'idle' && w.content && w.content.widgets.length); }",
        "run_all": "() => jupyterapp.commands.execute('notebook:run-all-cells')",
        "busy": "() => jupyterapp.shell.currentWidget.sessionContext.session.kernel.status !== 'idle' ||"
                " Array.from(document.querySelectorAll('.jp-InputPrompt')).some(p => p.textContent.includes('*'))",
        "outputs": "() => jupyterapp.shell.currentWidget.content.widgets.map(c => c.model.outputs ? c.model.outputs.toJSON() : [])",
        "save": "() => jupyterapp.commands.execute('docmanager:save')",
        "cells": ".jp-Notebook .jp-Cell",
        "output_area": ".jp-Cell-outputWrapper",
        "settle_ms": 0,
    },
}

# the <img> outputs of the page with their pixel and displayed widths
_IMAGES_JS = """(sel) => Array.from(document.querySelectorAll(sel + ' img')).filter(i => i.naturalWidth > 32)
  .map(i => ({src: i.src.slice(-64), natural: i.naturalWidth, shown: i.getBoundingClientRect().width}))"""


@dataclass
class NotebookReport:
    name: str
    stack: str
    seconds: float = 0.0
    errors: List[str] = field(default_factory=list)
    bad_text: List[str] = field(default_factory=list)
    widgets: int = 0
    controls_moved: List[str] = field(default_factory=list)
    controls_dead: List[str] = field(default_factory=list)
    images: List[Dict[str, Any]] = field(default_factory=list)
    badly_scaled: List[Dict[str, Any]] = field(default_factory=list)
    saved_widget_cells_without_picture: List[int] = field(default_factory=list)
    saved_widget_outputs_elsewhere: List[int] = field(default_factory=list)
    screenshots: List[str] = field(default_factory=list)

    def problems(self) -> List[str]:
        out = [f"error output: {e}" for e in self.errors] + [f"page shows {t!r}" for t in self.bad_text]
        out += [f"control did not change the picture: {c}" for c in self.controls_dead]
        out += [f"figure shown at {b['shown'] / b['natural']:.0%} of its {b['natural']} px" for b in self.badly_scaled]
        out += [f"saved widget cell {i} has no PNG picture" for i in self.saved_widget_cells_without_picture]
        out += [f"saved cell {i} holds a widget output (a progress bar?)" for i in self.saved_widget_outputs_elsewhere]
        return out


def _screenshot(page: Any, path: Path) -> str:
    page.evaluate("() => document.querySelectorAll('.jp-WindowedPanel-outer, #site').forEach(e => e.scrollTop = 0)")
    height = page.evaluate("() => Math.max(document.body.scrollHeight, ...Array.from(document.querySelectorAll("
                           "'#notebook, .jp-WindowedPanel-outer, .jp-Notebook')).map(e => e.scrollHeight))")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(int(height) + 200, 30000)})
    page.wait_for_timeout(500)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    return str(path)


def _output_pictures(cell: Any) -> List[str]:
    return [i.get_attribute("src")[-80:] for i in cell.locator("img").all() if i.get_attribute("src")]


def _move_controls(page: Any, stack: str, report: NotebookReport) -> None:
    """Move each slider and dropdown of each widget cell; the cell's picture must change."""
    js = _JS[stack]
    for ci, cell in enumerate(page.locator(js["cells"]).all()):
        if cell.locator(".jupyter-widgets").count() == 0:
            continue
        report.widgets += 1
        controls = [("slider", h) for h in cell.locator(".ui-slider-handle, .noUi-handle").all()]
        controls += [("dropdown", s) for s in cell.locator(".widget-dropdown select").all()]
        for kind, ctl in controls:
            before = _output_pictures(cell)
            if kind == "slider":
                ctl.focus()
                for _ in range(3):
                    ctl.press("ArrowRight")
            else:
                options = ctl.locator("option").all_inner_texts()
                current = ctl.evaluate("s => s.value")
                other = next((o for o in options if o != current), None)
                if other is None:
                    continue
                ctl.select_option(label=other)
            label = f"cell {ci} {kind}"
            deadline = time.time() + 15
            while time.time() < deadline and _output_pictures(cell) == before:
                page.wait_for_timeout(200)
            (report.controls_moved if _output_pictures(cell) != before else report.controls_dead).append(label)


def run_notebook(browser: Any, server: JupyterServer, name: str, results: Path, timeout_s: float = 300,
                 widget_cells: int = 0) -> NotebookReport:
    """Open ``name``, run all cells, check the page, move the controls, save, and screenshot.
    ``widget_cells``: how many cells should show widget views; their rendering is waited for (up
    to 30 s after the kernel went idle: a loaded machine renders them late), not assumed."""
    js = _JS[server.stack]
    report = NotebookReport(name=name, stack=server.stack)
    page = browser.new_page(viewport=VIEWPORT)
    t0 = time.time()
    try:
        page.goto(server.url(name), wait_until="domcontentloaded", timeout=60_000)
        page.wait_for_function(js["ready"], timeout=90_000, polling=500)
        page.wait_for_timeout(js["settle_ms"])
        page.evaluate(js["run_all"])
        page.wait_for_timeout(1500)
        deadline, idle = time.time() + timeout_s, 0
        while time.time() < deadline and idle < 4:  # idle for 2 s in a row
            idle = 0 if page.evaluate(js["busy"]) else idle + 1
            page.wait_for_timeout(500)
        if page.evaluate(js["busy"]):
            report.errors.append(f"still running after {timeout_s:.0f} s")
        page.wait_for_timeout(1500)  # widget views render after the kernel went idle
        rendered = f"() => document.querySelectorAll({js['cells']!r}).length && " \
                   f"[...document.querySelectorAll({js['cells']!r})]" \
                   f".filter(c => c.querySelector('.jupyter-widgets')).length >= {widget_cells}"
        from playwright.sync_api import TimeoutError as PlaywrightTimeout

        try:
            page.wait_for_function(rendered, timeout=30_000, polling=500)
        except PlaywrightTimeout:  # too few rendered: counted and reported by the test
            pass
        report.seconds = time.time() - t0
        for i, outs in enumerate(page.evaluate(js["outputs"])):
            for o in outs:
                if o.get("output_type") == "error":
                    report.errors.append(f"cell {i}: {o.get('ename')}: {o.get('evalue')}"[:300])
        text = page.locator(js["output_area"]).all_inner_texts()
        report.bad_text = sorted({t for t in BAD_TEXT for block in text if t in block})
        report.images = page.evaluate(_IMAGES_JS, js["output_area"])
        report.badly_scaled = [im for im in report.images
                               if not MIN_SCALE <= im["shown"] / im["natural"] <= MAX_SCALE]
        stem = Path(name).stem
        report.screenshots.append(_screenshot(page, results / server.stack / f"{stem}.png"))
        _move_controls(page, server.stack, report)
        report.screenshots.append(_screenshot(page, results / server.stack / f"{stem}_moved.png"))
        page.evaluate(js["save"])
        page.wait_for_timeout(2500)
        _check_saved(server.root / name, report)
    finally:
        page.close()
        server.shutdown_kernels()
    return report


def _check_saved(path: Path, report: NotebookReport) -> None:
    """What a reopened notebook, GitHub or nbviewer shows: every widget cell left a PNG, and no
    other cell left a widget output behind (a closed progress bar is an error box on reload)."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        outs = cell.get("outputs", [])
        has_widget = any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outs)
        has_png = any("image/png" in o.get("data", {}) for o in outs)
        shows = ".show()" in "".join(cell.get("source", ""))
        if shows and not has_png:
            report.saved_widget_cells_without_picture.append(i)
        if has_widget and not shows:
            report.saved_widget_outputs_elsewhere.append(i)
