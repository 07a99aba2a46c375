"""Interactive ipywidgets UIs for the notebooks, whose picture is a plain PNG output.

Every UI is a small class exposing its controls (``.slider``, ``.dropdown`` ...), the PNG it shows
(``.png``) and the assembled controls (``.widget``), so it can be driven and checked without a
browser::

    w = BeforeAfterSlider(hazy, dehazed)
    w.slider.value = 30          # redraws w.png
    w.show()                     # the controls (in a live kernel) and the picture

The picture is not an ``ipywidgets.Image``: :meth:`show` displays it as an ordinary PNG output
with a display id and the controls replace it in place (``update_display``). So it is shown at its
own pixel size (never stretched to the column), it is saved with the notebook and still there
after a reload, a kernel restart, on GitHub and nbviewer, and it always shows the current view.
Widths and heights are fixed per UI, so the page does not jump when the selection changes, and
each slider is as wide as the picture it moves.

Only API common to ipywidgets 7.7 (Colab) and 8 is used: IntSlider, Dropdown, HTML, HBox/VBox,
Layout, Checkbox, FileUpload (read through :func:`uploaded_files`). Colab's custom widget
manager is enabled by ``colab_setup.setup``, not here.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from matplotlib.figure import Figure

from ..models.stage1 import Stage1Output
from ..utils import env_flag, scaled_shape
from . import plotting
from .plotting import ImageLike

try:  # the package depends on ipywidgets, but the static fallback must work without it
    import ipywidgets as _w
except ImportError:  # pragma: no cover - exercised only where ipywidgets is absent
    _w = None

__all__ = ["widgets_available", "uploaded_files", "BeforeAfterSlider", "Stage1Inspector",
           "TrajectoryViewer", "PairViewer"]

STATIC_ENV = "DEHAZEDDPM_STATIC_WIDGETS"


def widgets_available() -> bool:
    """True when ipywidgets can render here: importable, inside a live IPython kernel, and not
    switched off with ``DEHAZEDDPM_STATIC_WIDGETS=1`` (e.g. for static HTML exports)."""
    if _w is None or env_flag(STATIC_ENV):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


def _require_widgets() -> Any:
    if _w is None:
        raise ImportError("ipywidgets is not installed: pip install ipywidgets (or use the static figures "
                          "in dehazeddpm.plotting)")
    return _w


def uploaded_files(upload: Any) -> List[Tuple[str, bytes]]:
    """``[(name, content bytes)]`` from a FileUpload widget (or its ``.value``).

    ipywidgets 7.7 stores ``{name: {"content": bytes, "metadata": {...}}}``; 8 stores a tuple of
    ``{"name": ..., "content": memoryview, ...}``. Both are read here.
    """
    value = getattr(upload, "value", upload)
    items: List[Tuple[str, bytes]] = []
    if isinstance(value, Mapping):
        for name, entry in value.items():
            meta = entry.get("metadata", {}) if isinstance(entry, Mapping) else {}
            items.append((str(meta.get("name", name)), bytes(entry["content"])))
    else:
        for entry in value or ():
            items.append((str(entry["name"]), bytes(entry["content"])))
    return items


def _downscale(img: ImageLike, max_side: int) -> np.ndarray:
    """Numpy image at most ``max_side`` px on its longer side (widgets send PNG bytes over the
    wire on every move, so large images would make the slider lag)."""
    from PIL import Image

    arr = plotting.to_numpy_image(img)
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    nh, nw = scaled_shape(h, w, max_side, side="longer")
    pil = Image.fromarray((arr * 255 + 0.5).astype(np.uint8)).resize((nw, nh), Image.LANCZOS)
    return np.asarray(pil).astype(np.float32) / 255.0


def _png_size(png: bytes) -> Tuple[int, int]:
    """(width, height) in pixels of PNG bytes (from the IHDR chunk)."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _controls_width(png: bytes, minimum: int = 320) -> str:
    return f"{max(minimum, _png_size(png)[0])}px"


class _UI:
    """Shared plumbing: ``.widget`` (the controls), ``.png`` and ``.show()``."""

    widget: Any
    _png: bytes = b""
    _handle: Any = None

    @property
    def png(self) -> bytes:
        """The PNG currently shown."""
        return self._png

    def _set_png(self, png: bytes) -> None:
        self._png = png
        if self._handle is not None:
            from IPython.display import Image as _IPImage

            self._handle.update(_IPImage(data=png, format="png"))

    def show(self) -> None:
        """Display the controls (in a live kernel) and, below them, the picture as a PNG output
        that the controls update in place."""
        from IPython.display import Image as _IPImage
        from IPython.display import display

        if widgets_available():
            display(self.widget)
        self._handle = display(_IPImage(data=self._png, format="png"), display_id=True)


