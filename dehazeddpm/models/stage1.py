"""Stage 1: the physics-aware network that predicts J, T and A (reference class ``MPRfusion``, "netH").

It runs two encoder-decoder sub-networks over the hazy image. The first produces a coarse clear
image (``coarse``, the reference's ``stage1_output``) and features that a supervised-attention
module hands to the second; the second predicts the clear image J and the transmission T. A
small separate network estimates the global airlight A. The outputs re-compose the hazy image
through the atmospheric scattering model ``I = T * J + (1 - T) * A``.

Every level uses the channel ladder 16, 20, 28, 44, 76. Encoder and decoder levels are linked by
dense feedback fusion (each level is compared, at every other resolution, with the features seen
so far), residual blocks and, in the first sub-network, a Fourier-domain residual block.

Attribute names follow the released checkpoints (``layer1``, ``fusion_3_``, ``csff_enc0`` ...), so
``NH_net_g_80000.pth`` / ``DENSE_net_g_120000.pth`` load with no key translation. Naming scheme:
``layerK``/``resK``/``fftK``/``fusionK`` are encoder level K, ``layer_K``/``res_K``/``fft_K``/``fusion_K``
decoder level K; a trailing ``_`` marks the second sub-network.
"""
from __future__ import annotations

from typing import List, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..physics import rehaze
from ..utils import pad_to_multiple

LADDER = (16, 20, 28, 44, 76)
SIZE_MULTIPLE = 16  # four stride-2 levels


class Stage1Output(NamedTuple):
    """All tensors in [0, 1]. Unpacks in the reference order (J, coarse, T, A, I)."""

    J: torch.Tensor       # clear image, (B, 3, H, W)
    coarse: torch.Tensor  # first sub-network's clear image, (B, 3, H, W)
    T: torch.Tensor       # transmission, (B, 1, H, W)
    A: torch.Tensor       # airlight, (B, 3, 1, 1)
    I: torch.Tensor       # re-hazed image T * J + (1 - T) * A, (B, 3, H, W)


class StridedConv(nn.Module):
    """Conv -> PReLU (reference ``ConvBlock``); kernel 4, stride 2 halves the resolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=True)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class StridedDeconv(nn.Module):
    """ConvTranspose -> PReLU (reference ``DeconvBlock``); doubles the resolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=True)
        self.act = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.deconv(x))


class DenseFeedbackFusion(nn.Module):
    """Fuse a level's features with those of other levels (reference ``Encoder/Decoder_MDCBlock1``).

    For each earlier feature map f (at another level of the ladder), the current fused features
    are projected to f's level, the difference to f is taken, projected back and added. In the
    encoder the projections go towards shallower levels (``up_convs`` first); in the decoder
    towards deeper levels (``down_convs`` first).
    """

    def __init__(self, level: int, encoder: bool):
        super().__init__()
        self.encoder = encoder
        if encoder:  # level -> level-1 -> ... -> 0
            path = list(range(level, -1, -1))
            self.up_convs = nn.ModuleList(StridedDeconv(LADDER[a], LADDER[b]) for a, b in zip(path, path[1:]))
            self.down_convs = nn.ModuleList(StridedConv(LADDER[b], LADDER[a]) for a, b in zip(path, path[1:]))
        else:  # level -> level+1 -> ... -> 4
            path = list(range(level, len(LADDER)))
            self.down_convs = nn.ModuleList(StridedConv(LADDER[a], LADDER[b]) for a, b in zip(path, path[1:]))
            self.up_convs = nn.ModuleList(StridedDeconv(LADDER[b], LADDER[a]) for a, b in zip(path, path[1:]))

    def forward(self, x: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
        """others: the farthest level first (encoder: level 0, 1, ...; decoder: level 4, 3, ...)."""
        towards, back = (self.up_convs, self.down_convs) if self.encoder else (self.down_convs, self.up_convs)
        fused = x
        for i, other in enumerate(others):
            hops = len(towards) - i
            y = fused
            for j in range(hops):
                y = towards[j](y)
            # Sizes only differ for inputs that are not multiples of 16; bilinear at equal size is exact.
            y = F.interpolate(y, size=other.shape[-2:], mode="bilinear") - other
            for j in reversed(range(hops)):
                y = back[j](y)
            fused = F.interpolate(fused, size=y.shape[-2:], mode="bilinear") + y
        return fused


class DownBlock(nn.Module):
    """4x4 stride-2 conv + ReLU (reference ``UNetConvBlock``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UpBlock(nn.Module):
    """2x2 transposed conv, concatenate the skip, 3x3 conv + ReLU (reference ``UNetUpBlock``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, kernel_size=2, stride=2)
        self.conv_block = nn.Sequential(nn.Conv2d(cout * 2, cout, 3, 1, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), skip], 1))


