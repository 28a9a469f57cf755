"""3D-object KeypointNet losses (Suwajanakorn et al. §3): multi-view consistency, relative-pose loss
through Procrustes with noisy keypoints, separation, silhouette, variance and the orientation loss.

Keypoints: uvz (B, N, 3) = pixel (u, v) (pixel centres at integers) and the network's depth output z;
camera depth = z + z_offset (the network predicts depth relative to the known object distance so an
untrained net starts in front of the camera). K (B, 3, 3); T_2_1 (B, 4, 4) maps view-1 camera
coordinates into view 2. Pixel errors are measured in normalised units (pixels / (W / 2)) so the
weights do not depend on the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kp_vo.training.procrustes_torch import (
    rotation_angular_distance,
    transform_points,
    weighted_procrustes,
)


def unproject(uvz: torch.Tensor, K: torch.Tensor, z_offset: float) -> torch.Tensor:
    """pi^-1: (B, N, 3) (u, v, z) -> (B, N, 3) camera points with depth z + z_offset."""
    z = uvz[..., 2] + z_offset
    x = (uvz[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0] * z
    y = (uvz[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1] * z
    return torch.stack([x, y, z], -1)


def project_uv(points: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) camera points -> (B, N, 2) pixels (depth clamped at 1e-3)."""
    z = points[..., 2].clamp(min=1e-3)
    return torch.stack([K[:, None, 0, 0] * points[..., 0] / z + K[:, None, 0, 2],
                        K[:, None, 1, 1] * points[..., 1] / z + K[:, None, 1, 2]], -1)


def consistency_loss(uvz1: torch.Tensor, uvz2: torch.Tensor, K: torch.Tensor, T_2_1: torch.Tensor,
                     z_offset: float, width: int) -> torch.Tensor:
    """L_con = 1/(2N) sum_i |[u_i, v_i, u'_i, v'_i] - [u_hat_i, v_hat_i, u'_hat_i, v'_hat_i]|^2, batch mean."""
    X1, X2 = unproject(uvz1, K, z_offset), unproject(uvz2, K, z_offset)
    T_1_2 = torch.linalg.inv(T_2_1)
    uv2_hat = project_uv(transform_points(T_2_1, X1), K)
    uv1_hat = project_uv(transform_points(T_1_2, X2), K)
    s = width / 2.0
    err = ((uvz2[..., :2] - uv2_hat) / s).pow(2).sum(-1) + ((uvz1[..., :2] - uv1_hat) / s).pow(2).sum(-1)
    return err.mean() / 2.0


def pose_loss(X1: torch.Tensor, X2: torch.Tensor, R_2_1: torch.Tensor, noise_std: float = 0.1,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """L_pose = 2 arcsin(|R_hat - R|_F / (2 sqrt 2)), R_hat = Procrustes rotation of the keypoints (B, N, 3)
    with Gaussian noise (std ``noise_std``, object units) added to both sets; batch mean."""
    if noise_std > 0:
        n1 = torch.randn(X1.shape, generator=generator, dtype=X1.dtype).to(X1.device)
        n2 = torch.randn(X2.shape, generator=generator, dtype=X2.dtype).to(X2.device)
        X1, X2 = X1 + noise_std * n1, X2 + noise_std * n2
    R_hat, _ = weighted_procrustes(X1, X2)
    return rotation_angular_distance(R_hat, R_2_1).mean()


def separation_loss(X: torch.Tensor, delta: float) -> torch.Tensor:
    """L_sep = 1/N^2 sum_i sum_{j != i} max(0, delta^2 - |X_i - X_j|^2); X (B, N, 3); batch mean."""
    n = X.shape[1]
    d2 = (X.unsqueeze(2) - X.unsqueeze(1)).pow(2).sum(-1)                     # (B, N, N)
    off = 1.0 - torch.eye(n, dtype=X.dtype, device=X.device)
    return (F.relu(delta ** 2 - d2) * off).sum(dim=(1, 2)).mean() / n ** 2


def silhouette_loss(prob: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """L_obj = 1/N sum_i -log sum_{u,v} b(u, v) g_i(u, v); prob (B, N, H, W), mask (B, 1, H, W) 0/1."""
    inside = (prob * mask).flatten(2).sum(-1)
    return -torch.log(inside.clamp(min=eps)).mean()


def variance_loss(prob: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """L_var = 1/N sum_i sum_{u,v} g_i(u, v) |[u, v] - [u_i, v_i]|^2 in normalised units (pixels / (W / 2));
    prob (B, N, H, W), uv (B, N, 2) the expected pixels; batch mean."""
    h, w = prob.shape[-2:]
    s = w / 2.0
    u = torch.arange(w, dtype=prob.dtype, device=prob.device).view(1, 1, 1, w)
    v = torch.arange(h, dtype=prob.dtype, device=prob.device).view(1, 1, h, 1)
    du = (u - uv[..., 0, None, None]) / s
    dv = (v - uv[..., 1, None, None]) / s
    return (prob * (du ** 2 + dv ** 2)).flatten(2).sum(-1).mean()


def orientation_loss(pred_ends: torch.Tensor, gt_ends: torch.Tensor, width: int) -> torch.Tensor:
    """L2 between predicted and true projections of the object's +x / -x ends, (B, 2, 2) pixels each,
    in normalised units; batch mean of the summed squared error."""
    return ((pred_ends - gt_ends) / (width / 2.0)).pow(2).sum(dim=(1, 2)).mean()
