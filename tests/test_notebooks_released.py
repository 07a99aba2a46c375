"""Notebooks 02-05 on the released weights when they are in the cache (here: the released layout
with random weights, on a CPU, in smoke mode): each picks them and says so, and 04 replays the
reference's load on that very checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def _text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                pytest.fail(f"{o['ename']}: {o['evalue']}")
            parts.append(o.get("text", "") + json.dumps(o.get("data", {}).get("text/markdown", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["02_stage1_physics", "03_denoising_trajectory",
                                  "04_why_reference_inference_gives_noise", "05_evaluate"])
def test_notebook_uses_the_released_weights_in_the_cache(name, released_cache, monkeypatch):
    monkeypatch.setenv("DEHAZEDDPM_CACHE", str(released_cache))
    monkeypatch.setenv("DEHAZEDDPM_SMOKE", "1")
    monkeypatch.setenv("DEHAZEDDPM_OFFLINE", "1")
    for var in ("DEHAZEDDPM_WEIGHTS", "DEHAZEDDPM_STAGE1", "DEHAZEDDPM_DENOISER"):
        monkeypatch.delenv(var, raising=False)
    nb = nbformat.read(NB_DIR / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NB_DIR)}}).execute()
    text = _text(nb)
    assert "weights: nh-haze (the paper's released weights, found in the cache)" in text
    if name.startswith("04"):
        assert "denoiser file: NH_I230000_E4600_gen.pth" in text
        assert "missing keys: ['downs.0.weight']" in text and "names the missing key: True" in text
        assert "No released checkpoint here" not in text
        pngs = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
        assert pngs >= 2  # noise vs strict, and the which-stage figure
