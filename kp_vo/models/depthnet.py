"""DepthNet (KP3D / Monodepth-style): ResNet-18 encoder + decoder with sigmoid disparity at 4 scales
(``width`` < 64: the same layout with every layer narrowed by width / 64).

Input  {"image": (B, 3, H, W) float32} RGB in [0, 1] normalised with ImageNet mean/std; H, W multiples of 32.
Output dict:
    "inv_depth"        (B, 1, H, W)  inverse depth (1/m up to the monocular scale) in
                                     [1/max_depth, 1/min_depth] = 1/max + (1/min - 1/max) * sigmoid
    "inv_depth_1..3"   (B, 1, H/2^s, W/2^s)  the coarser scales, only when training
Monocular DepthNet is scale-ambiguous: "depth" = 1 / inv_depth is metric only after a scale is fixed.
"""

from __future__ import annotations

import torch
from torch import nn

from kp_vo.models.layers import ResNet18Encoder, upsample2
from kp_vo.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


class ConvElu(nn.Module):
    """3x3 conv (reflection padded, with bias) + ELU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class DepthNet(nn.Module):
    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0, width: int = 64):
        """min_depth/max_depth: range (m, up to scale) of the inverse-depth output. width: the encoder's
        first channel count, 64 = ResNet-18 (the paper); smaller widths scale encoder and decoder by width / 64."""
        super().__init__()
        if not 0 < min_depth < max_depth:
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if width < 4 or width % 4:
            raise ValueError(f"width must be a positive multiple of 4, got {width}")
        self.min_depth, self.max_depth, self.width = float(min_depth), float(max_depth), int(width)
        self.encoder = ResNet18Encoder(3, self.width)
        enc = self.encoder.channels               # 64, 64, 128, 256, 512 at strides 2..32 (width 64)
        dec = tuple(c * self.width // 64 for c in (16, 32, 64, 128, 256))  # decoder widths at strides 1..16
        self.upconv_a = nn.ModuleList()           # before upsampling
        self.upconv_b = nn.ModuleList()           # after upsampling (+ skip)
        self.disp = nn.ModuleList()               # sigmoid disparity heads at strides 1, 2, 4, 8
        c = enc[4]
        for level in range(4, -1, -1):            # level = output stride log2
            self.upconv_a.append(ConvElu(c, dec[level]))
            skip = enc[level - 1] if level > 0 else 0
            self.upconv_b.append(ConvElu(dec[level] + skip, dec[level]))
            c = dec[level]
        for level in range(4):
            self.disp.append(nn.Conv2d(dec[level], 1, 3, padding=1, padding_mode="reflect"))

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="depthnet", input_channels=3, channel_order="RGB", value_range=(0.0, 1.0),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, size_multiple=32,
            outputs={"inv_depth": "(B,1,H,W) inverse depth in [1/max_depth, 1/min_depth], scale-ambiguous"},
            options={"min_depth": self.min_depth, "max_depth": self.max_depth, "width": self.width})

    def to_inverse_depth(self, disparity: torch.Tensor) -> torch.Tensor:
        lo, hi = 1.0 / self.max_depth, 1.0 / self.min_depth
        return lo + (hi - lo) * disparity

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        f = self.encoder(inputs["image"])
        x = f[4]
        out: dict[str, torch.Tensor] = {}
        for i, level in enumerate(range(4, -1, -1)):
            x = upsample2(self.upconv_a[i](x))
            if level > 0:
                x = torch.cat([x, f[level - 1]], 1)
            x = self.upconv_b[i](x)                     # (B, dec[level], H/2^level, W/2^level)
            if level < 4 and (level == 0 or self.training):
                name = "inv_depth" if level == 0 else f"inv_depth_{level}"
                out[name] = self.to_inverse_depth(torch.sigmoid(self.disp[level](x)))
        return out
