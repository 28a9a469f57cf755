"""Homography helpers on torch tensors for the keypoint losses: batched point warping and the
inside-the-image test (sampling homographies and warping images, in numpy, is ``kp_vo.datasets.augment``).

Convention: ``H_tgt_src`` (3x3) maps homogeneous pixel coordinates (u, v, 1) of the source image
to the target image; pixel centres at integer coordinates.
"""

from __future__ import annotations

import torch


def warp_points(points: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Batched, differentiable: points (B, N, 2), H (B, 3, 3) -> (B, N, 2) mapped points."""
    ones = torch.ones_like(points[..., :1])
    q = torch.cat([points, ones], -1) @ H.transpose(-1, -2)
    z = q[..., 2:3]
    z = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    return q[..., :2] / z


def inside(points: torch.Tensor, height: int, width: int, margin: float = 0.0) -> torch.Tensor:
    """(..., 2) pixel points -> (...) bool, True where margin <= u <= W-1-margin and same for v."""
    u, v = points[..., 0], points[..., 1]
    return (u >= margin) & (u <= width - 1 - margin) & (v >= margin) & (v <= height - 1 - margin)
