"""Spatial self-attention of the SR3 UNet.

The reference computes attention with two einsums and an explicit softmax over an
(H*W) x (H*W) matrix: quadratic memory. ``scaled_dot_product_attention`` computes the same
function with fused flash / memory-efficient kernels, linear in memory, but only for inputs laid
out as contiguous (B, heads, HW, head_dim) tensors; handed transposed views it silently falls back
to the math kernel, which materialises the whole score matrix. ``impl="reference"`` keeps the
explicit form for benchmarking and for checking that the two agree.
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import ramp_window, tile_starts
from .encodings import PointwiseConv

__all__ = ["ATTENTION_IMPLS", "SelfAttention", "set_attention_window"]

ATTENTION_IMPLS = ("sdpa", "reference")


class SelfAttention(nn.Module):
    """Residual multi-head self-attention over the positions of a feature map.

    Input and output: (B, C, H, W). Scores are scaled by 1/sqrt(C) (the full channel count,
    not the head size: a quirk of the reference we keep so weights transfer).
    Parameter names (``norm``, ``qkv``, ``out``) follow the released checkpoints.

    ``window`` (None: the whole map, as the reference): attend within overlapping windows of
    ``window`` x ``window`` positions instead, half a window apart, blending the overlaps with the
    tiling's raised-cosine weights. For weights whose attention only ever saw small maps (small
    training crops), so that a large image is attended to at the scale they learned; memory and
    time then grow linearly with the map.
    """

    def __init__(self, in_channel: int, n_head: int = 1, norm_groups: int = 32, impl: str = "sdpa"):
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.n_head = n_head
        self.impl = impl
        self.window: Optional[int] = None
        self.norm = nn.GroupNorm(norm_groups, in_channel)
        self.qkv = PointwiseConv(in_channel, in_channel * 3, bias=False)
        self.out = PointwiseConv(in_channel, in_channel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.qkv(self.norm(x))
        h, w = x.shape[-2:]
        win = self.window
        out = self._windowed(qkv, win) if win and (h > win or w > win) else self._attend(qkv)
        return self.out(out) + x

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """(N, 3C, h, w) projections -> (N, C, h, w) attention over all h * w positions."""
        n, c3, h, w = qkv.shape
        c = c3 // 3
        head_dim = c // self.n_head
        # Per head, the qkv channels are laid out [q | k | v] (reference channel order).
        qkv = qkv.reshape(n, self.n_head, 3, head_dim, h * w)
        scale = 1.0 / math.sqrt(c)
        if self.impl == "sdpa":
            # (3, N, heads, HW, head_dim), made contiguous: the layout the fused kernels require
            q, k, v = qkv.permute(2, 0, 1, 4, 3).contiguous().unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(-1, -2)
        else:
            q, k, v = qkv.unbind(dim=2)  # each (N, heads, head_dim, HW)
            scores = torch.einsum("bndq,bndk->bnqk", q, k) * scale
            out = torch.einsum("bnqk,bndk->bndq", scores.softmax(dim=-1), v)
        return out.reshape(n, c, h, w)

    def _windowed(self, qkv: torch.Tensor, window: int) -> torch.Tensor:
        n, c3, h, w = qkv.shape
        th, tw = min(window, h), min(window, w)
        overlap = window // 2
        ys = tile_starts(h, th, min(overlap, th - 1))
        xs = tile_starts(w, tw, min(overlap, tw - 1))
        wy = {y: ramp_window(th, overlap, at_start=y == ys[0], at_end=y == ys[-1]).to(qkv.device) for y in ys}
        wx = {x: ramp_window(tw, overlap, at_start=x == xs[0], at_end=x == xs[-1]).to(qkv.device) for x in xs}
        out = torch.zeros(n, c3 // 3, h, w, device=qkv.device, dtype=torch.float32)
        wsum = torch.zeros(1, 1, h, w, device=qkv.device, dtype=torch.float32)
        for y in ys:  # one row of windows at a time: memory stays a row's worth
            att = self._attend(torch.cat([qkv[:, :, y:y + th, x:x + tw] for x in xs], 0)).float()
            for k, x in enumerate(xs):
                weight = (wy[y][:, None] * wx[x][None, :])[None, None]
                out[:, :, y:y + th, x:x + tw] += att[k * n:(k + 1) * n] * weight
                wsum[:, :, y:y + th, x:x + tw] += weight
        return (out / wsum).to(qkv.dtype)


@contextlib.contextmanager
def set_attention_window(module: nn.Module, window: Optional[int]) -> Iterator[None]:
    """Within the block, every :class:`SelfAttention` inside ``module`` attends in windows of
    ``window`` positions (None or 0: the whole map); their own settings come back afterwards."""
    layers = [m for m in module.modules() if isinstance(m, SelfAttention)]
    before = [m.window for m in layers]
    for m in layers:
        m.window = window or None
    try:
        yield
    finally:
        for m, w in zip(layers, before):
            m.window = w
