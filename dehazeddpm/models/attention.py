"""Spatial self-attention of the SR3 UNet.

The reference computes attention with two einsums and an explicit softmax over an
(H*W) x (H*W) matrix: quadratic memory. ``scaled_dot_product_attention`` computes the same
function with fused flash / memory-efficient kernels, linear in memory, but only for inputs laid
out as contiguous (B, heads, HW, head_dim) tensors; handed transposed views it silently falls back
to the math kernel, which materialises the whole score matrix. ``impl="reference"`` keeps the
explicit form for benchmarking and for checking that the two agree.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_IMPLS = ("sdpa", "reference")


class SelfAttention(nn.Module):
    """Residual multi-head self-attention over all pixels of a feature map.

    Input and output: (B, C, H, W). Scores are scaled by 1/sqrt(C) (the full channel count,
    not the head size: a quirk of the reference we keep so weights transfer).
    Parameter names (``norm``, ``qkv``, ``out``) follow the released checkpoints.
    """

    def __init__(self, in_channel: int, n_head: int = 1, norm_groups: int = 32, impl: str = "sdpa"):
        super().__init__()
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
        self.n_head = n_head
        self.impl = impl
        self.norm = nn.GroupNorm(norm_groups, in_channel)
        self.qkv = nn.Conv2d(in_channel, in_channel * 3, 1, bias=False)
        self.out = nn.Conv2d(in_channel, in_channel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        head_dim = c // self.n_head
        # Per head, the qkv channels are laid out [q | k | v] (reference channel order).
        qkv = self.qkv(self.norm(x)).reshape(b, self.n_head, 3, head_dim, h * w)
        scale = 1.0 / math.sqrt(c)
        if self.impl == "sdpa":
            # (3, B, heads, HW, head_dim), made contiguous: the layout the fused kernels require
            q, k, v = qkv.permute(2, 0, 1, 4, 3).contiguous().unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, scale=scale).transpose(-1, -2)
        else:
            q, k, v = qkv.unbind(dim=2)  # each (B, heads, head_dim, HW)
            scores = torch.einsum("bndq,bndk->bnqk", q, k) * scale
            out = torch.einsum("bnqk,bndk->bndq", scores.softmax(dim=-1), v)
        return self.out(out.reshape(b, c, h, w)) + x