class ResBlock(nn.Module):
    """Two 3x3 conv + LeakyReLU(0.2) with a 1x1 shortcut."""

    def __init__(self, ch: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_1x1 = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x) + self.conv_1x1(x)


class FourierResBlock(nn.Module):
    """3x3 conv plus a branch that edits amplitude and phase of the real FFT (``ResBlock_fft_bench``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.main = nn.Conv2d(ch, ch, 3, padding=1)
        self.mag = nn.Conv2d(ch, ch, 1)
        self.pha = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spectrum = torch.fft.rfft2(x.float(), norm="backward")
        amplitude, phase = spectrum.abs(), spectrum.angle()
        new_amplitude = self.mag(amplitude)
        # Channel weights from the amplitude change steer how much each phase channel is edited.
        weights = torch.softmax(F.adaptive_avg_pool2d(new_amplitude - amplitude, 1), dim=1)
        new_phase = self.pha(phase * weights) + phase
        spectrum = torch.complex(new_amplitude * torch.cos(new_phase), new_amplitude * torch.sin(new_phase))
        return self.main(x) + torch.fft.irfft2(spectrum, s=(h, w), norm="backward").to(x.dtype)


class SupervisedAttention(nn.Module):
    """Produce the coarse image and gate the features passed on (reference ``SAM``)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 1, bias=False)
        self.conv2 = nn.Conv2d(ch, 3, 1, bias=False)
        self.conv3 = nn.Conv2d(3, ch, 1, bias=False)

    def forward(self, feats: torch.Tensor, hazy: torch.Tensor):
        image = self.conv2(feats) + hazy
        gated = self.conv1(feats) * torch.sigmoid(self.conv3(image)) + feats
        return gated, image


class _PixBlock(nn.Module):
    """Activation then a stride-2 conv or transposed conv, optional instance norm (``BlockUNet1``).

    Both ``conv`` and ``deconv`` exist in every block because the released weights carry both.
    """

    def __init__(self, cin: int, cout: int, upsample: bool = False, relu: bool = False,
                 drop: bool = False, norm: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1, bias=False)
        self.deconv = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False)
        self.dropout = nn.Dropout2d(0.5)
        self.batch = nn.InstanceNorm2d(cout)
        self.upsample, self.relu, self.drop, self.norm = upsample, relu, drop, norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(x) if self.relu else F.leaky_relu(x, 0.2)
        y = self.deconv(y) if self.upsample else self.conv(y)
        # Instance norm over a single row is undefined; the reference skips it there.
        if self.norm and (self.upsample or y.shape[2] != 1):
            y = self.batch(y)
        if self.drop:
            y = self.dropout(y)
        return y


