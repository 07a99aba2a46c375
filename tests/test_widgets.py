"""Widgets are driven without a browser: move a control, check the displayed PNG changed."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("ipywidgets")

from dehazeddpm.models.stage1 import Stage1Output  # noqa: E402
from dehazeddpm.viz import widgets  # noqa: E402


def _decode(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _fake_stage1(x: torch.Tensor) -> Stage1Output:
    """A cheap stand-in with the real output structure (J, coarse, T, A, I)."""
    T = x.mean(1, keepdim=True)
    A = torch.full((x.shape[0], 3, 1, 1), 0.9)
    J = (1 - x)
    return Stage1Output(J=J, coarse=J * 0.5, T=T, A=A, I=J * T + A * (1 - T))


def test_before_after_slider_moves_the_wipe() -> None:
    before, after = torch.zeros(3, 20, 40), torch.ones(3, 20, 40)
    w = widgets.BeforeAfterSlider(before, after, position=50)
    assert w.slider.value == 50 and w.widget.children[0] is w.slider
    assert widgets._png_size(w.png) == (40, 20)  # shown at its own pixel size
    first = w.png
    w.slider.value = 0
    assert w.png != first
    assert _decode(w.png).max() == 0  # position 0: all "before"
    w.slider.value = 100
    assert _decode(w.png).min() == 255  # position 100: all "after"
    assert w.compose(25).size == (40, 20)


def test_before_after_slider_downscales_large_images() -> None:
    w = widgets.BeforeAfterSlider(torch.rand(3, 300, 600), torch.rand(3, 300, 600), max_side=128)
    assert _decode(w.png).shape[:2] == (64, 128)


def test_stage1_inspector_dropdowns_change_the_figure() -> None:
    images = {"a": torch.rand(1, 3, 16, 24), "b": torch.zeros(3, 16, 16)}
    calls = []

    def stage1(x: torch.Tensor) -> Stage1Output:
        calls.append(tuple(x.shape))
        return _fake_stage1(x)

    w = widgets.Stage1Inspector(images, stage1, dpi=40)
    assert w.dropdown.options == ("a", "b") or list(w.dropdown.options) == ["a", "b"]
    first = w.png
    assert "A = (0.900, 0.900, 0.900)" in w.info.value
    w.dropdown.value = "b"
    assert w.png != first
    second = w.png
    w.panel.value = "T"
    assert w.png != second
    w.panel.value = "error"
    w.dropdown.value = "a"
    assert len(calls) == 2  # outputs are cached per image
    hazy, out = w.outputs("a")
    assert out.T.shape == (1, 1, 16, 24) and hazy.shape == (1, 3, 16, 24)
    sizes = set()
    for name in ("a", "b"):
        for panel in w.PANELS:
            w.dropdown.value, w.panel.value = name, panel
            sizes.add(widgets._png_size(w.png))
    assert len(sizes) == 1  # one picture size whatever is selected: the page does not jump


def test_stage1_inspector_takes_the_pipelines_stage1_tuple() -> None:
    def run_stage1(x: torch.Tensor):
        o = _fake_stage1(x)
        return o.J, o.T, o.A, o.I

    w = widgets.Stage1Inspector({"a": torch.rand(3, 16, 24)}, run_stage1, dpi=40)
    assert w.outputs()[1].coarse is None and "A = (0.900" in w.info.value
    w.panel.value = "coarse"  # not available: hazy and J instead, no error
    assert w.png[:4] == b"\x89PNG"


def test_stage1_inspector_with_a_real_network() -> None:
    from dehazeddpm import Stage1Net

    torch.manual_seed(0)
    w = widgets.Stage1Inspector({"x": torch.rand(1, 3, 20, 28)}, Stage1Net().eval(), dpi=40)
    hazy, out = w.outputs()
    assert out.J.shape == (1, 3, 20, 28) and out.A.shape == (1, 3, 1, 1)
    assert w.png[:4] == b"\x89PNG"


def test_trajectory_viewer_slider() -> None:
    traj = [(i, 90 - 10 * i, torch.full((1, 3, 8, 8), -1.0 + i / 2), torch.full((1, 3, 8, 8), 1.0 - i / 2))
            for i in range(5)]
    w = widgets.TrajectoryViewer(traj)
    assert w.slider.max == 4
    first = w.png
    w.slider.value = 3
    assert w.png != first and "t = 60" in w.label.value
    frame = _decode(w.png)
    assert frame.shape == (8, 8 + 4 + 8, 3)
    # signed input: x_t = -1 + 1.5 = 0.5 -> 0.75 in image space
    assert abs(int(frame[0, 0, 0]) - round(0.75 * 255)) <= 1
    assert w.slider.layout.width == "320px"  # the slider is as wide as the picture (at least 320 px)
    with pytest.raises(ValueError):
        widgets.TrajectoryViewer([])


def test_trajectory_viewer_on_pipeline_frames() -> None:
    from dehazeddpm.inference.pipeline import TrajectoryFrame

    traj = [TrajectoryFrame(i, 10 - i, torch.full((1, 3, 4, 4), 0.2 * i), torch.full((1, 3, 4, 4), 0.5))
            for i in range(3)]
    w = widgets.TrajectoryViewer(traj)
    w.slider.value = 2
    assert abs(int(_decode(w.png)[0, 0, 0]) - round(0.4 * 255)) <= 1  # image space kept as is


def test_pair_viewer() -> None:
    items = {n: {"hazy": torch.rand(3, 12, 12), "dehazed": torch.rand(3, 12, 12), "gt": torch.rand(3, 12, 12),
                 "PSNR (dB)": 20.0 + k, "SSIM": 0.5}
             for k, n in enumerate(("one", "two"))}
    w = widgets.PairViewer(items, dpi=40)
    first = w.png
    assert "20.000" in w.info.value
    w.dropdown.value = "two"
    assert w.png != first and "21.000" in w.info.value
    assert widgets._png_size(w.png) == widgets._png_size(first)
    items["three"] = {"hazy": torch.rand(3, 12, 12), "dehazed": torch.rand(3, 12, 12)}  # no gt
    assert len(widgets.PairViewer(items).figure("three").axes) == 2


def test_uploaded_files_both_ipywidgets_layouts() -> None:
    v7 = {"a.png": {"content": b"abc", "metadata": {"name": "a.png", "size": 3}}}
    v8 = ({"name": "b.png", "type": "image/png", "size": 3, "content": memoryview(b"xyz")},)
    assert widgets.uploaded_files(v7) == [("a.png", b"abc")]
    assert widgets.uploaded_files(v8) == [("b.png", b"xyz")]

    class FakeUpload:
        value = v8

    assert widgets.uploaded_files(FakeUpload()) == [("b.png", b"xyz")]
    assert widgets.uploaded_files(()) == []


def test_show_leaves_a_png_output_that_the_controls_update(monkeypatch: pytest.MonkeyPatch) -> None:
    """The picture is an ordinary PNG output with a display id (saved with the notebook), and a
    control change replaces it in place; outside a kernel only the picture is displayed."""
    import IPython.display

    shown, updates = [], []

    class Handle:
        def update(self, obj):
            updates.append(obj)

    def fake_display(obj, display_id=None, **kw):
        shown.append(obj)
        return Handle() if display_id else None

    monkeypatch.setattr(IPython.display, "display", fake_display)
    assert not widgets.widgets_available()  # pytest is no IPython kernel
    w = widgets.BeforeAfterSlider(torch.zeros(3, 8, 8), torch.ones(3, 8, 8))
    w.show()
    assert len(shown) == 1 and shown[0].data == w.png
    w.slider.value = 10
    assert len(updates) == 1 and updates[0].data == w.png and _decode(w.png)[0, 0, 0] == 255


def test_static_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeShell:
        kernel = object()

    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: FakeShell())
    assert widgets.widgets_available()
    monkeypatch.setenv(widgets.STATIC_ENV, "1")
    assert not widgets.widgets_available()
