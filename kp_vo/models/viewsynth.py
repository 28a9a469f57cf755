"""ViewSynth dense feature network for depth images: VGG-16 to conv4_3 on a 1-channel normalised
depth image, D2-Net style detection.

Input  {"image": (B, 1, H, W) float32} depth normalised to [0, 1] (runtime: depth / max valid depth,
invalid = 0); H, W multiples of 8. Output dict (h = H/8, w = W/8, feature cell centre at
pixel (8j + 3.5, 8i + 3.5)):
    "descriptor"    (B, D, h, w)    L2-normalised dense descriptors D = F / |F|, D = 8 * width (512 at the paper's 64)
    "score"         (B, 1, h, w)    D2-Net soft detection score (sums to 1 over each image)
    "keypoint_mask" (B, 1, h, w)    hard test-time detection, 1 where the pixel's strongest channel
                                    is a 3x3 local maximum in that channel, else 0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.models.layers import VGG16Conv4
from kp_vo.models.spec import ModelSpec


def soft_detection(features: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """D2-Net soft score. features: (B, C, h, w) >= 0 -> (B, 1, h, w), each image summing to 1.

    alpha = exp(x) / sum_{3x3} exp(x) (spatial local-max-ness, x scaled by the image max),
    beta = x / max_c x (channel max-ness); score = max_c(alpha * beta), normalised over the image.
    """
    peak = features.flatten(1).amax(dim=1).clamp(min=eps).view(-1, 1, 1, 1)
    x = features / peak
    e = torch.exp(x)
    local_sum = 9.0 * F.avg_pool2d(F.pad(e, (1, 1, 1, 1), value=1.0), 3, stride=1)
    alpha = e / local_sum
    beta = x / x.amax(dim=1, keepdim=True).clamp(min=eps)
    score = (alpha * beta).amax(dim=1, keepdim=True)
    return score / score.flatten(1).sum(dim=1).clamp(min=eps).view(-1, 1, 1, 1)


def hard_detection(features: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, 1, h, w) float 0/1: channel-max and 3x3 spatial local max in that channel,
    excluding all-zero pixels and the outermost ring."""
    channel_max = features.amax(dim=1, keepdim=True)
    is_channel_max = features == channel_max
    is_local_max = features == F.max_pool2d(features, 3, stride=1, padding=1)
    detected = (is_channel_max & is_local_max).to(features.dtype).amax(dim=1, keepdim=True)
    detected = detected * (channel_max > 0).to(features.dtype)
    return F.pad(detected[:, :, 1:-1, 1:-1], (1, 1, 1, 1))


class ViewSynthFeatures(nn.Module):
    """``width``: channels of the first VGG block; 64 (the paper's VGG-16, 512-d descriptors) or less
    for a reduced model (descriptors of 8 * width)."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.width = int(width)
        self.backbone = VGG16Conv4(in_channels=1, width=self.width)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="viewsynth", input_channels=1, channel_order="DEPTH", value_range=(0.0, 1.0),
            mean=(0.0,), std=(1.0,), size_multiple=8,
            outputs={"descriptor": f"(B,{8 * self.width},H/8,W/8) L2-normalised dense descriptors, cell centre 8j+3.5",
                     "score": "(B,1,H/8,W/8) D2-Net soft detection score, sums to 1 per image",
                     "keypoint_mask": "(B,1,H/8,W/8) 1 at hard detections (channel max + 3x3 local max)"},
            options={"depth_normalization": "depth / max valid depth, invalid -> 0", "stride": 8,
                     "width": self.width})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.backbone(inputs["image"])               # (B, 512, H/8, W/8), >= 0
        return {"descriptor": F.normalize(features, p=2.0, dim=1, eps=1e-8),
                "score": soft_detection(features),
                "keypoint_mask": hard_detection(features)}
