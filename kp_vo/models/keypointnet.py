"""KeypointNet, KP3D form: ResNet-18 encoder + U-Net decoder + score / location / descriptor heads.

Input  {"image": (B, 3, H, W) float32}, RGB normalised as ``spec().mean/std`` from values in [0, 1];
H, W multiples of 32. Output dict (cells of stride 8, Hc = H/8, Wc = W/8):
    "score"       (B, 1, Hc, Wc)  sigmoid detection score in [0, 1]; the outer ring of cells is 0
    "coord"       (B, 2, Hc, Wc)  keypoint (u, v) in input pixels = cell centre + tanh offset
                                  * cell_range * (cell - 1) / 2, clamped to the image
    "descriptor"  (B, D, Hc, Wc)  descriptor sampled bilinearly at "coord" from the dense map, unit L2
    "dense_descriptor" (B, D, H/s, W/s)  the dense map (s = descriptor_stride), only when training
"""

from __future__ import annotations

import torch
from torch import nn

from kp_vo.models.layers import (
    CELL,
    ConvBnAct,
    ResNet18Encoder,
    offset_to_pixels,
    sample_descriptors,
    upsample2,
    zero_border,
)
from kp_vo.models.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


class Head(nn.Module):
    """conv+BN+LReLU then a plain 3x3 conv (reflection padded): (B, C, h, w) -> (B, c_out, h, w)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.hidden = ConvBnAct(c_in, c_in)
        self.out = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


class KeypointNet(nn.Module):
    def __init__(self, descriptor_dim: int = 64, descriptor_stride: int = 2, cell_range: float = 2.0,
                 mask_border: bool = True):
        """descriptor_dim: 64 (authors' KP3D checkpoints) or 256.
        descriptor_stride: 2 (paper, Table 6) or 4 (cheaper) - resolution of the dense descriptor map.
        cell_range: tanh offset scale in half-cells; 2.0 lets a keypoint move into the neighbouring cell.
        mask_border: zero the scores of the outermost cells (their receptive field is mostly padding).
        """
        super().__init__()
        if descriptor_dim not in (64, 256):
            raise ValueError(f"descriptor_dim must be 64 or 256, got {descriptor_dim}")
        if descriptor_stride not in (2, 4):
            raise ValueError(f"descriptor_stride must be 2 or 4, got {descriptor_stride}")
        self.descriptor_dim, self.descriptor_stride = descriptor_dim, descriptor_stride
        self.cell_range, self.mask_border = float(cell_range), mask_border
        self.encoder = ResNet18Encoder(3)
        enc = self.encoder.channels             # 64, 64, 128, 256, 512
        self.up4a, self.up4b = ConvBnAct(enc[4], 256), ConvBnAct(256 + enc[3], 256)   # -> H/16
        self.up3a, self.up3b = ConvBnAct(256, 128), ConvBnAct(128 + enc[2], 128)      # -> H/8
        self.up2a, self.up2b = ConvBnAct(128, 128), ConvBnAct(128 + enc[1], 128)      # -> H/4
        if descriptor_stride == 2:
            self.up1a, self.up1b = ConvBnAct(128, 64), ConvBnAct(64 + enc[0], 64)     # -> H/2
        self.score_head = Head(128, 1)
        self.location_head = Head(128, 2)
        self.descriptor_head = Head(64 if descriptor_stride == 2 else 128, descriptor_dim)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="keypointnet", input_channels=3, channel_order="RGB", value_range=(0.0, 1.0),
            mean=IMAGENET_MEAN, std=IMAGENET_STD, size_multiple=32,
            outputs={"score": "(B,1,H/8,W/8) sigmoid keypoint score per 8x8 cell",
                     "coord": "(B,2,H/8,W/8) keypoint (u,v) in input pixels, pixel centres at integers",
                     "descriptor": f"(B,{self.descriptor_dim},H/8,W/8) L2-normalised descriptor at coord"},
            options={"descriptor_dim": self.descriptor_dim, "descriptor_stride": self.descriptor_stride,
                     "cell_range": self.cell_range, "mask_border": self.mask_border, "cell": CELL})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = inputs["image"]
        height, width = image.shape[-2], image.shape[-1]
        f = self.encoder(image)
        x = self.up4b(torch.cat([upsample2(self.up4a(f[4])), f[3]], 1))
        x = self.up3b(torch.cat([upsample2(self.up3a(x)), f[2]], 1))          # (B, 128, H/8, W/8)
        score = torch.sigmoid(self.score_head(x))
        if self.mask_border:
            score = zero_border(score)
        offset = torch.tanh(self.location_head(x)) * (self.cell_range * (CELL - 1) / 2.0)
        coord = offset_to_pixels(x, offset)
        y = self.up2b(torch.cat([upsample2(self.up2a(x)), f[1]], 1))          # (B, 128, H/4, W/4)
        if self.descriptor_stride == 2:
            y = self.up1b(torch.cat([upsample2(self.up1a(y)), f[0]], 1))      # (B, 64, H/2, W/2)
        dense = self.descriptor_head(y)
        out = {"score": score, "coord": coord, "descriptor": sample_descriptors(dense, coord, height, width)}
        if self.training:
            out["dense_descriptor"] = dense
        return out