class BeforeAfterSlider(_UI):
    """Wipe between two images: the slider (0..100, % of the width) moves the divider; ``after``
    is shown left of it, ``before`` right. Both are shown at most ``max_side`` px (longer side)."""

    def __init__(self, before: ImageLike, after: ImageLike, *, labels: Tuple[str, str] = ("hazy", "dehazed"),
                 position: int = 50, max_side: int = 768):
        w = _require_widgets()
        self.before = _downscale(before, max_side)
        self.after = _downscale(after, max_side)
        self.labels = labels
        self.slider = w.IntSlider(value=int(position), min=0, max=100, step=1, description="wipe %",
                                  continuous_update=True)
        self.caption = w.HTML(f"<b>left: {labels[1]}</b> | <b>right: {labels[0]}</b>")
        self.widget = w.VBox([self.slider, self.caption])
        self.slider.observe(self._on_change, names="value")
        self._render()
        self.slider.layout.width = _controls_width(self.png)

    def compose(self, position: Optional[int] = None) -> Any:
        """The composed PIL image at ``position`` (default: the slider's)."""
        pos = self.slider.value if position is None else position
        return plotting.compose_wipe(self.before, self.after, pos / 100.0)

    def _render(self) -> None:
        self._set_png(plotting.image_to_png(self.compose()))

    def _on_change(self, change: Dict[str, Any]) -> None:
        self._render()


def _as_stage1_output(out: Any) -> Stage1Output:
    """A Stage1Output from a stage-1 result: a Stage1Output, or ``(J, T, A, I)`` as returned by
    a plain stage-1 function may return (no coarse image then)."""
    if isinstance(out, Stage1Output):
        return out
    J, T, A, I = out
    return Stage1Output(J=J, coarse=None, T=T, A=A, I=I)  # type: ignore[arg-type]


class Stage1Inspector(_UI):
    """Stage-1 decomposition of a chosen image: J, T (colormap + colorbar), A (swatch + values),
    the re-hazed image and its error against the input, and the coarse image when there is one.

    ``images``: ``{name: hazy}`` (any image-like in [0, 1]); ``stage1``: a callable mapping a
    ``1x3xHxW`` tensor in [0, 1] to a ``Stage1Output`` or to ``(J, T, A, I)``, e.g.
    ``pipe.stage1_as_called``, the way the pipeline runs it for its weights.
    Images larger than ``max_side`` (longer side) are downscaled first. Outputs are cached per image.
    """

    PANELS = ("all", "J", "T", "A", "I", "error", "coarse")

    def __init__(self, images: Mapping[str, ImageLike], stage1: Callable[[torch.Tensor], Any], *,
                 device: Optional[torch.device] = None, max_side: int = 1024, dpi: int = plotting.DPI):
        w = _require_widgets()
        if not images:
            raise ValueError("give at least one image")
        from ..io.images import load_image

        self.images = {k: load_image(v) if not isinstance(v, torch.Tensor) else v for k, v in images.items()}
        self.stage1 = stage1
        self.device = device
        self.max_side = max_side
        self.dpi = dpi
        self._cache: Dict[str, Any] = {}
        names = list(self.images)
        self.dropdown = w.Dropdown(options=names, value=names[0], description="image")
        self.panel = w.Dropdown(options=list(self.PANELS), value="all", description="show")
        self.info = w.HTML()
        self.widget = w.VBox([w.HBox([self.dropdown, self.panel]), self.info])
        # one picture size for every selection: the largest "all" figure over the images
        self._size = np.max([self._figure(n, "all").get_size_inches() for n in names], axis=0)
        self.dropdown.observe(self._on_change, names="value")
        self.panel.observe(self._on_change, names="value")
        self._render()

    def outputs(self, name: Optional[str] = None) -> Tuple[torch.Tensor, Stage1Output]:
        """``(hazy, Stage1Output)`` of image ``name`` (default: the selected one), on the CPU."""
        name = self.dropdown.value if name is None else name
        if name not in self._cache:
            hazy = self.images[name]
            if hazy.ndim == 3:
                hazy = hazy[None]
            small = torch.from_numpy(_downscale(hazy, self.max_side)).permute(2, 0, 1)[None].float()
            x = small if self.device is None else small.to(self.device)
            with torch.no_grad():
                out = _as_stage1_output(self.stage1(x))
            out = Stage1Output(*(None if t is None else t.detach().float().cpu() for t in out))
            self._cache[name] = (small, out)
        return self._cache[name]

    def _figure(self, name: str, panel: str) -> Figure:
        hazy, out = self.outputs(name)
        panels = None if panel == "all" else ["hazy", panel]
        if panel == "error":
            panels = ["hazy", "I", "error"]
        if panel == "coarse" and out.coarse is None:
            panels = ["hazy", "J"]
        return plotting.plot_stage1(hazy, out, panels=panels)

    def figure(self) -> Figure:
        """The figure for the current selection, at the inspector's fixed size."""
        fig = self._figure(self.dropdown.value, self.panel.value)
        fig.set_size_inches(*self._size)
        fig.tight_layout()
        return fig

    def _render(self) -> None:
        hazy, out = self.outputs()
        a = out.A.flatten().tolist()[:3]
        err = plotting.rehaze_error(hazy, out.I)
        self.info.value = (f"A = ({a[0]:.3f}, {a[1]:.3f}, {a[2]:.3f}); mean T = {float(out.T.mean()):.3f}; "
                           f"mean |re-hazed − input| = {err.mean():.4f}")
        self._set_png(plotting.figure_to_png(self.figure(), dpi=self.dpi, tight=False))

    def _on_change(self, change: Dict[str, Any]) -> None:
        self._render()


