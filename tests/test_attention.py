"""Attention runs PyTorch's fused kernel (not the math fallback) and its memory grows linearly."""
from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from dehazeddpm.models import SelfAttention

FUSED_CPU = "aten::_scaled_dot_product_flash_attention_for_cpu"
MATH = "aten::_scaled_dot_product_attention_math"


def _attention(impl: str = "sdpa", n_head: int = 1) -> SelfAttention:
    torch.manual_seed(0)
    return SelfAttention(32, n_head=n_head, norm_groups=8, impl=impl).eval()


def _profile(attn: SelfAttention, x: torch.Tensor, memory: bool = False):
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=memory) as prof:
        attn(x)
    return prof


@pytest.mark.parametrize("n_head", [1, 4])
def test_cpu_attention_runs_the_fused_kernel(n_head):
    names = {e.key for e in _profile(_attention(n_head=n_head), torch.randn(2, 32, 12, 20)).key_averages()}
    assert FUSED_CPU in names, sorted(n for n in names if "attention" in n)
    assert MATH not in names


def _peak_bytes(attn: SelfAttention, hw) -> int:
    """Highest running total of the bytes the call holds (allocations minus frees, in time order)."""
    prof = _profile(attn, torch.randn(1, 32, *hw), memory=True)
    now = top = 0
    for _, delta in sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()):
        now += delta
        top = max(top, now)
    return top


def test_attention_memory_grows_linearly_with_positions():
    sizes = [(32, 32), (64, 64)]  # 4x the positions
    fused = [_peak_bytes(_attention("sdpa"), hw) for hw in sizes]
    explicit = [_peak_bytes(_attention("reference"), hw) for hw in sizes]
    assert 3.5 < fused[1] / fused[0] < 4.5, fused          # linear: 4x
    assert explicit[1] / explicit[0] > 12, explicit         # the score matrix: 16x
    assert fused[1] < explicit[1] / 10


@pytest.mark.parametrize("n_head,hw", [(1, (16, 16)), (4, (6, 5)), (2, (1, 7))])
def test_fused_and_reference_attention_agree(n_head, hw):
    x = torch.randn(2, 32, *hw, generator=torch.Generator().manual_seed(1))
    fused, ref = _attention("sdpa", n_head), _attention("reference", n_head)
    ref.load_state_dict(fused.state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), ref(x), atol=1e-5, rtol=1e-5)


def test_window_as_large_as_the_map_is_global_attention():
    attn = _attention(n_head=2)
    x = torch.randn(1, 32, 12, 20, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = attn(x)
        attn.window = 20
        torch.testing.assert_close(attn(x), full, atol=0, rtol=0)


def test_windowed_attention_is_local():
    """With windows of 8 positions, columns 0..7 depend only on columns 0..11 (their windows);
    global attention would see the whole row. (GroupNorm's map-wide statistics are taken out.)"""
    attn = _attention()
    attn.norm = torch.nn.Identity()
    x = torch.randn(1, 32, 8, 40, generator=torch.Generator().manual_seed(3))
    far = x.clone()
    far[..., 12:] += torch.randn(1, 32, 8, 28, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        global_near = (attn(x) - attn(far))[..., :8].abs().max()
        attn.window = 8
        local_near = (attn(x) - attn(far))[..., :8].abs().max()
        windowed = attn(x)
    assert float(global_near) > 1e-3 and float(local_near) == 0.0
    # an interior position is the blend of its windows' attention, which stays in the values' hull
    assert torch.isfinite(windowed).all() and windowed.shape == x.shape


def test_attention_window_context_sets_and_restores():
    from dehazeddpm.models import UNet, set_attention_window
    torch.manual_seed(0)
    unet = UNet(in_channel=7, inner_channel=16, norm_groups=8, channel_mults=(1, 2), attn_res=(8,), res_blocks=1,
                image_size=16).eval()
    layers = [m for m in unet.modules() if isinstance(m, SelfAttention)]
    assert layers and all(m.window is None for m in layers)
    with set_attention_window(unet, 4):
        assert all(m.window == 4 for m in layers)
        x = torch.randn(1, 7, 32, 32)
        with torch.inference_mode():
            windowed = unet(x, torch.tensor([0.5]))
    assert all(m.window is None for m in layers)
    with torch.inference_mode():
        assert not torch.equal(windowed, unet(x, torch.tensor([0.5])))
