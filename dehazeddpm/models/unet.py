"""The stage-2 denoiser: the SR3 UNet that predicts the noise in x_t given the condition.

Reference: ``model/sr3_modules/unet.py`` (class ``UNet``), wrapped as ``denoise_fn`` inside the
reference ``GaussianDiffusion`` ("netG"). Sub-module attribute names (``downs``, ``mid``, ``ups``,
``res_block``, ``block1``, ``noise_func`` ...) deliberately match the released state-dict keys so
checkpoints load without any key translation; the classes themselves have descriptive names.

Input: ``torch.cat([condition, x_t], 1)`` with the condition first ([J, T] in [-1, 1], 4 channels,
or J alone, 3 channels) and x_t in diffusion space; plus the noise level gamma = sqrt(alpha_bar),
shape (B,) or (B, 1). Output: the predicted noise, (B, out_channel, H, W).
H and W must be multiples of ``2 ** (len(channel_mults) - 1)``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from ..utils import from_dict
from .attention import ATTENTION_IMPLS, SelfAttention
from .encodings import FeatureWiseAffine, NoiseLevelEncoding, PointwiseConv

CONDITION_NAMES = {3: "J", 4: "J+T"}


@dataclass
class UNetConfig:
    """Keyword-compatible with the reference ``UNet`` (``channel_multiplier`` in the JSON)."""

    in_channel: int = 7
    out_channel: int = 3
    inner_channel: int = 64
    norm_groups: int = 32
    channel_mults: Tuple[int, ...] = (1, 2, 4, 8, 8)
    attn_res: Tuple[int, ...] = (16,)
    res_blocks: int = 2
    dropout: float = 0.0
    image_size: int = 512
    use_affine_level: bool = False

    def __post_init__(self) -> None:
        def positive_int(name: str, v: Any) -> int:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"UNet config: {name} must be a positive integer, got {v!r}")
            return v

        if isinstance(self.attn_res, int):
            self.attn_res = (self.attn_res,)
        for name in ("channel_mults", "attn_res"):
            if not isinstance(getattr(self, name), (list, tuple)):
                raise ValueError(f"UNet config: {name} must be a list of integers, got {getattr(self, name)!r}")
        self.channel_mults = tuple(positive_int("channel_mults", m) for m in self.channel_mults)
        self.attn_res = tuple(positive_int("attn_res", r) for r in self.attn_res)
        for name in ("in_channel", "out_channel", "inner_channel", "norm_groups", "res_blocks", "image_size"):
            positive_int(name, getattr(self, name))
        if not self.channel_mults:
            raise ValueError("UNet config: channel_mults must not be empty")
        bad = sorted({self.inner_channel * m for m in self.channel_mults if (self.inner_channel * m) % self.norm_groups})
        if bad:
            raise ValueError(f"UNet config: norm_groups {self.norm_groups} does not divide the channel counts {bad}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"UNet config: dropout must be in [0, 1), got {self.dropout!r}")
        if not isinstance(self.use_affine_level, bool):
            raise ValueError(f"UNet config: use_affine_level must be true or false, got {self.use_affine_level!r}")

    @classmethod
    def from_dict(cls, cfg: Dict[str, Any]) -> "UNetConfig":
        """Build from a dict with reference (``channel_multiplier``) or package keys; unknown keys
        are an error."""
        return from_dict(cls, cfg, "UNet config", channel_multiplier="channel_mults")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attn_res"] = list(self.attn_res)
        return d

    def attention_levels(self) -> List[int]:
        """Indices of the resolution levels whose residual blocks carry self-attention."""
        return [lvl for lvl in range(len(self.channel_mults)) if (self.image_size >> lvl) in self.attn_res]

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)

    @property
    def condition(self) -> str:
        """What the condition channels hold: ``"J+T"`` (7-channel input) or ``"J"`` (6)."""
        return CONDITION_NAMES.get(self.in_channel - self.out_channel, f"{self.in_channel - self.out_channel} channels")


# The two UNets of this package, one constant each (the registry's entries hold the same values,
# checked by tests/test_weights.py): the released DehazeDDPM denoiser (reference JSON
# ``model.unet``), and the small demo denoiser that trains on a CPU.
RELEASED_UNET = UNetConfig(dropout=0.2)
DEMO_UNET = UNetConfig(inner_channel=32, norm_groups=16, channel_mults=(1, 2, 2), attn_res=(16,), res_blocks=1,
                       image_size=64)


class Swish(nn.Module):
    """x * sigmoid(x), as one fused op (the reference writes the product out: two passes)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class NormActConv(nn.Module):
    """GroupNorm -> Swish -> (Dropout) -> 3x3 conv (reference ``Block``; keys ``block.0``, ``block.3``)."""

    def __init__(self, dim: int, dim_out: int, groups: int = 32, dropout: float = 0.0):
        super().__init__()
        self.block = nn.Sequential(
            nn.GroupNorm(groups, dim),
            Swish(),
            nn.Dropout(dropout) if dropout else nn.Identity(),
            nn.Conv2d(dim, dim_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class ResidualBlock(nn.Module):
    """Two NormActConv with the noise embedding added in between (reference ``ResnetBlock``)."""

    def __init__(self, dim: int, dim_out: int, noise_dim: int, dropout: float = 0.0,
                 use_affine_level: bool = False, norm_groups: int = 32):
        super().__init__()
        self.noise_func = FeatureWiseAffine(noise_dim, dim_out, use_affine_level)
        self.block1 = NormActConv(dim, dim_out, groups=norm_groups)
        self.block2 = NormActConv(dim_out, dim_out, groups=norm_groups, dropout=dropout)
        self.res_conv = PointwiseConv(dim, dim_out) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, noise_embed: torch.Tensor) -> torch.Tensor:
        h = self.noise_func(self.block1(x), noise_embed)
        return self.block2(h) + self.res_conv(x)


class ResidualAttentionBlock(nn.Module):
    """A ResidualBlock optionally followed by self-attention (reference ``ResnetBlocWithAttn``)."""

    def __init__(self, dim: int, dim_out: int, *, noise_dim: int, norm_groups: int = 32,
                 dropout: float = 0.0, with_attn: bool = False, use_affine_level: bool = False):
        super().__init__()
        self.with_attn = with_attn
        self.res_block = ResidualBlock(dim, dim_out, noise_dim, dropout=dropout,
                                       use_affine_level=use_affine_level, norm_groups=norm_groups)
        if with_attn:
            self.attn = SelfAttention(dim_out, norm_groups=norm_groups)

    def forward(self, x: torch.Tensor, noise_embed: torch.Tensor) -> torch.Tensor:
        x = self.res_block(x, noise_embed)
        return self.attn(x) if self.with_attn else x


class Downsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class UNet(nn.Module):
    """SR3 UNet denoiser. Construct from keywords (reference names) or ``UNet.from_config``."""

    def __init__(self, in_channel: int = 7, out_channel: int = 3, inner_channel: int = 64,
                 norm_groups: int = 32, channel_mults: Sequence[int] = (1, 2, 4, 8, 8),
                 attn_res: Sequence[int] = (16,), res_blocks: int = 2, dropout: float = 0.0,
                 image_size: int = 512, use_affine_level: bool = False,
                 with_noise_level_emb: bool = True):
        super().__init__()
        if not with_noise_level_emb:
            raise ValueError("the DehazeDDPM denoiser always uses the noise-level embedding")
        self.config = UNetConfig(in_channel=in_channel, out_channel=out_channel, inner_channel=inner_channel,
                                 norm_groups=norm_groups, channel_mults=tuple(channel_mults),
                                 attn_res=attn_res, res_blocks=res_blocks, dropout=dropout,
                                 image_size=image_size, use_affine_level=use_affine_level)
        cfg = self.config
        noise_dim = inner_channel
        self.noise_level_mlp = nn.Sequential(
            NoiseLevelEncoding(inner_channel),
            nn.Linear(inner_channel, inner_channel * 4),
            Swish(),
            nn.Linear(inner_channel * 4, inner_channel),
        )
        block = dict(noise_dim=noise_dim, norm_groups=norm_groups, dropout=dropout,
                     use_affine_level=use_affine_level)
        attn_levels = set(cfg.attention_levels())
        n_levels = len(cfg.channel_mults)

        # Encoder; ``skip_channels`` records every output the decoder concatenates back.
        downs: List[nn.Module] = [nn.Conv2d(in_channel, inner_channel, kernel_size=3, padding=1)]
        skip_channels = [inner_channel]
        ch = inner_channel
        for level, mult in enumerate(cfg.channel_mults):
            for _ in range(res_blocks):
                downs.append(ResidualAttentionBlock(ch, inner_channel * mult, with_attn=level in attn_levels, **block))
                ch = inner_channel * mult
                skip_channels.append(ch)
            if level != n_levels - 1:
                downs.append(Downsample(ch))
                skip_channels.append(ch)
        self.downs = nn.ModuleList(downs)

        self.mid = nn.ModuleList([
            ResidualAttentionBlock(ch, ch, with_attn=True, **block),
            ResidualAttentionBlock(ch, ch, with_attn=False, **block),
        ])

        ups: List[nn.Module] = []
        for level in reversed(range(n_levels)):
            out_ch = inner_channel * cfg.channel_mults[level]
            for _ in range(res_blocks + 1):
                ups.append(ResidualAttentionBlock(ch + skip_channels.pop(), out_ch,
                                                  with_attn=level in attn_levels, **block))
                ch = out_ch
            if level != 0:
                ups.append(Upsample(ch))
        self.ups = nn.ModuleList(ups)
        self.final_conv = NormActConv(ch, out_channel, groups=norm_groups)
        # Training only: recompute each block's activations in the backward pass (less memory).
        self.checkpoint_blocks = False

    @classmethod
    def from_config(cls, config: "UNetConfig | Dict[str, Any]", **overrides: Any) -> "UNet":
        cfg = config if isinstance(config, UNetConfig) else UNetConfig.from_dict(config)
        return cls(**{**cfg.to_dict(), **overrides})

    @property
    def condition(self) -> str:
        """``"J+T"`` when the denoiser expects [J, T] (7-channel input), ``"J"`` for 6 channels."""
        return self.config.condition

    @property
    def condition_channels(self) -> int:
        return self.config.in_channel - self.config.out_channel

    def set_attention_impl(self, impl: str) -> "UNet":
        """Switch every attention layer between ``"sdpa"`` (default) and ``"reference"``."""
        if impl not in ATTENTION_IMPLS:
            raise ValueError(f"unknown attention impl {impl!r}; choose from {ATTENTION_IMPLS}")
        for m in self.modules():
            if isinstance(m, SelfAttention):
                m.impl = impl
        return self

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channel, H, W), ``cat([condition, x_t], 1)``; noise_level: (B,) or (B, 1)."""
        if x.shape[1] != self.config.in_channel:
            raise ValueError(f"denoiser expects {self.config.in_channel} input channels "
                             f"({self.condition} condition + x_t), got {x.shape[1]}")
        m = self.config.size_multiple
        if x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f"denoiser input H and W must be multiples of {m}, got {tuple(x.shape[-2:])}; "
                             "pad the image (the pipeline does this for you)")
        noise_level = noise_level.to(device=x.device, dtype=torch.float32).reshape(-1)
        if noise_level.numel() > 1 and noise_level.device.type == "cpu" and bool((noise_level == noise_level[0]).all()):
            # One level for the whole batch (every sampling step): its embedding is computed once
            # and broadcast, so each item of a batch (a tile, a sample) gets bit for bit the numbers
            # it gets alone; a batch-sized matrix product would round differently. On the CPU only,
            # where that equality is promised: on a GPU the test would sync every evaluation.
            noise_level = noise_level[:1]
        emb = self.noise_level_mlp(noise_level)
        block = self._block
        feats = []
        for layer in self.downs:
            x = block(layer, x, emb) if isinstance(layer, ResidualAttentionBlock) else layer(x)
            feats.append(x)
        for layer in self.mid:
            x = block(layer, x, emb)
        for layer in self.ups:
            if isinstance(layer, ResidualAttentionBlock):
                x = block(layer, torch.cat((x, feats.pop()), dim=1), emb)
            else:
                x = layer(x)
        return self.final_conv(x)

    def _block(self, layer: nn.Module, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(layer, x, emb, use_reentrant=False)
        return layer(x, emb)
