"""Differentiable weighted Procrustes (rigid 3D-3D alignment) and rotation distances in torch.

All functions are batched over a leading dimension B and work in float32 or float64.

The rotation's gradient does not go through autograd's SVD backward: that one differentiates U and V
separately, with terms 1 / (s_i^2 - s_j^2) that are infinite when two singular values of the 3x3
cross covariance coincide (nearly collinear or planar point sets, which a keypoint network produces
early in training: one such batch turned the object KeypointNet's weights into NaN). Those terms
cancel in the rotation U D V^T; ``_RotationFromSvd`` uses the rotation's own derivative, whose
denominators are the sums s'_i + s'_j of the (reflection-signed) singular values. Those vanish only
when two of them are zero (both point sets on one line, where the rotation about that line is
undetermined); they are then held at a small floor, so the gradient stays finite.
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
    R = _RotationFromSvd.apply(H).transpose(1, 2)                       # R = (U D V^T)^T = V D U^T
    t = y_bar.squeeze(1) - (R @ x_bar.transpose(1, 2)).squeeze(-1)
    return R, t


class _RotationFromSvd(torch.autograd.Function):
    """Q = U D V^T for H = U S V^T (B, 3, 3), D = diag(1, 1, sign det(U V^T)): the rotation nearest to H
    (the transpose of the Procrustes rotation).

    Derivative: with U' = U D and s' = D s (signed singular values), dQ = U' Omega V^T where Omega is
    skew, Omega_ij = (G_ij - G_ji) / (s'_i + s'_j) and G = U'^T dH V. So for an upstream gradient
    dL/dQ: M = U'^T (dL/dQ) V, dL/dG = (M - M^T) / (s'_i + s'_j), dL/dH = U' (dL/dG) V^T.
    Denominators are kept at least ``MIN_DENOMINATOR`` times the largest singular value away from 0.
    """

    MIN_DENOMINATOR = 1e-6

    @staticmethod
    def forward(ctx, H: torch.Tensor) -> torch.Tensor:
        U, S, Vh = torch.linalg.svd(H)
        # The sign of the determinant is piecewise constant: no gradient flows through it.
        sign = torch.sign(torch.linalg.det(U @ Vh))
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        D = torch.ones_like(S)
        D[:, 2] = sign
        U_signed = U * D.unsqueeze(1)                                   # U D: column 3 flipped where needed
        ctx.save_for_backward(U_signed, S * D, Vh)
        return U_signed @ Vh

    @staticmethod
    def backward(ctx, grad_Q: torch.Tensor) -> torch.Tensor:
        U_signed, S_signed, Vh = ctx.saved_tensors
        M = U_signed.transpose(1, 2) @ grad_Q @ Vh.transpose(1, 2)
        den = S_signed.unsqueeze(2) + S_signed.unsqueeze(1)             # (B, 3, 3) s'_i + s'_j
        floor = (S_signed.abs().amax(dim=1) * _RotationFromSvd.MIN_DENOMINATOR).clamp(min=1e-30)
        floor = floor.view(-1, 1, 1)
        den = torch.where(den.abs() < floor, torch.where(den < 0, -floor, floor), den)
        return U_signed @ ((M - M.transpose(1, 2)) / den) @ Vh


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
    [0, pi]. ``eps`` keeps the square root differentiable at R_hat == R; near theta = pi the gradient
    is that of arcsin at 1 - 1e-6 (arcsin's own is infinite at 1), the value stays exact.
    """
    if R_hat.shape != R.shape or R.shape[-2:] != (3, 3):
        raise InvalidInputError(f"rotation distance needs two (..., 3, 3) tensors, got {tuple(R_hat.shape)}, "
                                f"{tuple(R.shape)}")
    fro = torch.sqrt(((R_hat - R) ** 2).sum(dim=(-2, -1)) + eps)
    x = fro / (2.0 * math.sqrt(2.0))
    capped = torch.asin(x.clamp(max=1.0 - 1e-6))
    return 2.0 * (capped + (torch.asin(x.clamp(max=1.0)) - capped).detach())
