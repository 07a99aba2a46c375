"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), AlexNet variant v0.1: the perceptual distance diffusion methods are judged on.

Layer: foundation (torch only). The ``lpips`` package itself imports torchvision, which a CPU
torch wheel may not sit beside, so the network is built here and only its two weight files are
borrowed: the linear heads ``alex.pth`` that the ``lpips`` package ships (``pip install --no-deps
lpips``: without ``--no-deps`` pip also pulls torchvision and may replace torch) and torchvision's AlexNet weights
``alexnet-owt-7be5be79.pth`` in torch hub's checkpoint folder (what
``torchvision.models.alexnet(weights="DEFAULT")`` downloads). Both load with
``weights_only=True`` and strict key and shape checks. Without them :func:`load_lpips` raises
:class:`LpipsUnavailable`, whose one line says how to get them; evaluation then skips LPIPS.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
from torch import nn

__all__ = ["ALEXNET_FILE", "LPIPS", "LpipsUnavailable", "default_lpips_files", "load_lpips"]

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_CHANNELS = (64, 192, 384, 256, 256)
# (out, kernel, stride, padding, max-pool before) of AlexNet's five convolutions, as torchvision builds them
_CONVS = ((64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True), (256, 3, 1, 1, False),
          (256, 3, 1, 1, False))
_TORCHVISION_INDEX = (0, 3, 6, 8, 10)  # their indices in torchvision's ``features``
# LPIPS's input normalisation, applied to [-1, 1] images
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LpipsUnavailable(RuntimeError):
    """LPIPS's weight files are not on this machine; the message says how to get them."""


class LPIPS(nn.Module):
    """LPIPS distance between images in [0, 1]: (N, 3, H, W) x2 -> (N,), 0 for identical images.

    AlexNet's five ReLU outputs, each unit-normalised over channels, squared differences weighted
    per channel by the linear heads and averaged over the positions, summed over the layers.
    """

    def __init__(self) -> None:
        super().__init__()
        convs, c_in = [], 3
        for c_out, k, s, p, _ in _CONVS:
            convs.append(nn.Conv2d(c_in, c_out, k, s, p))
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x01: torch.Tensor) -> List[torch.Tensor]:
        x = ((x01 * 2 - 1) - self.shift) / self.scale
        out = []
        for conv, (_, _, _, _, pool) in zip(self.convs, _CONVS):
            if pool:
                x = nn.functional.max_pool2d(x, 3, 2)
            x = torch.relu(conv(x))
            out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-10))
        return out

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(a), self.features(b)
        return sum(head((x - y) ** 2).mean(dim=(1, 2, 3)) for head, x, y in zip(self.heads, fa, fb))


def default_lpips_files() -> Tuple[Optional[Path], Path]:
    """(the ``lpips`` package's ``weights/v0.1/alex.pth`` or None when it is not installed,
    torch hub's ``checkpoints/alexnet-owt-7be5be79.pth``). The package is found, not imported."""
    spec = importlib.util.find_spec("lpips")
    linear = None
    if spec is not None and spec.submodule_search_locations:
        linear = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "alex.pth"
    return linear, Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE


def _load(path: Path, what: str) -> Dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one line
        raise LpipsUnavailable(f"cannot read {what} {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"{what} {path} is not a state dict")
    return state


def _take(state: Dict[str, torch.Tensor], key: str, like: torch.Tensor, path: Path) -> torch.Tensor:
    t = state.get(key)
    if not isinstance(t, torch.Tensor) or t.shape != like.shape:
        got = "missing" if t is None else f"shape {tuple(getattr(t, 'shape', ()))}"
        raise LpipsUnavailable(f"{path} is not the file LPIPS needs: {key} {got}, expected {tuple(like.shape)}")
    return t.float()


def load_lpips(linear: Union[str, os.PathLike, None] = None, backbone: Union[str, os.PathLike, None] = None,
               device: Union[str, torch.device] = "cpu") -> LPIPS:
    """The LPIPS (alex, v0.1) network in eval mode from its two files (defaults:
    :func:`default_lpips_files`). Raises :class:`LpipsUnavailable` with the way to get a missing
    file, or naming a file whose keys or shapes are not LPIPS's."""
    found_linear, found_backbone = default_lpips_files()
    linear_path = Path(linear) if linear is not None else found_linear
    backbone_path = Path(backbone) if backbone is not None else found_backbone
    if linear_path is None or not linear_path.is_file():
        raise LpipsUnavailable("LPIPS skipped: its linear weights (alex.pth) are missing; "
                               "`pip install --no-deps lpips` ships them" + (f" (looked at {linear_path})" if linear_path else ""))
    if not backbone_path.is_file():
        raise LpipsUnavailable(f"LPIPS skipped: AlexNet's weights are missing at {backbone_path}; download "
                               f"https://download.pytorch.org/models/{ALEXNET_FILE} there")
    net = LPIPS()
    trunk, heads = _load(backbone_path, "AlexNet weights"), _load(linear_path, "LPIPS linear weights")
    with torch.no_grad():
        for conv, idx in zip(net.convs, _TORCHVISION_INDEX):
            conv.weight.copy_(_take(trunk, f"features.{idx}.weight", conv.weight, backbone_path))
            conv.bias.copy_(_take(trunk, f"features.{idx}.bias", conv.bias, backbone_path))
        for k, head in enumerate(net.heads):
            head.weight.copy_(_take(heads, f"lin{k}.model.1.weight", head.weight, linear_path))
    return net.to(device).eval().requires_grad_(False)
