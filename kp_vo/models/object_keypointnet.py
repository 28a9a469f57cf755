"""3D-object KeypointNet (Suwajanakorn et al.): dilated fully-convolutional net, N spatial-softmax
heads with per-pixel depth, expected (u, v, z) per keypoint, plus the orientation-flag network.

Input  {"image": (B, 3, H, W) float32} RGB in [0, 1] normalised with mean 0.5, std 0.5; any H, W
(size multiple 1; the paper uses 128x128). Optional "orientation" (B,) float 0/1 overrides the flag.
Output dict:
    "uvz"          (B, N, 3)     expected pixel (u, v) (pixel centres at integers) and depth z per keypoint
    "prob"         (B, N, H, W)  spatial-softmax probability maps g_i (each sums to 1)
    "orientation"  (B, 1)        binary flag, 1 iff the object's +x end projects right of its -x end
"""

from __future__ import annotations

import torch
from torch import nn

from kp_vo.models.layers import ConvBnAct
from kp_vo.models.spec import ModelSpec

DILATIONS = (1, 1, 2, 4, 8, 16, 1, 2, 4, 8, 16, 1, 1)   # 13 3x3 layers, the last one is the output layer


class DilatedStack(nn.Module):
    """12 dilated conv+BN+LReLU layers of ``width`` channels and a plain 3x3 output layer.
    (B, c_in, H, W) -> (B, c_out, H, W)."""

    def __init__(self, c_in: int, width: int, c_out: int):
        super().__init__()
        layers = []
        for d in DILATIONS[:-1]:
            layers.append(ConvBnAct(c_in, width, dilation=d))
            c_in = width
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(width, c_out, 3, padding=DILATIONS[-1], dilation=DILATIONS[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


def spatial_expectation(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (B, N, H, W) -> (prob (B, N, H, W) softmax over pixels, uv (B, N, 2) expected pixel)."""
    b, n, h, w = logits.shape
    prob = torch.softmax(logits.flatten(2), dim=-1).view_as(logits)
    u = torch.arange(w, dtype=logits.dtype, device=logits.device)
    v = torch.arange(h, dtype=logits.dtype, device=logits.device)
    eu = (prob.sum(dim=2) * u).sum(dim=-1)
    ev = (prob.sum(dim=3) * v).sum(dim=-1)
    return prob, torch.stack([eu, ev], dim=-1)


class ObjectKeypointNet(nn.Module):
    def __init__(self, num_keypoints: int = 10, width: int = 64):
        """num_keypoints: N. width: channels of the keypoint net (the orientation net uses width/2)."""
        super().__init__()
        if num_keypoints < 1:
            raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
        self.num_keypoints, self.width = num_keypoints, width
        # Orientation net: same architecture at half the width, predicts the projections of the
        # object's +x and -x ends as 2 spatial-softmax keypoints.
        self.orientation_net = DilatedStack(3, width // 2, 2)
        # Keypoint net: image + the flag as a constant 4th channel -> N heatmap logits + N depths.
        self.keypoint_net = DilatedStack(4, width, 2 * num_keypoints)

    def spec(self) -> ModelSpec:
        return ModelSpec(
            kind="object_keypointnet", input_channels=3, channel_order="RGB", value_range=(0.0, 1.0),
            mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), size_multiple=1,
            outputs={"uvz": f"(B,{self.num_keypoints},3) expected (u,v) pixels and depth z per keypoint",
                     "prob": f"(B,{self.num_keypoints},H,W) spatial-softmax keypoint probability maps",
                     "orientation": "(B,1) 1 iff the object's +x end projects right of its -x end"},
            options={"num_keypoints": self.num_keypoints, "width": self.width})

    def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = inputs["image"]
        if "orientation" in inputs:
            flag = inputs["orientation"].to(image.dtype).view(-1, 1)
        else:
            _, ends = spatial_expectation(self.orientation_net(image))          # (B, 2, 2)
            flag = (ends[:, 0, 0] > ends[:, 1, 0]).to(image.dtype).view(-1, 1)
        flag_plane = torch.ones_like(image[:, :1]) * flag.view(-1, 1, 1, 1)
        raw = self.keypoint_net(torch.cat([image, flag_plane], 1))
        n = self.num_keypoints
        prob, uv = spatial_expectation(raw[:, :n])
        z = (prob * raw[:, n:]).flatten(2).sum(dim=-1)                           # (B, N)
        return {"uvz": torch.cat([uv, z.unsqueeze(-1)], -1), "prob": prob, "orientation": flag}
