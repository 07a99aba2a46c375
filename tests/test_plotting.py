"""Static figures: right panels, labels and colorbars, no pyplot state."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from dehazeddpm.models.stage1 import Stage1Output
from dehazeddpm.viz import plotting


def _stage1_output(h: int = 24, w: int = 32) -> tuple:
    g = torch.Generator().manual_seed(0)
    J = torch.rand(1, 3, h, w, generator=g)
    T = torch.rand(1, 1, h, w, generator=g)
    A = torch.tensor([0.8, 0.85, 0.9]).view(1, 3, 1, 1)
    I = J * T + A * (1 - T)
    hazy = (I + 0.01).clamp(0, 1)
    return hazy, Stage1Output(J=J, coarse=J.flip(-1), T=T, A=A, I=I)


def _titles(fig: Figure) -> list:
    return [ax.get_title() for ax in fig.axes]


def _spread_result(h: int = 24, w: int = 32):
    """What a call with samples=3 returns, without running one."""
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(1)
    samples = torch.rand(3, 3, h, w, generator=g)
    mean = samples.mean(0, keepdim=True)
    return SimpleNamespace(J=mean, T=torch.rand(1, 1, h, w, generator=g), image=mean,
                           spread=samples.std(0, unbiased=False, keepdim=True).mean(1, keepdim=True),
                           options=SimpleNamespace(samples=3))


def test_plot_spread_shows_t_the_spread_and_the_mean() -> None:
    res = _spread_result()
    fig = plotting.plot_spread(res)
    titles = _titles(fig)
    assert titles[0].startswith("T (mean") and titles[1].startswith("spread of 3 samples (mean ")
    assert titles[2] == "mean of 3 samples"
    assert f"{float(res.spread.mean()):.3f}" in titles[1]
    res.spread = None
    with pytest.raises(ValueError, match="samples=K"):
        plotting.plot_spread(res)


def test_to_numpy_image_layouts() -> None:
    t = torch.rand(1, 3, 5, 7)
    assert plotting.to_numpy_image(t).shape == (5, 7, 3)
    assert plotting.to_numpy_image(t[0]).shape == (5, 7, 3)
    assert plotting.to_numpy_image(torch.rand(1, 1, 5, 7)).shape == (5, 7)
    pil = Image.new("RGB", (7, 5), (255, 0, 0))
    arr = plotting.to_numpy_image(pil)
    assert arr.shape == (5, 7, 3) and arr[0, 0, 0] == 1.0 and arr[0, 0, 1] == 0.0
    signed = plotting.signed_to_numpy(-torch.ones(1, 3, 2, 2))
    assert np.all(signed == 0.0)


def test_compose_wipe_positions() -> None:
    before = torch.zeros(3, 10, 20)
    after = torch.ones(3, 10, 20)
    left = np.asarray(plotting.compose_wipe(before, after, 0.0))
    right = np.asarray(plotting.compose_wipe(before, after, 1.0))
    assert left.max() == 0 and right.min() == 255
    mid = np.asarray(plotting.compose_wipe(before, after, 0.5))
    assert mid[:, :9].min() == 255 and mid[:, 11:].max() == 0  # after left, before right
    # different sizes: the second is resized to the first
    assert plotting.compose_wipe(torch.zeros(3, 10, 20), torch.ones(3, 5, 10), 0.3).size == (20, 10)


def test_png_helpers() -> None:
    fig = plotting.plot_side_by_side([torch.rand(3, 8, 8)] * 2, ["a", "b"])
    png = plotting.figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(plotting.image_to_png(torch.rand(3, 6, 9)))).size == (9, 6)
    with pytest.raises(ValueError):
        plotting.plot_side_by_side([torch.rand(3, 8, 8)], ["a", "b"])


def test_plot_stage1_all_panels() -> None:
    hazy, out = _stage1_output()
    fig = plotting.plot_stage1(hazy, out)
    titles = " ".join(_titles(fig))
    for part in ("input", "J: clear", "coarse", "T (mean", "A: airlight", "re-hazed", "|re-hazed"):
        assert part in titles
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert "t (1 = no haze)" in labels and "abs. error" in labels  # colorbars for T and the error
    # the airlight values are written on the swatch
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("R 0.800" in t and "B 0.900" in t for t in texts)


def test_plot_stage1_subset_and_errors() -> None:
    hazy, out = _stage1_output()
    fig = plotting.plot_stage1(hazy, out, panels=["hazy", "T"])
    assert sum(1 for t in _titles(fig) if t) == 2
    with pytest.raises(ValueError, match="unknown panels"):
        plotting.plot_stage1(hazy, out, panels=["nope"])
    err = plotting.rehaze_error(hazy, out.I)
    assert err.shape == (24, 32) and abs(err.mean() - 0.01) < 0.005


def test_trajectory_space_detection_and_plot() -> None:
    from dehazeddpm.inference.pipeline import TrajectoryFrame

    signed = [(i, 100 - i, torch.rand(1, 3, 8, 8) * 2 - 1, torch.rand(1, 3, 8, 8) * 2 - 1) for i in range(9)]
    unit = [TrajectoryFrame(i, 100 - i, torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)) for i in range(3)]
    assert plotting.trajectory_is_signed(signed)
    assert not plotting.trajectory_is_signed(unit)
    fig = plotting.plot_trajectory(signed, max_columns=4)
    assert len(fig.axes) == 8  # 2 rows x 4 columns, thinned from 9
    titles = [t for t in _titles(fig) if t]
    assert titles[0] == "step 0, t=100" and titles[-1] == "step 8, t=92"
    assert fig.axes[0].get_ylabel() == "x_t"
    with pytest.raises(ValueError):
        plotting.plot_trajectory([])
    assert len(plotting.trajectory_frame(unit[0].x_t, unit[0].x0).axes) == 2


def test_sampler_comparison_and_bars_are_labelled() -> None:
    records = [{"sampler": s, "steps": n, "seconds": n * 0.1, "psnr": 20 + n / 10}
               for s in ("ddpm", "ddim") for n in (2, 4, 8)]
    fig = plotting.plot_sampler_comparison(records)
    ax_t, ax_p = fig.axes[:2]
    assert ax_t.get_xlabel() == "sampling steps" and ax_t.get_ylabel() == "time (s)"
    assert "PSNR" in ax_p.get_ylabel() and len(ax_p.get_lines()) == 2
    rows = [{"name": n, "psnr_hazy": 10.0, "psnr_dehazed": 20.0, "ssim_hazy": 0.5, "ssim_dehazed": 0.8}
            for n in ("a", "b")]
    fig = plotting.plot_metrics_bar(rows)
    assert [ax.get_ylabel() for ax in fig.axes] == ["PSNR (dB)", "SSIM"]
    assert len(fig.axes[0].patches) == 4


def test_tables() -> None:
    rows = [{"name": "a", "psnr": 12.3456, "n": 3}, {"name": "b<", "psnr": float("inf"), "n": 4}]
    md = plotting.metrics_table_markdown(rows, digits=2)
    assert md.splitlines()[0] == "| name | psnr | n |"
    assert "| a | 12.35 | 3 |" in md and "| b< | inf | 4 |" in md
    html = plotting.metrics_table_html(rows, columns=["name", "psnr"])
    assert "<th>name</th><th>psnr</th>" in html and "b&lt;" in html and "<td>12.346</td>" in html


def _png_width(fig) -> int:
    import io

    from PIL import Image

    return Image.open(io.BytesIO(plotting.figure_to_png(fig))).size[0]


def _font_sizes(fig) -> list:
    sizes = []
    for ax in fig.axes:
        sizes += [ax.title.get_fontsize(), ax.xaxis.label.get_fontsize(), ax.yaxis.label.get_fontsize()]
        sizes += [t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels() + ax.texts]
    return sizes


@pytest.mark.parametrize("shape", [(3, 64, 96), (3, 346, 512), (3, 100, 800), (3, 600, 200)])
def test_figures_fit_the_output_column_with_legible_text(shape) -> None:
    """Shown 1:1 in a ~960 px notebook column: no figure wider than COLUMN_PX, at most
    MAX_COLUMNS panels per row, no text under 9 pt (as displayed, since nothing is scaled)."""
    from dehazeddpm.inference.pipeline import TrajectoryFrame

    img = torch.rand(*shape)
    hazy, out = _stage1_output()
    traj = [TrajectoryFrame(i, 100 - i, img[None], img[None]) for i in range(9)]
    records = [{"sampler": s, "steps": n, "seconds": n * 0.1, "psnr": 20.0} for s in ("ddpm", "ddim") for n in (1, 2, 4)]
    rows = [{"name": n, "psnr_hazy": 10.0, "psnr_dehazed": 20.0, "ssim_hazy": 0.5, "ssim_dehazed": 0.8} for n in "abc"]
    figs = {"side": plotting.plot_side_by_side([img] * 7, [f"panel {i}\n20.1 dB" for i in range(7)]),
            "stage1": plotting.plot_stage1(hazy, out), "trajectory": plotting.plot_trajectory(traj),
            "samplers": plotting.plot_sampler_comparison(records), "bars": plotting.plot_metrics_bar(rows),
            "spread": plotting.plot_spread(_spread_result(*shape[1:]))}
    for name, fig in figs.items():
        assert _png_width(fig) <= plotting.COLUMN_PX, name
        assert min(_font_sizes(fig)) >= 9, name
        image_axes = [ax for ax in fig.axes if ax.images]
        if image_axes:
            lefts = {round(ax.get_position().x0, 3) for ax in image_axes}
            assert len(lefts) <= plotting.MAX_COLUMNS + 2, name  # colour bars may add columns
    assert len(figs["trajectory"].axes) == 8  # thinned to 4 columns by default
    side_rows = {round(ax.get_position().y0, 3) for ax in figs["side"].axes if ax.images}
    assert len(side_rows) == 2  # 7 panels wrap into 2 rows of at most 4


@pytest.mark.parametrize("shape", [(64, 64), (64, 96), (346, 512), (100, 800), (600, 200)])
def test_stage1_figure_text_stays_clear_of_titles_and_inside_the_airlight_swatch(shape) -> None:
    """No panel title runs into a colour bar's tick labels or the airlight's values (the error
    panel's one-line title once ran over its colour bar's top tick), and the values fit the swatch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    hazy, out = _stage1_output(*shape)
    out = out._replace(I=(out.I + 0.045 * torch.rand(out.I.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1))
    fig = plotting.plot_stage1(hazy, out)
    for size in (None, (9.4, 4.6)):  # as drawn, and at a fixed size like the inspector's
        if size:
            fig.set_size_inches(*size)
            fig.tight_layout()
        renderer = FigureCanvasAgg(fig).get_renderer()
        fig.draw(renderer)
        texts = [t for ax in fig.axes for t in list(ax.texts) + ((ax.get_xticklabels() + ax.get_yticklabels())
                                                              if ax.axison else []) if t.get_visible() and t.get_text()]
        for title in [ax.title for ax in fig.axes if ax.get_title()]:
            box = title.get_window_extent(renderer)
            assert not [t.get_text() for t in texts if box.overlaps(t.get_window_extent(renderer))], title.get_text()
        swatch = next(ax for ax in fig.axes if ax.get_title().startswith("A: airlight"))
        inner, frame = swatch.texts[0].get_window_extent(renderer), swatch.images[0].get_window_extent(renderer)
        assert frame.x0 <= inner.x0 and inner.x1 <= frame.x1 and frame.y0 <= inner.y0 and inner.y1 <= frame.y1, size


def test_sampler_plot_ticks_are_the_step_counts_and_ssim_axis_ends_at_one() -> None:
    records = [{"sampler": "ddim", "steps": n, "seconds": 0.1, "psnr": 20.0} for n in (1, 2, 4)]
    ax_t = plotting.plot_sampler_comparison(records).axes[0]
    assert list(ax_t.get_xticks()) == [1, 2, 4]
    rows = [{"name": "a", "psnr_hazy": 10.0, "psnr_dehazed": 20.0, "ssim_hazy": 0.5, "ssim_dehazed": 0.95}]
    fig = plotting.plot_metrics_bar(rows)
    assert fig.axes[1].get_ylim() == (0.0, 1.0) and fig.axes[0].get_ylim()[1] < 22