class TrajectoryViewer(_UI):
    """Slider over the snapshots of a sampling trajectory (``[(step, t, x_t, x0)]``, e.g. a
    pipeline result's ``.trajectory``), showing x_t and the predicted x0 side by side.
    ``signed``: frames in [-1, 1] (None: ``plotting.trajectory_is_signed`` decides)."""

    def __init__(self, trajectory: Sequence[Tuple[int, int, torch.Tensor, torch.Tensor]], *,
                 max_side: int = 384, signed: Optional[bool] = None):
        w = _require_widgets()
        if not trajectory:
            raise ValueError("empty trajectory (pass trajectory_every to the pipeline)")
        signed = plotting.trajectory_is_signed(trajectory) if signed is None else signed
        # Downscale once: moving the slider then only re-encodes two small PNG halves.
        self.frames: List[Tuple[int, int, np.ndarray, np.ndarray]] = [
            (int(s), int(t), _downscale(plotting.frame_to_numpy(xt, signed), max_side),
             _downscale(plotting.frame_to_numpy(x0, signed), max_side)) for s, t, xt, x0 in trajectory]
        self.slider = w.IntSlider(value=0, min=0, max=len(self.frames) - 1, step=1, description="snapshot",
                                  continuous_update=True)
        self.label = w.HTML()
        self.widget = w.VBox([self.slider, self.label])
        self.slider.observe(self._on_change, names="value")
        self._render()
        self.slider.layout.width = _controls_width(self.png)

    def frame(self, index: Optional[int] = None) -> np.ndarray:
        """x_t | gap | x0 for snapshot ``index`` as one ``HxWx3`` array."""
        _, _, xt, x0 = self.frames[self.slider.value if index is None else index]
        gap = np.ones((xt.shape[0], 4, 3), dtype=np.float32)
        return np.concatenate([xt, gap, x0], axis=1)

    def _render(self) -> None:
        step, t, _, _ = self.frames[self.slider.value]
        self.label.value = (f"step {step} of the run, t = {t} &nbsp; <b>left:</b> x_t (noisy input) "
                            f"&nbsp; <b>right:</b> predicted x0")
        self._set_png(plotting.image_to_png(self.frame()))

    def _on_change(self, change: Dict[str, Any]) -> None:
        self._render()


class PairViewer(_UI):
    """Per-image viewer for an evaluation: pick an image, see hazy | (stage 1) | dehazed | ground
    truth with its metrics. ``items``: ``{name: {"hazy": img, "stage1": img (optional),
    "dehazed": img, "gt": img (optional), <metric>: float}}``; ``titles`` renames the panels."""

    IMAGE_KEYS = ("hazy", "stage1", "dehazed", "gt")

    def __init__(self, items: Mapping[str, Mapping[str, Any]], *, max_side: int = 512, dpi: int = plotting.DPI,
                 titles: Optional[Mapping[str, str]] = None):
        w = _require_widgets()
        if not items:
            raise ValueError("give at least one item")
        self.items = {k: dict(v) for k, v in items.items()}
        self.max_side = max_side
        self.dpi = dpi
        self.titles = {"hazy": "hazy input", "stage1": "stage 1", "dehazed": "dehazed", "gt": "ground truth",
                       **(titles or {})}
        names = list(self.items)
        self.dropdown = w.Dropdown(options=names, value=names[0], description="image")
        self.info = w.HTML()
        self.widget = w.VBox([self.dropdown, self.info])
        self._size = np.max([self._figure(n).get_size_inches() for n in names], axis=0)
        self.dropdown.observe(self._on_change, names="value")
        self._render()

    def _figure(self, name: str) -> Figure:
        it = self.items[name]
        keys = [k for k in self.IMAGE_KEYS if it.get(k) is not None]
        return plotting.plot_side_by_side([_downscale(it[k], self.max_side) for k in keys],
                                          [self.titles[k] for k in keys], suptitle=name)

    def figure(self, name: Optional[str] = None) -> Figure:
        """hazy | dehazed | ground truth for ``name`` (default: the selected image), at the viewer's
        fixed size."""
        fig = self._figure(self.dropdown.value if name is None else name)
        fig.set_size_inches(*self._size)
        fig.tight_layout()
        return fig

    def _render(self) -> None:
        it = self.items[self.dropdown.value]
        metrics = {k: v for k, v in it.items() if k not in self.IMAGE_KEYS and isinstance(v, (int, float))}
        self.info.value = " &nbsp; ".join(f"<b>{k}</b>: {v:.3f}" for k, v in metrics.items())
        self._set_png(plotting.figure_to_png(self.figure(), dpi=self.dpi, tight=False))

    def _on_change(self, change: Dict[str, Any]) -> None:
        self._render()
