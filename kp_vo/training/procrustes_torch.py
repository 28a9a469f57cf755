"""Differentiable weighted Procrustes (rigid 3D-3D alignment) and rotation distances in torch.

All functions are batched over a leading dimension B and work in float32 or float64; gradients
flow through ``torch.linalg.svd`` (well defined while the singular values of the 3x3 cross
covariance are distinct, i.e. for non-degenerate point sets).
"""

from __future__ import annotations

import math

import torch

from kp_vo.errors import InvalidInputError


def weighted_procrustes(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                        eps: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """Rigid transform (R, t) minimising sum_i w_i |target_i - (R source_i + t)|^2.

    source, target: (B, N, 3) corresponding points (source in frame a, target in frame b, so the
    result is T_b_a); weights: (B, N) >= 0 (None = all ones).
    Returns R (B, 3, 3) with det +1 and t (B, 3).
    Steps: weighted centroids, weighted cross covariance H = sum w (x - x_bar)(y - y_bar)^T,
    SVD H = U S V^T, R = V diag(1, 1, sign det(V U^T)) U^T (the reflection fix), t = y_bar - R x_bar.
    """
    if source.dim() != 3 or source.shape[-1] != 3 or source.shape != target.shape:
        raise InvalidInputError(f"procrustes needs two (B, N, 3) point sets of one shape, got "
                                f"{tuple(source.shape)} and {tuple(target.shape)}")
    if weights is None:
        weights = torch.ones(source.shape[:2], dtype=source.dtype, device=source.device)
    if weights.shape != source.shape[:2]:
        raise InvalidInputError(f"procrustes weights must be (B, N) = {tuple(source.shape[:2])}, "
                                f"got {tuple(weights.shape)}")
    w = weights.unsqueeze(-1)                                           # (B, N, 1)
    w_sum = w.sum(dim=1, keepdim=True).clamp(min=eps)                   # (B, 1, 1)
    x_bar = (w * source).sum(dim=1, keepdim=True) / w_sum               # (B, 1, 3)
    y_bar = (w * target).sum(dim=1, keepdim=True) / w_sum
    x, y = source - x_bar, target - y_bar
    H = (w * x).transpose(1, 2) @ y                                     # (B, 3, 3) = sum w x y^T
    U, _, Vh = torch.linalg.svd(H)
    V = Vh.transpose(1, 2)
    # The sign of the determinant is piecewise constant: no gradient flows through it.
    sign = torch.sign(torch.linalg.det(V @ U.transpose(1, 2))).detach()
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    D = torch.ones(source.shape[0], 3, dtype=source.dtype, device=source.device)
    D = torch.cat([D[:, :2], sign.unsqueeze(-1)], dim=1)
    R = V @ torch.diag_embed(D) @ U.transpose(1, 2)
    t = y_bar.squeeze(1) - (R @ x_bar.transpose(1, 2)).squeeze(-1)
    return R, t


def make_transform(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3), (B, 3) -> (B, 4, 4) homogeneous transforms."""
    T = torch.zeros(R.shape[0], 4, 4, dtype=R.dtype, device=R.device)
    T = T.clone()
    T[:, :3, :3] = R
    T[:, :3, 3] = t
    T[:, 3, 3] = 1.0
    return T


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (B, 4, 4) transforms T_b_a to (B, N, 3) points in frame a -> (B, N, 3) in frame b."""
    return points @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]


def rotation_angular_distance(R_hat: torch.Tensor, R: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle (rad) between rotations, 2 arcsin(|R_hat - R|_F / (2 sqrt 2)); (B, 3, 3) x2 -> (B,).

    For rotations |R_hat - R|_F = 2 sqrt(2) sin(theta / 2), so this is the geodesic angle theta in
    [0, pi]. ``eps`` keeps the square root differentiable at R_hat == R.
    """
    if R_hat.shape != R.shape or R.shape[-2:] != (3, 3):
        raise InvalidInputError(f"rotation distance needs two (..., 3, 3) tensors, got {tuple(R_hat.shape)}, "
                                f"{tuple(R.shape)}")
    fro = torch.sqrt(((R_hat - R) ** 2).sum(dim=(-2, -1)) + eps)
    return 2.0 * torch.asin((fro / (2.0 * math.sqrt(2.0))).clamp(max=1.0))
