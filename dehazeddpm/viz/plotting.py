"""Static matplotlib figures for the notebooks (and anywhere widgets cannot render).

Every function takes image-space data (``[0, 1]``) unless it says otherwise: torch tensors
``1xCxHxW`` / ``CxHxW`` / ``HxW``, numpy ``HxWxC`` / ``HxW`` arrays or PIL images. Diffusion
tensors (``x_t``, ``x0``) are ``[-1, 1]`` and are named as such. Figures are created with the
object-oriented API (``matplotlib.figure.Figure``), never through ``pyplot`` state, so building
many of them in a loop leaks nothing and works under any backend.
"""
from __future__ import annotations

import io
import math
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

__all__ = [
    "to_numpy_image", "signed_to_numpy", "figure_to_png", "image_to_png", "compose_wipe",
    "plot_losses", "plot_side_by_side", "plot_spread", "plot_stage1", "plot_trajectory", "trajectory_frame",
    "plot_sampler_comparison", "plot_metrics_bar", "metrics_table_markdown", "metrics_table_html",
    "rehaze_error", "show", "trajectory_is_signed", "frame_to_numpy", "grid_figure",
    "COLUMN_PX", "DPI", "FONT_PT", "MAX_COLUMNS", "stage2_verdict",
]

ImageLike = Union[torch.Tensor, np.ndarray, Image.Image]

# Figures are drawn for the notebook's output column (~960 px in Colab, classic Notebook and
# JupyterLab at a laptop's width): at DPI they come out at most COLUMN_PX wide, so they are shown
# 1:1 and a FONT_PT label is FONT_PT as displayed. Wider grids wrap at MAX_COLUMNS panels per row.
DPI = 100
COLUMN_PX = 940
MAX_COLUMNS = 4
FONT_PT = 10


# --------------------------------------------------------------------------------------------
# Conversions
# --------------------------------------------------------------------------------------------
def to_numpy_image(img: ImageLike) -> np.ndarray:
    """Any supported image -> float32 ``HxWx3`` (colour) or ``HxW`` (one channel) in [0, 1]."""
    if isinstance(img, Image.Image):
        arr = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
        return arr.astype(np.float32) / 255.0
    if isinstance(img, torch.Tensor):
        t = img.detach().float().cpu()
        if t.ndim == 4:
            t = t[0]
        if t.ndim == 3:
            t = t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)
        return np.clip(torch.nan_to_num(t).numpy(), 0.0, 1.0).astype(np.float32)
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return np.clip(np.nan_to_num(arr.astype(np.float32)), 0.0, 1.0)


def signed_to_numpy(x: torch.Tensor) -> np.ndarray:
    """A diffusion tensor in [-1, 1] -> ``HxWx3`` numpy image in [0, 1]."""
    return to_numpy_image((x.detach().float().cpu() + 1.0) / 2.0)


def trajectory_is_signed(trajectory: Sequence[Any]) -> bool:
    """Whether trajectory frames hold diffusion-space ([-1, 1]) tensors.

    ``DehazePipeline`` frames (``TrajectoryFrame``) are image space ([0, 1]); raw sampler
    callbacks give [-1, 1]. Plain tuples are judged by their clamped x0: any value below 0
    means [-1, 1].
    """
    first = trajectory[0]
    if "x0" in getattr(first, "_fields", ()):
        return False
    return any(float(f[3].min()) < -1e-3 for f in trajectory)


def frame_to_numpy(x: torch.Tensor, signed: bool) -> np.ndarray:
    """A trajectory tensor -> ``HxWx3`` in [0, 1] (mapped from [-1, 1] when ``signed``)."""
    return signed_to_numpy(x) if signed else to_numpy_image(x)


def _to_uint8(img: ImageLike) -> np.ndarray:
    arr = to_numpy_image(img)
    return (arr * 255.0 + 0.5).astype(np.uint8)