class AirlightNet(nn.Module):
    """Small encoder-decoder averaged to one RGB value per image (reference ``G2``, ``ANet``)."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 8, 4, 2, 1, bias=False)
        self.layer1 = _PixBlock(8, 16)
        self.layer2 = _PixBlock(16, 32)
        self.dlayer2 = _PixBlock(32, 16, upsample=True, relu=True, drop=True, norm=False)
        self.dlayer1 = _PixBlock(32, 8, upsample=True, relu=True)
        self.dconv = nn.ConvTranspose2d(16, out_channels, 4, 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.conv(x)
        y2 = self.layer1(y1)
        y3 = self.layer2(y2)
        d2 = torch.cat([self.dlayer2(y3), y2], 1)
        d1 = torch.cat([self.dlayer1(d2), y1], 1)
        out = F.leaky_relu(self.dconv(F.relu(d1)), 0.2)
        return out.mean(dim=(2, 3), keepdim=True)


class Stage1Net(nn.Module):
    """Physics-aware stage-1 network. Input: hazy image (B, 3, H, W) in [0, 1]; output Stage1Output.

    Any H, W is accepted: inputs that are not multiples of 16 are reflect-padded and the outputs
    cropped back (the reference requires multiples of 16 and fails otherwise).
    """

    def __init__(self, num_in_ch: int = 3, base_channel: int = 16):
        super().__init__()
        if base_channel != LADDER[0]:
            raise ValueError("the released architecture fixes base_channel=16")
        L = LADDER
        for branch in ("", "_"):
            setattr(self, f"layer0{branch}", nn.Conv2d(num_in_ch, L[0], 3, 1, 1))
            for k in range(1, 5):
                setattr(self, f"layer{k}{branch}", DownBlock(L[k - 1], L[k]))
            for k in range(4):
                setattr(self, f"layer_{k}{branch}", UpBlock(L[k + 1], L[k]))
        self.last = nn.Conv2d(L[0], num_in_ch, 1)
        self.conv_T_1 = nn.Conv2d(L[0], L[0], 3, 1, 1, bias=False)
        self.conv_T_2 = nn.Conv2d(L[0], 1, 3, 1, 1, bias=False)
        self.ANet = AirlightNet(3, 3)
        for k in range(5):
            setattr(self, f"fft{k}", FourierResBlock(L[k]))
        for k in range(4):
            setattr(self, f"fft_{k}", FourierResBlock(L[k]))
        for branch in ("", "_"):
            for k in range(5):
                setattr(self, f"res{k}{branch}", ResBlock(L[k]))
            for k in range(4):
                setattr(self, f"res_{k}{branch}", ResBlock(L[k]))
        for k in range(4):
            setattr(self, f"csff_enc{k}", nn.Conv2d(L[k], L[k], 1, bias=False))
        for k in range(4):
            setattr(self, f"csff_dec{k}", nn.Conv2d(L[k], L[k], 1, bias=False))
        for branch in ("", "_"):
            for k in range(1, 5):
                setattr(self, f"fusion{k}{branch}", DenseFeedbackFusion(k, encoder=True))
            for k in (3, 2, 1, 0):
                setattr(self, f"fusion_{k}{branch}", DenseFeedbackFusion(k, encoder=False))
        self.sam = SupervisedAttention(L[0])
        self.concat = nn.Conv2d(L[0] * 2, L[0], 3, padding=1, bias=False)

    def _m(self, name: str) -> nn.Module:
        return getattr(self, name)

    def forward(self, hazy01: torch.Tensor) -> Stage1Output:
        x, (h, w) = pad_to_multiple(hazy01, SIZE_MULTIPLE)
        out = self._forward_padded(x)
        if x.shape[-2:] != hazy01.shape[-2:]:
            out = Stage1Output(*(t if t.shape[-1] == 1 else t[..., :h, :w] for t in out))
        return out

    def _forward_padded(self, hazy: torch.Tensor) -> Stage1Output:
        m = self._m
        # First sub-network: encoder with Fourier blocks, decoder, supervised attention.
        enc: List[torch.Tensor] = [m("fft0")(m("res0")(m("layer0")(hazy)))]
        for k in range(1, 5):
            e = m(f"fusion{k}")(m(f"layer{k}")(enc[-1]), enc)
            enc.append(m(f"fft{k}")(m(f"res{k}")(e)))
        dec: List[torch.Tensor] = [enc[4]]
        for k in (3, 2, 1, 0):
            d = m(f"fft_{k}")(m(f"res_{k}")(m(f"layer_{k}")(dec[-1], enc[k])))
            dec.append(m(f"fusion_{k}")(d, dec))
        dec_at = {k: dec[4 - k] for k in range(4)}  # decoder features by level
        sam_feats, coarse = self.sam(dec_at[0], hazy)

        # Second sub-network, fed by the gated features and cross-stage feature fusion (csff).
        y = self.concat(torch.cat([m("layer0_")(hazy), sam_feats], 1))
        enc2: List[torch.Tensor] = [m("res0_")(y) + m("csff_enc0")(enc[0]) + m("csff_dec0")(dec_at[0])]
        for k in range(1, 5):
            e = m(f"res{k}_")(m(f"fusion{k}_")(m(f"layer{k}_")(enc2[-1]), enc2))
            if k < 4:
                e = e + m(f"csff_enc{k}")(enc[k]) + m(f"csff_dec{k}")(dec_at[k])
            enc2.append(e)
        dec2: List[torch.Tensor] = [enc2[4]]
        for k in (3, 2, 1, 0):
            d = m(f"res_{k}_")(m(f"layer_{k}_")(dec2[-1], enc2[k]))
            dec2.append(m(f"fusion_{k}_")(d, dec2))
        top = dec2[-1]

        J = self.last(top).clamp(0, 1)
        T = self.conv_T_2(self.conv_T_1(top)).clamp(0, 1)
        A = self.ANet(hazy).clamp(0, 1)
        return Stage1Output(J=J, coarse=coarse.clamp(0, 1), T=T, A=A, I=rehaze(J, T, A))
