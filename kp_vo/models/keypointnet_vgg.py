"""KeypointNet, KP2D baseline form: a light VGG-style encoder (stride 8) with score / location /
descriptor heads; the descriptor branch is upsampled to stride 4 (pixel shuffle + skip).

Input  {"image": (B, 3, H, W) float32}, RGB in [0, 1] normalised with mean 0.5, std 0.5 (-> [-1, 1]);
H, W multiples of 8. Output dict (Hc = H/8, Wc = W/8):
    "score"       (B, 1, Hc, Wc)  sigmoid score, outer ring of cells 0
    "coord"       (B, 2, Hc, Wc)  keypoint (u, v) in input pixels (cell centre + scaled tanh offset)
    "descriptor"  (B, D, Hc, Wc)  unit-L2 descriptor sampled at "coord" from the stride-4 dense map
    "dense_descriptor" (B, D, H/4, W/4)  only when training
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.models.layers import (
    CELL,
    ConvBnAct,
    offset_to_pixels,
    sample_descriptors,
    zero_border,
)
from kp_vo.models.spec import ModelSpec


class KeypointNetVGG(nn.Module):
    def __init__(self, descriptor_dim: int = 256, cell_range: float = 2.0, mask_border: bool = True):
        """descriptor_dim: 256 (KP2D) or 64. cell_range: tanh offset scale in half-cells (2 = may cross cells)."""
        super().__init__()
        if descriptor_dim not in (64, 256):
            raise ValueError(f"descriptor_dim must be 64 or 256, got {descriptor_dim}")
        self.descriptor_dim, self.cell_range, self.mask_border = descriptor_dim, float(cell_range), mask_border
        widths = (3, 32, 64, 128, 256)
        # Encoder: four stages of two conv+BN+LReLU, max-pooled between stages (stride 8 at the end).
        self.enc = nn.ModuleList()
        for stage in range(4):
            self.enc.append(ConvBnAct(widths[stage], widths[stage + 1]))
            self.enc.append(ConvBnAct(widths[stage + 1], widths[stage + 1]))
        self.score_hidden, self.score_out = ConvBnAct(256, 256), nn.Conv2d(256, 1, 3, padding=1)
        self.loc_hidden, self.loc_out = ConvBnAct(256, 256), nn.Conv2d(256, 2, 3, padding=1)
        self.desc_a, self.desc_b = ConvBnAct(256, 256), nn.Sequential(nn.Conv2d(256, 512, 3, padding=1, bias=False),
                                                                      nn.BatchNorm2d(512))
        self.desc_c, self.desc_out = ConvBnAct(128 + 128, 256), nn.Conv2d(256, descriptor_dim, 3, padding=1)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="keypointnet_vgg", input_channels=3, channel_order="RGB", value_range=(0.0, 1.0),
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size_multiple=8,
            outputs={"score": "(B,1,H/8,W/8) sigmoid keypoint score per 8x8 cell",
                     "coord": "(B,2,H/8,W/8) keypoint (u,v) in input pixels, pixel centres at integers",
                     "descriptor": f"(B,{self.descriptor_dim},H/8,W/8) L2-normalised descriptor at coord"},
            options={"descriptor_dim": self.descriptor_dim, "cell_range": self.cell_range,
                     "mask_border": self.mask_border, "cell": CELL})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = inputs["image"]
        height, width = image.shape[-2], image.shape[-1]
        x, skip = image, image
        for stage in range(4):
            x = self.enc[2 * stage + 1](self.enc[2 * stage](x))
            if stage == 2:
                skip = x                                   # (B, 128, H/4, W/4)
            if stage < 3:
                x = F.max_pool2d(x, 2, 2)                  # final x: (B, 256, H/8, W/8)
        score = torch.sigmoid(self.score_out(self.score_hidden(x)))
        if self.mask_border:
            score = zero_border(score)
        offset = torch.tanh(self.loc_out(self.loc_hidden(x))) * (self.cell_range * (CELL - 1) / 2.0)
        coord = offset_to_pixels(x, offset)
        y = F.pixel_shuffle(self.desc_b(self.desc_a(x)), 2)                  # (B, 128, H/4, W/4)
        dense = self.desc_out(self.desc_c(torch.cat([y, skip], 1)))
        out = {"score": score, "coord": coord, "descriptor": sample_descriptors(dense, coord, height, width)}
        if self.training:
            out["dense_descriptor"] = dense
        return out
