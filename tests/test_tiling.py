"""TiledDenoiser: coverage, exactness for pointwise models, closeness for a real UNet, no seams."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dehazeddpm import UNet, UNetConfig
from dehazeddpm.inference.tiling import TiledDenoiser
from dehazeddpm.utils import ramp_window, tile_starts


class Pointwise(nn.Module):
    """1x1 convs only (no spatial mixing), scaled by each item's noise level."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(7, 8, 1), nn.SiLU(), nn.Conv2d(8, 3, 1))
        self.config = UNetConfig(in_channel=7, out_channel=3, channel_mults=(1, 2))

    def forward(self, x, noise_level):
        return self.net(x) * noise_level.reshape(-1, 1, 1, 1)


@pytest.fixture(scope="module")
def unet() -> UNet:
    torch.manual_seed(0)
    return UNet(in_channel=7, out_channel=3, inner_channel=16, norm_groups=8, channel_mults=(1, 2),
                attn_res=(8,), res_blocks=1, image_size=16).eval()


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (32, 32, 8), (20, 32, 8), (96, 32, 0), (33, 32, 16)])
def test_tile_starts_cover_axis(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length  # first at 0, last flush with the border
    covered = torch.zeros(length, dtype=torch.bool)
    for s in starts:
        covered[s:s + t] = True
    assert bool(covered.all())
    for a, b in zip(starts, starts[1:]):
        assert b > a and a + t - b >= overlap  # neighbours share at least `overlap` pixels


def test_tile_starts_rejects_bad_overlap():
    with pytest.raises(ValueError):
        tile_starts(100, 32, 32)


def test_ramp_window_positive_and_flat_at_image_border():
    w = ramp_window(32, 8, at_start=False, at_end=False)
    assert float(w.min()) > 0 and float(w.max()) == 1.0
    assert torch.all(w[:8][1:] > w[:8][:-1])  # rises over the overlap
    assert torch.allclose(w, w.flip(0))
    edge = ramp_window(32, 8, at_start=True, at_end=False)
    assert torch.all(edge[:24] == 1.0) and float(edge[-1]) < 0.1


@pytest.mark.parametrize("overlap", [0, 8, 12])
def test_pointwise_model_tiled_equals_full(overlap):
    model = Pointwise().eval()
    x = torch.randn(2, 7, 40, 70, generator=torch.Generator().manual_seed(1))
    levels = torch.tensor([0.3, 0.9])  # per-item noise levels must reach the right tiles
    tiled = TiledDenoiser(model, 16, overlap, tile_batch=3)
    with torch.no_grad():
        full = model(x, levels)
        out = tiled(x, levels)
    assert len(tiled.tiles(40, 70)) > 4
    assert out.shape == full.shape
    torch.testing.assert_close(out, full, atol=1e-6, rtol=1e-6)


def test_small_input_goes_straight_through(unet):
    x = torch.randn(1, 7, 16, 32)
    with torch.no_grad():
        assert torch.equal(TiledDenoiser(unet, 32, 8)(x, torch.tensor([0.5])), unet(x, torch.tensor([0.5])))


def test_tile_size_rounded_to_unet_multiple(unet):
    assert TiledDenoiser(unet, 31, 4).tile_size == 32
    assert TiledDenoiser(unet, 32).overlap == 8


def test_real_unet_tiled_close_to_full(unet):
    # x_t is mostly noise: a stationary input, so GroupNorm/attention statistics of a tile are
    # close to those of the whole image and only the zero padding at tile edges differs.
    x = torch.randn(1, 7, 32, 96, generator=torch.Generator().manual_seed(0))
    nl = torch.tensor([0.5])
    with torch.no_grad():
        full = unet(x, nl)
        out = TiledDenoiser(unet, 32, 16)(x, nl)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # away from the image border
    rel = (out - full)[inner].abs().mean() / full[inner].abs().mean()
    corr = torch.corrcoef(torch.stack([out[inner].flatten(), full[inner].flatten()]))[0, 1]
    assert float(rel) < 0.1 and float(corr) > 0.99


def _seam_ratio(eps: torch.Tensor, seams: list) -> float:
    """Mean |horizontal difference| at tile-boundary columns / median over the other interior columns."""
    d = (eps[..., 1:] - eps[..., :-1]).abs().mean(dim=(0, 1, 2))  # d[c] = |x[c+1] - x[c]|
    seam_cols = sorted({c for s in seams for c in (s - 1, s)})
    others = [c for c in range(4, d.numel() - 4) if c not in seam_cols]
    return float(d[seam_cols].mean() / d[others].median())


def test_no_seam_on_smooth_input(unet):
    h, w = 32, 96
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    x = (torch.stack([torch.sin(2 * xx + c) * torch.cos(1.5 * yy - c) for c in range(7)]) * 0.8)[None]
    nl = torch.tensor([0.5])
    with torch.no_grad():
        hard = TiledDenoiser(unet, 32, 0)(x, nl)          # tiles cut edge to edge: seams
        blended_model = TiledDenoiser(unet, 32, 16)
        blended = blended_model(x, nl)
    starts = sorted({b[1] for b in blended_model.tiles(h, w)})
    edges = [s for s in starts[1:]] + [s + 32 for s in starts[:-1]]  # where a tile begins or ends
    # The metric sees hard seams (sanity check) ...
    assert _seam_ratio(hard, [32, 64]) > 3.0
    # ... and with blended overlaps the tile edges are no steeper than the rest of the image.
    assert _seam_ratio(blended, edges) < 1.5


def test_tile_progress_counts_every_tile_of_every_call():
    model = Pointwise().eval()
    done = []
    tiled = TiledDenoiser(model, 16, 4, tile_batch=3, on_tiles=done.append)
    x = torch.randn(1, 7, 40, 70)
    with torch.no_grad():
        tiled(x, torch.tensor([0.5]))
        tiled(x, torch.tensor([0.4]))
    assert sum(done) == 2 * len(tiled.tiles(40, 70)) and max(done) <= 3


@pytest.mark.parametrize("items", [1, 3])
def test_batched_tiles_are_bit_equal_to_one_tile_at_a_time_in_fp32(items):
    """Any number of tiles per UNet call (and several samples per tile) gives, in fp32 on the
    CPU (in the layout the pipeline runs fp32 in), exactly the numbers of one tile at a time, at
    the demo's tile size. (With tiles so small that the deepest map is 16 px, oneDNN picks its 3x3
    kernel by batch size and the last bit may differ.)"""
    import dataclasses

    from dehazeddpm.inference.device import PrecisionDenoiser
    from dehazeddpm.models import DEMO_UNET, UNet

    torch.manual_seed(0)
    unet = UNet(**dataclasses.asdict(DEMO_UNET)).eval()
    x = torch.randn(items, 7, 200, 264)  # four tiles
    level = torch.full((items,), 0.37)
    cpu = torch.device("cpu")
    with torch.inference_mode():
        one = PrecisionDenoiser(TiledDenoiser(unet, 136, 8, tile_batch=1), "fp32", cpu)(x, level)
        for batch in (2, 3, 100):
            many = PrecisionDenoiser(TiledDenoiser(unet, 136, 8, tile_batch=batch), "fp32", cpu)(x, level)
            assert torch.equal(one, many), batch


@pytest.mark.parametrize("size", [(40, 56), (100, 72)])  # one tile, and several
def test_a_bound_condition_is_cropped_with_each_tile(unet, size):
    """The pipeline binds [J, T] to the tiler, which crops it with each tile instead of taking a
    full-size cat([condition, x_t]) every step: the same eps, bit for bit, for K samples sharing
    one condition (an expanded view, never copied to full size)."""
    torch.manual_seed(1)
    h, w = size
    condition, x_t = torch.randn(1, 4, h, w), torch.randn(3, 3, h, w)
    level = torch.full((3,), 0.6)
    with torch.inference_mode():
        given = TiledDenoiser(unet, 32, 8, tile_batch=2)(torch.cat([condition.expand(3, -1, -1, -1), x_t], 1), level)
        bound = TiledDenoiser(unet, 32, 8, tile_batch=2, condition=condition.expand(3, -1, -1, -1))(x_t, level)
    assert bound.shape == (3, 3, h, w) and torch.equal(given, bound)
