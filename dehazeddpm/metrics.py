"""Image quality metrics on image-space data (``[0, 1]``): full-reference PSNR, SSIM and
CIEDE2000, the colour cast, and a no-reference haze measure for photos without ground truth.

Inputs may be torch tensors ``NxCxHxW`` / ``CxHxW`` or numpy arrays ``HxWxC`` (also ``CxHxW``
tensors given as numpy and ``HxWxC`` tensors, recognised by which axis has 1 or 3 entries) or
``HxW``. Both arguments must have the same shape. Integer data is refused: pass floats, scaled to
``data_range`` (1.0 for image space), so an unscaled uint8 image cannot silently give a wrong
number. Everything is computed in float64.

SSIM follows Wang et al. 2004 as implemented by ``skimage.metrics.structural_similarity`` with
``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``: an 11x11 Gaussian window
(sigma 1.5, truncated at 3.5 sigma), K1 = 0.01, K2 = 0.03, averaged over the valid (uncropped)
window positions of each channel, then over channels (and images of a batch).
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["ciede2000", "haze_density", "mean_ab", "psnr", "rgb_to_lab", "ssim"]

ArrayLike = Union[torch.Tensor, np.ndarray]

_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5  # skimage/scipy default: radius = int(3.5 * 1.5 + 0.5) = 5 -> 11 taps
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03


def _as_nchw(x: ArrayLike, name: str) -> torch.Tensor:
    """Array/tensor in one of the accepted layouts -> float64 NxCxHxW tensor (no copy of meaning)."""
    if isinstance(x, np.ndarray):
        numpy_input = True
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        numpy_input = False
        t = x.detach()
    else:
        raise TypeError(f"{name}: expected a torch.Tensor or numpy array, got {type(x).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name}: expected floats scaled to data_range, got dtype {t.dtype}")
    t = t.to(torch.float64)
    if t.ndim == 2:
        return t[None, None]
    if t.ndim == 3:
        first, last = t.shape[0] in (1, 3), t.shape[-1] in (1, 3)
        # numpy images are conventionally HxWxC and tensors CxHxW: prefer that reading
        if last and (numpy_input or not first):
            t = t.permute(2, 0, 1)
        elif not first:
            raise ValueError(f"{name}: cannot tell the channel axis of shape {tuple(t.shape)}")
        return t[None]
    if t.ndim == 4:
        return t
    raise ValueError(f"{name}: expected 2, 3 or 4 dimensions, got shape {tuple(t.shape)}")


def _pair(a: ArrayLike, b: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_nchw(a, "a"), _as_nchw(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"shape mismatch: {tuple(x.shape)} vs {tuple(y.shape)} (after layout normalisation)")
    return x, y.to(x.device)


def psnr(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range^2 / MSE)``, MSE over all pixels
    and channels (and the whole batch). Identical inputs give ``inf``.
    """
    x, y = _pair(a, b)
    mse = float(torch.mean((x - y) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_taps(sigma: float = _SSIM_SIGMA, truncate: float = _SSIM_TRUNCATE) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    xs = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (xs / sigma) ** 2)
    return g / g.sum()


def ssim(a: ArrayLike, b: ArrayLike, data_range: float = 1.0) -> float:
    """Mean structural similarity (Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03).

    Computed per channel and averaged, over valid window positions only (no padding), which is
    exactly what skimage's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, channel_axis=-1)`` reports. Images must be at least 11x11.
    """
    x, y = _pair(a, b)
    n, c, h, w = x.shape
    g = _gaussian_taps().to(x.device)
    k = g.numel()
    if h < k or w < k:
        raise ValueError(f"ssim needs images of at least {k}x{k}, got {h}x{w}")
    x = x.reshape(n * c, 1, h, w)
    y = y.reshape(n * c, 1, h, w)
    # one separable 'valid' Gaussian pass over the five moment maps at once
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).reshape(n * c * 5, 1, h, w)
    stack = F.conv2d(stack, g.view(1, 1, k, 1))
    stack = F.conv2d(stack, g.view(1, 1, 1, k))
    mu_x, mu_y, e_xx, e_yy, e_xy = stack.reshape(n * c, 5, h - k + 1, w - k + 1).unbind(1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return float(s.mean())


# sRGB (D65) -> CIE XYZ, and the D65 white point: the colour-cast measure below
_SRGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                             [0.212671, 0.715160, 0.072169],
                             [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_D65 = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)


def rgb_to_lab(x: ArrayLike) -> torch.Tensor:
    """CIE L*a*b* (D65) of an sRGB image in [0, 1]: ``(N, 3, H, W)`` float64, L in [0, 100]."""
    rgb = _as_nchw(x, "image").clamp(0, 1)
    if rgb.shape[1] != 3:
        raise ValueError(f"rgb_to_lab needs 3 channels, got {rgb.shape[1]}")
    lin = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = torch.einsum("ij,njhw->nihw", _SRGB_TO_XYZ, lin) / _D65.view(1, 3, 1, 1)
    eps = (6 / 29) ** 3
    f = torch.where(xyz > eps, xyz.clamp_min(eps) ** (1 / 3), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def mean_ab(x: ArrayLike) -> tuple[float, float]:
    """Mean CIE a* and b* of an sRGB image in [0, 1] (a colour cast shows as an offset from the
    ground truth's: blue casts lower b*, green casts lower a*)."""
    lab = rgb_to_lab(x)
    return float(lab[:, 1].mean()), float(lab[:, 2].mean())


def ciede2000(a: ArrayLike, b: ArrayLike) -> float:
    """Mean CIEDE2000 colour difference (Sharma, Wu and Dalal 2005; kL = kC = kH = 1) between two
    sRGB images in [0, 1], over all pixels: 0 for identical colours, about 2.3 a just noticeable
    difference. The number dehazing papers report as CIEDE2000 (lower is better); per pixel it
    equals ``skimage.color.deltaE_ciede2000(rgb2lab(a), rgb2lab(b))``."""
    x, y = _pair(a, b)
    (L1, a1, b1), (L2, a2, b2) = rgb_to_lab(x).unbind(1), rgb_to_lab(y).unbind(1)
    c_bar = (torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2
    g = 0.5 * (1 - torch.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1, a2 = a1 * (1 + g), a2 * (1 + g)
    c1, c2 = torch.hypot(a1, b1), torch.hypot(a2, b2)
    h1, h2 = (torch.rad2deg(torch.atan2(bb, aa)) % 360 for aa, bb in ((a1, b1), (a2, b2)))
    chroma = c1 * c2
    dh = h2 - h1
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(chroma == 0, torch.zeros_like(dh), dh)
    d_hue = 2 * torch.sqrt(chroma) * torch.sin(torch.deg2rad(dh) / 2)
    # the mean hue goes the short way round the circle; without chroma it is the plain sum
    h_sum = h1 + h2
    h_bar = torch.where((h1 - h2).abs() <= 180, h_sum / 2,
                        torch.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_bar = torch.where(chroma == 0, h_sum, h_bar)
    rad = torch.deg2rad
    t = (1 - 0.17 * torch.cos(rad(h_bar - 30)) + 0.24 * torch.cos(rad(2 * h_bar))
         + 0.32 * torch.cos(rad(3 * h_bar + 6)) - 0.20 * torch.cos(rad(4 * h_bar - 63)))
    l_bar, c_mean = (L1 + L2) / 2 - 50, (c1 + c2) / 2
    s_l = 1 + 0.015 * l_bar**2 / torch.sqrt(20 + l_bar**2)
    s_c = 1 + 0.045 * c_mean
    s_h = 1 + 0.015 * c_mean * t
    r_t = (-2 * torch.sqrt(c_mean**7 / (c_mean**7 + 25.0**7))
           * torch.sin(rad(60 * torch.exp(-(((h_bar - 275) / 25) ** 2)))))
    dl, dc, dhh = (L2 - L1) / s_l, (c2 - c1) / s_c, d_hue / s_h
    return float(torch.sqrt(dl**2 + dc**2 + dhh**2 + r_t * dc * dhh).mean())


HAZE_PATCH = 15  # the dark channel's window, as in He et al.


def haze_density(x: ArrayLike, patch: int = HAZE_PATCH) -> float:
    """A no-reference haze measure in [0, 1]: the mean dark channel (He, Sun and Tang 2009, the
    minimum over the colour channels and a ``patch`` x ``patch`` window) of an sRGB image in
    [0, 1]. Haze-free outdoor photos have a dark channel near 0 away from the sky; haze lifts it
    towards the airlight, so the measure rises with haze density (higher: hazier). It needs no
    ground truth and no download; it is not comparable across scenes with large sky or white
    surfaces, which raise it too. The window is clipped to images smaller than it."""
    img = _as_nchw(x, "image")
    if img.shape[1] != 3:
        raise ValueError(f"haze_density needs 3 channels, got {img.shape[1]}")
    k = max(1, min(int(patch), *img.shape[-2:]))
    if k % 2 == 0:
        k -= 1 if k > 1 else 0
    dark = img.clamp(0, 1).amin(dim=1, keepdim=True)
    dark = -F.max_pool2d(-dark, k, stride=1, padding=k // 2)
    return float(dark.mean())
