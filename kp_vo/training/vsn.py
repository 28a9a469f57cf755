"""View Synthesis Network (ViewSynth §3.3), training only: warps view-1 features into view 2 with the
ground-truth mapping, encodes the per-position transformation parameters (GTN) and synthesises view 2's
normalised depth at 1/8 resolution (DSN).

Inputs of ``ViewSynthesisNetwork.forward``:
    features1 (B, F, h, w) dense view-1 features (unnormalised VGG conv4_3, stride 8)
    depth1, depth2 (B, 1, H, W) metres (0 = invalid), H = 8 h, W = 8 w; depth2 is used ONLY to compute
        the mapping M^{1->2} (where each view-2 cell comes from in view 1), never as an input feature
    K1, K2 (B, 3, 3); T_1_2 (B, 4, 4) maps view-2 camera coordinates into view 1
Output dict: "depth" (B, 1, h, w) synthesised normalised view-2 depth in [0, 1];
    "frustum" (B, 1, h, w) float, 1 where the view-2 cell's 3D point lies inside view 1's frustum
    (the pixel set P^{1->2} of the loss; visible in view 1 or not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kp_vo.training.losses_viewsynth import (
    STRIDE,
    cell_centres,
    map_points,
    sample_cells,
    sample_nearest,
)

GTN_INPUTS = 25   # uv2 (2) + M(uv2) (2) + unnormalised depth-1 at M (1) + K1, K2 (4 + 4) + R_1_2 (9) + t_1_2 (3)


class FcResidual(nn.Module):
    """Fully connected residual block shared over positions (1x1 convs): x + fc(relu(fc(x)))."""

    def __init__(self, width: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(width, width, 1), nn.Conv2d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.fc2(F.relu(self.fc1(x))))


class GridTransformationEncoder(nn.Module):
    """GTN: (B, 25, h, w) physical parameters -> (B, f_t, h, w) with two FC residual blocks."""

    def __init__(self, f_t: int = 96):
        super().__init__()
        self.inp = nn.Conv2d(GTN_INPUTS, f_t, 1)
        self.blocks = nn.Sequential(FcResidual(f_t), FcResidual(f_t))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.blocks(F.relu(self.inp(g)))


class ConvResidual(nn.Module):
    """3x3 conv-BN-ReLU-3x3 conv-BN with a (1x1 projected when the width changes) skip, then ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                                  nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c_out))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.skip(x))


class DepthmapSynthesisNetwork(nn.Module):
    """DSN: [F^{1->2}, GAP(F^{1->2})] -> 1x1 conv -> concat T^{1->2} -> 3 residual blocks -> sigmoid depth."""

    def __init__(self, feature_dim: int = 512, f_t: int = 96, global_dim: int = 256, width: int = 128):
        super().__init__()
        self.fuse = nn.Conv2d(2 * feature_dim, global_dim, 1)
        self.blocks = nn.Sequential(ConvResidual(global_dim + f_t, width), ConvResidual(width, width),
                                    ConvResidual(width, width))
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, warped: torch.Tensor, transform_code: torch.Tensor) -> torch.Tensor:
        gap = warped.mean(dim=(2, 3), keepdim=True).expand_as(warped)
        fg = F.relu(self.fuse(torch.cat([warped, gap], 1)))
        return torch.sigmoid(self.out(self.blocks(torch.cat([fg, transform_code], 1))))


class ViewSynthesisNetwork(nn.Module):
    def __init__(self, feature_dim: int = 512, f_t: int = 96):
        super().__init__()
        self.gtn = GridTransformationEncoder(f_t)
        self.dsn = DepthmapSynthesisNetwork(feature_dim, f_t)

    @staticmethod
    def mapping(depth2: torch.Tensor, K1: torch.Tensor, K2: torch.Tensor, T_1_2: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """M^{1->2} on the view-2 cell grid: (uv2 (B, N, 2) cell centres, uv1 (B, N, 2) where they come from in
        view 1, in_frustum (B, N) bool: valid view-2 depth, in front of view 1 and inside its image)."""
        B, _, H, W = depth2.shape
        uv2 = cell_centres(H // STRIDE, W // STRIDE, depth2).unsqueeze(0).expand(B, -1, -1)
        d2 = sample_nearest(depth2, uv2)[..., 0]
        uv1, z1 = map_points(uv2, d2, K2, K1, T_1_2)
        inside = (uv1[..., 0] >= 0) & (uv1[..., 0] <= W - 1) & (uv1[..., 1] >= 0) & (uv1[..., 1] <= H - 1)
        return uv2, uv1, (d2 > 0) & (z1 > 1e-6) & inside

    def forward(self, features1: torch.Tensor, depth1: torch.Tensor, depth2: torch.Tensor, K1: torch.Tensor,
                K2: torch.Tensor, T_1_2: torch.Tensor) -> dict[str, torch.Tensor]:
        B, _, h, w = features1.shape
        H, W = depth1.shape[-2:]
        with torch.no_grad():
            uv2, uv1, frustum = self.mapping(depth2, K1, K2, T_1_2)
        m = frustum.unsqueeze(-1).to(features1.dtype)
        warped = sample_cells(features1, uv1) * m                                         # (B, N, F)
        warped = warped.transpose(1, 2).reshape(B, -1, h, w)
        # GTN input per view-2 cell: positions normalised by the image size, raw depth-1, cameras, pose
        scale = torch.tensor([W, H], dtype=depth1.dtype, device=depth1.device)
        d1 = sample_nearest(depth1, uv1)[..., :1] * m
        cams = torch.stack([K1[:, 0, 0] / W, K1[:, 1, 1] / H, K1[:, 0, 2] / W, K1[:, 1, 2] / H,
                            K2[:, 0, 0] / W, K2[:, 1, 1] / H, K2[:, 0, 2] / W, K2[:, 1, 2] / H], -1)
        pose = torch.cat([T_1_2[:, :3, :3].reshape(B, 9), T_1_2[:, :3, 3]], -1)
        glob = torch.cat([cams, pose], -1).unsqueeze(1).expand(-1, uv2.shape[1], -1)
        g = torch.cat([uv2 / scale, uv1 / scale * m, d1, glob], -1).transpose(1, 2).reshape(B, GTN_INPUTS, h, w)
        code = self.gtn(g)
        return {"depth": self.dsn(warped, code), "frustum": frustum.view(B, 1, h, w).to(features1.dtype)}
