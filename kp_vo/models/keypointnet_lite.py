"""KeypointNet-Lite: a narrow, grey-input KeypointNet for CPU real time, trained by distillation from
the shipped VGG KeypointNet (``kp_vo.training.recipes.keypointnet_distill``).

The output contract of ``keypointnet_vgg`` (per 8x8 cell: score, sub-pixel keypoint, unit descriptor)
from a network about 1/30 of its multiply-adds:
- input: one grey channel (KITTI is grey; the runtime converts colour images), rearranged losslessly
  to 4 channels at half resolution (pixel unshuffle), so no convolution runs at full resolution;
- encoder: three stages of two 3x3 conv+BN+LReLU at strides 2, 4, 8 (max-pooled between stages);
- score and location: one shared 3x3 hidden layer on the stride-8 features, then a 3x3 conv each;
- descriptor: predicted per cell at stride 8 (no dense map, no bilinear sampling): a 3x3 hidden layer
  on the stride-8 features concatenated with the stride-4 features rearranged to stride 8, then a 1x1
  conv and L2 normalisation. A cell has one keypoint, so its descriptor is that keypoint's; the
  distillation trains it to equal the teacher's descriptor sampled at the teacher's keypoint.

Input  {"image": (B, 1, H, W) float32}, grey in [0, 1] normalised with mean 0.5, std 0.5;
H, W multiples of 8. Output dict (Hc = H/8, Wc = W/8):
    "score"       (B, 1, Hc, Wc)  sigmoid score, outer ring of cells 0
    "coord"       (B, 2, Hc, Wc)  keypoint (u, v) in input pixels (cell centre + scaled tanh offset)
    "descriptor"  (B, D, Hc, Wc)  unit-L2 descriptor of the cell's keypoint
    "score_logit" (B, 1, Hc, Wc)  only when training (before the sigmoid and the border mask)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.models.layers import CELL, ConvBnAct, offset_to_pixels, zero_border
from kp_vo.models.spec import ModelSpec


class KeypointNetLite(nn.Module):
    def __init__(self, widths: tuple[int, int, int] = (16, 32, 64), head_width: int = 64,
                 descriptor_dim: int = 64, cell_range: float = 2.0, mask_border: bool = True):
        """widths: channels of the three encoder stages (strides 2, 4, 8). head_width: channels of the
        hidden layers of the heads. descriptor_dim: 64 (the shipped teacher's) or 256. cell_range: tanh
        offset scale in half-cells (2 = a keypoint may move into a neighbouring cell, as the teacher's)."""
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if len(widths) != 3 or min(widths) < 1 or head_width < 1:
            raise ValueError(f"widths must be 3 positive channel counts and head_width >= 1, got {widths}, "
                             f"{head_width}")
        if descriptor_dim not in (64, 256):
            raise ValueError(f"descriptor_dim must be 64 or 256, got {descriptor_dim}")
        self.widths, self.head_width, self.descriptor_dim = widths, int(head_width), descriptor_dim
        self.cell_range, self.mask_border = float(cell_range), mask_border
        chans = (4,) + widths
        self.enc = nn.ModuleList()
        for stage in range(3):
            self.enc.append(ConvBnAct(chans[stage], chans[stage + 1]))
            self.enc.append(ConvBnAct(chans[stage + 1], chans[stage + 1]))
        self.head_hidden = ConvBnAct(widths[2], self.head_width)
        self.score_out = nn.Conv2d(self.head_width, 1, 3, padding=1)
        self.loc_out = nn.Conv2d(self.head_width, 2, 3, padding=1)
        self.desc_hidden = ConvBnAct(widths[2] + 4 * widths[1], self.head_width)
        self.desc_out = nn.Conv2d(self.head_width, descriptor_dim, 1)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="keypointnet_lite", input_channels=1, channel_order="GRAY", value_range=(0.0, 1.0),
            mean=(0.5,), std=(0.5,), size_multiple=8,
            outputs={"score": "(B,1,H/8,W/8) sigmoid keypoint score per 8x8 cell",
                     "coord": "(B,2,H/8,W/8) keypoint (u,v) in input pixels, pixel centres at integers",
                     "descriptor": f"(B,{self.descriptor_dim},H/8,W/8) L2-normalised descriptor of the cell's keypoint"},
            options={"widths": list(self.widths), "head_width": self.head_width,
                     "descriptor_dim": self.descriptor_dim, "cell_range": self.cell_range,
                     "mask_border": self.mask_border, "cell": CELL})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = F.pixel_unshuffle(inputs["image"], 2)               # (B, 4, H/2, W/2), lossless
        skip = x
        for stage in range(3):
            x = self.enc[2 * stage + 1](self.enc[2 * stage](x))
            if stage == 1:
                skip = x                                         # (B, w1, H/4, W/4)
            if stage < 2:
                x = F.max_pool2d(x, 2, 2)                        # final x: (B, w2, H/8, W/8)
        hidden = self.head_hidden(x)
        logit = self.score_out(hidden)
        score = torch.sigmoid(logit)
        if self.mask_border:
            score = zero_border(score)
        offset = torch.tanh(self.loc_out(hidden)) * (self.cell_range * (CELL - 1) / 2.0)
        coord = offset_to_pixels(x, offset)
        desc = self.desc_out(self.desc_hidden(torch.cat([x, F.pixel_unshuffle(skip, 2)], 1)))
        out = {"score": score, "coord": coord, "descriptor": F.normalize(desc, p=2.0, dim=1, eps=1e-8)}
        if self.training:
            out["score_logit"] = logit
        return out