def figure_to_png(fig: Figure, dpi: int = DPI, tight: bool = True) -> bytes:
    """PNG bytes of a figure. ``tight=False`` keeps the figure's own size, so a widget's picture
    keeps one size whatever it shows (the page does not jump)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def show(fig: Figure, dpi: int = DPI) -> None:
    """Display a figure in a notebook as a PNG at its pixel size (works without pyplot's inline
    backend)."""
    from IPython.display import Image as _IPImage
    from IPython.display import display

    display(_IPImage(data=figure_to_png(fig, dpi=dpi), format="png"))


def image_to_png(img: ImageLike) -> bytes:
    """PNG bytes of an image."""
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="PNG")
    return buf.getvalue()


def _same_size(before: ImageLike, after: ImageLike) -> Tuple[np.ndarray, np.ndarray]:
    a, b = _to_uint8(before), _to_uint8(after)
    a = a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2)
    b = b if b.ndim == 3 else np.repeat(b[..., None], 3, axis=2)
    if a.shape != b.shape:  # e.g. a hazy upload vs a result of another size: match the first
        b = np.asarray(Image.fromarray(b).resize((a.shape[1], a.shape[0]), Image.BILINEAR))
    return a, b


def compose_wipe(before: ImageLike, after: ImageLike, position: float) -> Image.Image:
    """Before/after wipe: ``after`` left of ``position`` (fraction of the width, 0..1), ``before``
    to its right, with a thin white divider so the seam is visible on any content."""
    a, b = _same_size(before, after)
    w = a.shape[1]
    x = int(round(min(1.0, max(0.0, float(position))) * w))
    out = a.copy()
    out[:, :x] = b[:, :x]
    img = Image.fromarray(out)
    if 0 < x < w:
        draw = ImageDraw.Draw(img)
        draw.line([(x, 0), (x, a.shape[0] - 1)], fill=(255, 255, 255), width=max(1, w // 200))
    return img


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _show(ax: Any, img: ImageLike, title: str) -> None:
    arr = to_numpy_image(img)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_title(title, fontsize=FONT_PT)
    ax.axis("off")


def _aspect(img: ImageLike) -> float:
    """Width / height of an image."""
    if isinstance(img, Image.Image):
        return img.size[0] / max(img.size[1], 1)
    h, w = to_numpy_image(img).shape[:2]
    return w / max(h, 1)


def grid_figure(n: int, aspect: float, *, max_columns: int = MAX_COLUMNS, panel_height: float = 2.6,
                extra_width: float = 0.0, title_height: float = 0.45, suptitle: bool = False
                ) -> Tuple[Figure, np.ndarray]:
    """A figure of ``n`` image panels of width/height ``aspect``, wrapped at ``max_columns`` per row
    and no wider than :data:`COLUMN_PX` at :data:`DPI`. ``extra_width`` (inches) per panel leaves
    room for a colour bar; ``title_height`` (inches) per row for its titles. Returns
    ``(figure, axes)`` with ``axes`` flat, the unused ones switched off."""
    if n < 1:
        raise ValueError("a figure needs at least one panel")
    cols = min(n, max_columns)
    rows = math.ceil(n / cols)
    max_panel_w = (COLUMN_PX / DPI - 0.25) / cols - extra_width
    panel_w = min(panel_height * aspect, max_panel_w)
    panel_h = panel_w / aspect
    fig = Figure(figsize=(cols * (panel_w + extra_width) + 0.25, rows * (panel_h + title_height) + (0.4 if suptitle else 0.1)))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.axis("off")
    return fig, axes


def plot_side_by_side(images: Sequence[ImageLike], titles: Sequence[str],
                      suptitle: Optional[str] = None, height: float = 2.6,
                      max_columns: int = MAX_COLUMNS) -> Figure:
    """Images with titles (e.g. hazy | dehazed | ground truth), wrapped at ``max_columns`` per row;
    titles may hold a line break."""
    if len(images) != len(titles):
        raise ValueError("give one title per image")
    lines = max(str(t).count("\n") + 1 for t in titles)
    fig, axes = grid_figure(len(images), _aspect(images[0]), max_columns=max_columns, panel_height=height,
                            title_height=0.25 + 0.2 * lines, suptitle=bool(suptitle))
    for ax, img, title in zip(axes, images, titles):
        _show(ax, img, title)
    if suptitle:
        fig.suptitle(suptitle, fontsize=FONT_PT + 1)
    fig.tight_layout()
    return fig


def rehaze_error(hazy: ImageLike, rehazed: ImageLike) -> np.ndarray:
    """Per-pixel mean absolute error |I_rehazed - I_input| over channels, ``HxW``."""
    a, b = to_numpy_image(hazy), to_numpy_image(rehazed)
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    err = np.abs(a - b)
    return err.mean(axis=-1) if err.ndim == 3 else err


def _airlight_values(A: Any) -> np.ndarray:
    a = A.detach().float().cpu().flatten() if isinstance(A, torch.Tensor) else np.asarray(A).ravel()
    return np.asarray(a, dtype=np.float64)[:3]


def _map(fig: Figure, ax: Any, arr: np.ndarray, cmap: str, vmax: float, title: str, label: str) -> None:
    """A one-channel map from 0 to ``vmax`` with its colour bar."""
    im = ax.imshow(arr, cmap=cmap, vmin=0, vmax=vmax)
    ax.set_title(title, fontsize=FONT_PT)
    ax.axis("off")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label(label, fontsize=FONT_PT - 1)
    bar.ax.tick_params(labelsize=FONT_PT - 1)


def plot_spread(res: Any, height: float = 2.4) -> Figure:
    """Where the diffusion is unsure: a result of ``samples=K`` > 1 as T (the haze stage 1 saw),
    the per-pixel spread of the K samples (magma, with its colour bar) and their mean."""
    if getattr(res, "spread", None) is None:
        raise ValueError("the result has no spread: call the pipeline with samples=K, K > 1")
    fig, axes = grid_figure(3, _aspect(res.J), panel_height=height, extra_width=0.7)
    t = to_numpy_image(res.T)
    _map(fig, axes[0], t, "viridis", 1.0, f"T (mean {t.mean():.2f})", "t (1 = no haze)")
    spread = to_numpy_image(res.spread)
    _map(fig, axes[1], spread, "magma", max(0.02, float(spread.max())),
         f"spread of {res.options.samples} samples (mean {spread.mean():.3f})", "std. dev.")
    _show(axes[2], res.image, f"mean of {res.options.samples} samples")
    fig.tight_layout()
    return fig


def plot_stage1(hazy: ImageLike, out: Any, panels: Optional[Sequence[str]] = None,
                height: float = 2.4) -> Figure:
    """The stage-1 decomposition of one image.

    ``out`` is a ``Stage1Output`` (or anything with ``J, coarse, T, A, I``; ``coarse`` may be
    missing, e.g. for a pipeline result). Panels (default all available): ``hazy``, ``J``,
    ``coarse``, ``T`` (viridis + colorbar), ``A`` (colour swatch with its RGB values), ``I``
    (re-hazed ``J*T + A*(1-T)``) and ``error`` (|I - hazy|, magma + colorbar).
    """
    avail = ["hazy", "J", "coarse", "T", "A", "I", "error"]
    if getattr(out, "coarse", None) is None:
        avail.remove("coarse")
    panels = list(panels) if panels is not None else avail
    unknown = [p for p in panels if p not in avail]
    if unknown:
        raise ValueError(f"unknown panels {unknown}; available: {avail}")
    fig, axes = grid_figure(len(panels), _aspect(hazy), panel_height=height,
                            extra_width=0.7 if {"T", "error"} & set(panels) else 0.0)
    hazy_np = to_numpy_image(hazy)
    for ax, name in zip(axes, panels):
        if name == "hazy":
            _show(ax, hazy_np, "input I (hazy)")
        elif name == "J":
            _show(ax, out.J, "J: clear image")
        elif name == "coarse":
            _show(ax, out.coarse, "coarse (1st sub-net)")
        elif name == "T":
            t = to_numpy_image(out.T)
            _map(fig, ax, t, "viridis", 1.0, f"T (mean {t.mean():.2f})", "t (1 = no haze)")
        elif name == "A":
            a = _airlight_values(out.A)
            # the swatch has the images' shape, so its values fit inside it as they fit an image
            wide = _aspect(hazy_np)
            swatch = (max(1, round(64 / max(wide, 1))), max(1, round(64 * min(wide, 1))))
            ax.imshow(np.broadcast_to(a.reshape(1, 1, 3), (*swatch, 3)).clip(0, 1))
            # a flat panel holds one short line, a narrow one three short lines: the channels' names
            # then go to the title
            flat, labelled = wide > 2, 0.6 <= wide <= 2
            ax.set_title("A: airlight" if labelled else "A: airlight (R G B)", fontsize=FONT_PT)
            ax.set_xticks([])
            ax.set_yticks([])
            values = [f"{c} {v:.3f}" if labelled else f"{v:.3f}" for c, v in zip("RGB", a)]
            ax.text(0.5, 0.5, (" " if flat else "\n").join(values), transform=ax.transAxes, ha="center",
                    va="center", fontsize=FONT_PT + 1 if labelled else FONT_PT, family="monospace",
                    color="black" if a.mean() > 0.5 else "white")
        elif name == "I":
            _show(ax, out.I, "re-hazed JT + A(1−T)")
        elif name == "error":
            err = rehaze_error(hazy_np, out.I)
            # two lines: one would run over the colour bar's top tick
            _map(fig, ax, err, "magma", max(0.05, float(err.max())), f"|re-hazed − I|\n(mean {err.mean():.3f})",
                 "abs. error")
    for ax in axes[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def trajectory_frame(x_t: torch.Tensor, x0: torch.Tensor, label: str = "", signed: bool = False) -> Figure:
    """One sampling step: noisy input x_t and predicted clean x0 side by side ([0, 1], or
    [-1, 1] with ``signed``)."""
    fig = Figure(figsize=(6.4, 3.4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.imshow(frame_to_numpy(x_t, signed))
    ax1.set_title(f"x_t (noisy) {label}".strip(), fontsize=10)
    ax2.imshow(frame_to_numpy(x0, signed))
    ax2.set_title("predicted x0", fontsize=10)
    for ax in (ax1, ax2):
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_trajectory(trajectory: Sequence[Tuple[int, int, torch.Tensor, torch.Tensor]],
                    max_columns: int = MAX_COLUMNS, height: float = 2.0, signed: Optional[bool] = None) -> Figure:
    """Grid of a sampling trajectory ``[(step, t, x_t, x0)]``: top row x_t, bottom row predicted
    x0, one column per snapshot (evenly thinned to ``max_columns``, keeping the first and last).
    ``signed``: tensors in [-1, 1] (None: :func:`trajectory_is_signed` decides)."""
    if not trajectory:
        raise ValueError("empty trajectory (pass trajectory_every to the pipeline)")
    if signed is None:
        signed = trajectory_is_signed(trajectory)
    n = len(trajectory)
    idx = sorted(set(np.linspace(0, n - 1, min(max_columns, n)).round().astype(int).tolist()))
    snaps = [trajectory[i] for i in idx]
    h, w = snaps[0][2].shape[-2:]
    # two rows (x_t over x0) of len(snaps) panels; a left margin for the row labels
    fig, flat = grid_figure(2 * len(snaps), w / max(h, 1), max_columns=len(snaps), panel_height=height,
                            extra_width=0.1)
    axes = flat.reshape(2, len(snaps))
    for c, (step, t, x_t, x0) in enumerate(snaps):
        axes[0, c].imshow(frame_to_numpy(x_t, signed))
        axes[0, c].set_title(f"step {step}, t={t}", fontsize=FONT_PT)
        axes[1, c].imshow(frame_to_numpy(x0, signed))
        for r in (0, 1):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_ylabel("x_t", fontsize=FONT_PT)
    axes[1, 0].set_ylabel("predicted x0", fontsize=FONT_PT)
    fig.tight_layout()
    return fig


def plot_sampler_comparison(records: Sequence[Mapping[str, Any]]) -> Figure:
    """Time and PSNR against sampling steps, one line per sampler; the x ticks are the step
    counts that ran.

    ``records``: dicts with ``sampler``, ``steps``, ``seconds`` and ``psnr`` (dB).
    """
    fig = Figure(figsize=(COLUMN_PX / DPI, 3.2))
    ax_t, ax_p = fig.subplots(1, 2)
    steps_run = sorted({int(r["steps"]) for r in records})
    for name in sorted({r["sampler"] for r in records}):
        rs = sorted((r for r in records if r["sampler"] == name), key=lambda r: r["steps"])
        steps = [r["steps"] for r in rs]
        ax_t.plot(steps, [r["seconds"] for r in rs], marker="o", label=name.upper())
        ax_p.plot(steps, [r["psnr"] for r in rs], marker="o", label=name.upper())
    ax_t.set_ylabel("time (s)")
    ax_t.set_title("sampling time (wall clock)", fontsize=FONT_PT + 1)
    ax_t.set_ylim(bottom=0)
    ax_p.set_ylabel("PSNR vs ground truth (dB)")
    ax_p.set_title("quality", fontsize=FONT_PT + 1)
    for ax in (ax_t, ax_p):
        ax.set_xlabel("sampling steps")
        if len(steps_run) > 1 and steps_run[-1] / max(steps_run[0], 1) > 8:
            ax.set_xscale("log")
        ax.set_xticks(steps_run)
        ax.set_xticklabels([str(v) for v in steps_run])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
        ax.legend(fontsize=FONT_PT)
        ax.tick_params(labelsize=FONT_PT)
    fig.tight_layout()
    return fig


def plot_losses(runs: Mapping[str, Any]) -> Figure:
    """Training loss per optimiser step (and a running mean over 10), one panel per run:
    ``{name: result}`` with ``result.losses`` (a :class:`~dehazeddpm.training.TrainResult`)."""
    fig = Figure(figsize=(min(COLUMN_PX / DPI, 4.2 * len(runs) + 0.3), 3.2))
    axes = fig.subplots(1, max(1, len(runs)), squeeze=False)[0]
    for ax, (name, res) in zip(axes, runs.items()):
        losses = np.asarray(res.losses, dtype=float)
        steps = np.arange(len(losses)) + 1
        ax.plot(steps, losses, alpha=0.4, label="per step")
        if len(losses) >= 10:
            ax.plot(steps[9:], np.convolve(losses, np.ones(10) / 10, mode="valid"), label="mean of 10")
        ax.set_xlabel("optimiser step (this session)", fontsize=FONT_PT)
        ax.set_ylabel("loss", fontsize=FONT_PT)
        ax.set_title(name, fontsize=FONT_PT + 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=FONT_PT)
        ax.legend(fontsize=FONT_PT, frameon=False)
    fig.tight_layout()
    return fig


def plot_metrics_bar(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = ("psnr", "ssim"),
                     groups: Sequence[str] = ("hazy", "dehazed")) -> Figure:
    """Grouped bars per image, one subplot per metric, one legend above them; SSIM's axis ends at 1.

    ``rows``: dicts with ``name`` and keys ``f"{metric}_{group}"`` (e.g. ``psnr_hazy``).
    """
    names = [r["name"] for r in rows]
    x = np.arange(len(names))
    width = 0.8 / max(1, len(groups))
    fig = Figure(figsize=(min(COLUMN_PX / DPI, 4.2 * len(metrics) + 0.3), 3.5))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    units = {"psnr": "PSNR (dB)", "ssim": "SSIM"}
    for ax, metric in zip(axes, metrics):
        top = 0.0
        for k, group in enumerate(groups):
            vals = [float(r[f"{metric}_{group}"]) for r in rows]
            top = max([top] + [v for v in vals if math.isfinite(v)])
            ax.bar(x + (k - (len(groups) - 1) / 2) * width, vals, width, label=group)
        ax.set_ylim(0, 1.0 if metric == "ssim" else (top * 1.08 if top > 0 else 1.0))
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=20 if len(names) > 3 else 0)
        ax.set_ylabel(units.get(metric, metric))
        ax.set_title(units.get(metric, metric) + " per image", fontsize=FONT_PT + 1)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(labelsize=FONT_PT)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(groups), fontsize=FONT_PT, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return fig


def stage2_verdict(weights: str, psnr_j: float, psnr_out: float, ssim_j: float, ssim_out: float) -> str:
    """One markdown sentence saying whether the diffusion stage improved on stage 1's J here, from
    the numbers (PSNR in dB, SSIM in [0, 1]), and what that means for ``weights`` ("demo" is the
    small CPU-trained bundle, not the paper's model)."""
    dp, ds = psnr_out - psnr_j, ssim_out - ssim_j
    if abs(dp) < 0.01 and abs(ds) < 0.001:
        what = f"Here the diffusion stage leaves stage 1's J as it was ({dp:+.2f} dB PSNR, {ds:+.3f} SSIM)."
    elif dp > 0 and ds > 0:
        what = f"Here the diffusion stage **improves** on stage 1's J: {dp:+.2f} dB PSNR, {ds:+.3f} SSIM."
    elif dp <= 0 and ds <= 0:
        what = f"Here the diffusion stage scores **below** stage 1's J: {dp:+.2f} dB PSNR, {ds:+.3f} SSIM."
    else:
        what = f"Here the diffusion stage is **mixed** against stage 1's J: {dp:+.2f} dB PSNR, {ds:+.3f} SSIM."
    if weights == "demo":
        what += (" These are the bundled demo weights: a small denoiser trained for minutes on a CPU on "
                 "synthetic haze, so what stage 2 adds is limited (docs/benchmarks.md has the full "
                 "measurement); the paper's numbers are for the released `nh-haze` / `dense-haze` weights, "
                 "which need a GPU.")
    return what


# --------------------------------------------------------------------------------------------
# Tables (pandas is not a dependency)
# --------------------------------------------------------------------------------------------
def _fmt_cell(v: Any, digits: int) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}f}"
    return str(v)


def _columns(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]]) -> List[str]:
    if columns is not None:
        return list(columns)
    cols: List[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def metrics_table_markdown(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
                           digits: int = 3) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (floats rounded to ``digits``)."""
    cols = _columns(rows, columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_fmt_cell(r.get(c, ""), digits) for c in cols) + " |")
    return "\n".join(lines)


def metrics_table_html(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None,
                       digits: int = 3) -> str:
    """The same table as HTML (for ``IPython.display.HTML`` or an ``ipywidgets.HTML``)."""
    from html import escape

    cols = _columns(rows, columns)
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{escape(_fmt_cell(r.get(c, ''), digits))}</td>" for c in cols)
                   + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
