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
