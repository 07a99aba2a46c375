"""Tiled evaluation of the denoiser, so large images fit in memory without seams.

:class:`TiledDenoiser` wraps a UNet and has the same call signature,
``(x_in (B, C, H, W), noise_level (B,)) -> eps (B, out_channel, H, W)``. It cuts the input into
overlapping tiles, runs them in batches and blends the noise predictions with a smooth weight
window normalised by the summed weights. Because the blend happens on eps at *every* sampling
step, neighbouring tiles are pulled towards one consistent image and no seam builds up (blending
only the final images would leave each tile's independent sample visible).
"""
from __future__ import annotations

import math
from typing import Any, Callable, List, Optional, Tuple

import torch
from torch import nn

from ..utils import ramp_window, tile_starts


class TiledDenoiser(nn.Module):
    """Evaluate ``unet`` tile by tile and blend the predictions (see module docstring).

    Args:
        unet: the denoiser, called as ``unet(x_in, noise_level)``.
        tile_size: tile side in pixels; rounded up to a multiple of ``unet.config.size_multiple``.
        overlap: pixels shared by neighbouring tiles (default ``tile_size // 4``); larger overlaps
            blend more smoothly and cost more tiles.
        tile_batch: tiles evaluated per UNet call (default 1, the least memory; memory grows
            linearly with it; fewer, larger calls run faster on CPUs and GPUs alike). In fp32 on
            a CPU the result does not depend on it (:class:`~dehazeddpm.models.encodings.PointwiseConv`)
            for tiles whose deepest feature map is at least 32 px (the demo's 136 px tiles); oneDNN's
            3x3 kernel choice can move the last bit of smaller ones.
        on_tiles: called with the number of tiles after each UNet call (a progress bar's update).
        condition: (B or 1, C, H, W), bound here: the tiler is then called with x_t alone and
            puts each tile's crop of the condition before it, so no full-size ``cat([condition,
            x_t])`` is made at each step (None: the caller passes that cat).
    Inputs whose sides both fit one tile go straight to ``unet``.
    """

    def __init__(self, unet: nn.Module, tile_size: int, overlap: Optional[int] = None, tile_batch: int = 1,
                 on_tiles: Optional[Callable[[int], Any]] = None, condition: Optional[torch.Tensor] = None):
        super().__init__()
        self.unet = unet
        mult = int(getattr(getattr(unet, "config", None), "size_multiple", 1))
        self.tile_size = int(math.ceil(int(tile_size) / mult) * mult)
        self.overlap = self.tile_size // 4 if overlap is None else int(overlap)
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"overlap must be in [0, {self.tile_size}), got {self.overlap}")
        if tile_batch < 1:
            raise ValueError("tile_batch must be >= 1")
        self.tile_batch = int(tile_batch)
        self.on_tiles = on_tiles
        self.condition = condition
        self._weights: Optional[Tuple[Tuple[int, int, torch.device], List[torch.Tensor], torch.Tensor]] = None

    @property
    def config(self):
        """The wrapped UNet's config (so callers can treat this like the UNet)."""
        return self.unet.config

    def tiles(self, h: int, w: int) -> List[tuple]:
        """(top, left, tile_h, tile_w) of every tile for an H x W input."""
        th, tw = min(self.tile_size, h), min(self.tile_size, w)
        return [(y, x, th, tw) for y in tile_starts(h, th, min(self.overlap, th - 1))
                for x in tile_starts(w, tw, min(self.overlap, tw - 1))]

    def _blend_weights(self, h: int, w: int, device: torch.device) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Each tile's (1, 1, th, tw) blend weight and their sum over the image, (1, 1, H, W), for
        an H x W input on ``device``, computed once per size and device (every step reuses them)."""
        if self._weights is None or self._weights[0] != (h, w, device):
            boxes = self.tiles(h, w)
            ys = sorted({y for y, _, _, _ in boxes})
            xs = sorted({x for _, x, _, _ in boxes})
            weights, wsum = [], torch.zeros(1, 1, h, w)
            for y, x, th, tw in boxes:
                wy = ramp_window(th, self.overlap, at_start=y == ys[0], at_end=y == ys[-1])
                wx = ramp_window(tw, self.overlap, at_start=x == xs[0], at_end=x == xs[-1])
                weights.append((wy[:, None] * wx[None, :])[None, None])
                wsum[:, :, y:y + th, x:x + tw] += weights[-1]
            self._weights = ((h, w, device), [t.to(device) for t in weights], wsum.to(device))
        return self._weights[1], self._weights[2]

    def _crop(self, x_in: torch.Tensor, y: int, x: int, th: int, tw: int) -> torch.Tensor:
        """The UNet's input over one box: the crop of ``x_in``, after the bound condition's if any."""
        crop = x_in[:, :, y:y + th, x:x + tw]
        if self.condition is None:
            return crop
        cond = self.condition[:, :, y:y + th, x:x + tw].to(crop.dtype)
        return torch.cat([cond.expand(crop.shape[0], -1, -1, -1), crop], 1)

    def forward(self, x_in: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """x_in: (B, C, H, W) ``cat([condition, x_t])``, or x_t when the condition is bound;
        noise_level: (B,). Returns eps, float32. The tiles go to the UNet ``tile_batch`` at a
        time (each with its B items)."""
        b, _, h, w = x_in.shape
        if h <= self.tile_size and w <= self.tile_size:
            out = self.unet(self._crop(x_in, 0, 0, h, w), noise_level)
            if self.on_tiles is not None:
                self.on_tiles(1)
            return out
        noise_level = noise_level.reshape(-1).to(x_in.device)
        if noise_level.numel() == 1:
            noise_level = noise_level.expand(b)
        boxes = self.tiles(h, w)
        weights, wsum = self._blend_weights(h, w, x_in.device)
        out: Optional[torch.Tensor] = None
        for start in range(0, len(boxes), self.tile_batch):
            chunk = boxes[start:start + self.tile_batch]
            crops = torch.cat([self._crop(x_in, *box) for box in chunk], 0)
            eps = self.unet(crops, noise_level.repeat(len(chunk))).float()
            if self.on_tiles is not None:
                self.on_tiles(len(chunk))
            if out is None:
                out = torch.zeros(b, eps.shape[1], h, w, device=x_in.device, dtype=torch.float32)
            for k, (y, x, th, tw) in enumerate(chunk):
                out[:, :, y:y + th, x:x + tw] += eps[k * b:(k + 1) * b] * weights[start + k]
        assert out is not None
        return out / wsum
