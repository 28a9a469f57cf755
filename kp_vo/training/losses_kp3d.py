"""KP3D keypoint losses (§3.2-3.3.1) and the sparse depth-consistency term (eq. 11).

For one target/context pair: reciprocal descriptor matches (eq. 1), a RANSAC-PnP initial pose on
detached keypoints (cv2.solvePnPRansac, eq. 2), the differentiable Procrustes residual pose (eq. 3-5),
then L_geom (eq. 7), L_desc (eq. 8, triplet with hardest negatives), L_score (eq. 9) and L_const (eq. 11).

Shapes: keypoint outputs as produced by ``kp_vo.models.keypointnet`` ("score" (B,1,Hc,Wc),
"coord" (B,2,Hc,Wc) pixels, "descriptor" (B,D,Hc,Wc), "dense_descriptor" (B,D,h,w)); depth (B,1,H,W)
metres up to scale; K (B,3,3) pixels. Poses T_c_t (B,4,4) map target-camera points into the context camera.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from kp_vo.training.procrustes_torch import (
    make_transform,
    transform_points,
    weighted_procrustes,
)

log = logging.getLogger(__name__)


def sample_map(values: torch.Tensor, uv: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear samples of a (B, C, h, w) map covering an (height, width) image at pixel coordinates
    uv (B, N, 2) (pixel centres at integers, map cells centred like ``sample_descriptors``) -> (B, N, C)."""
    gx = (uv[..., 0] + 0.5) * (2.0 / width) - 1.0
    gy = (uv[..., 1] + 0.5) * (2.0 / height) - 1.0
    grid = torch.stack([gx, gy], -1).unsqueeze(1)                                   # (B, 1, N, 2)
    out = F.grid_sample(values, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


def lift(uv: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """pi^-1: pixels (B, N, 2) with depth (B, N) -> camera points (B, N, 3)."""
    x = (uv[..., 0] - K[:, None, 0, 2]) / K[:, None, 0, 0]
    y = (uv[..., 1] - K[:, None, 1, 2]) / K[:, None, 1, 1]
    return torch.stack([x * depth, y * depth, depth], -1)


def project(points: torch.Tensor, K: torch.Tensor, min_depth: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """pi: camera points (B, N, 3) -> (pixels (B, N, 2), in_front (B, N) bool)."""
    z = points[..., 2]
    zc = z.clamp(min=min_depth)
    u = K[:, None, 0, 0] * points[..., 0] / zc + K[:, None, 0, 2]
    v = K[:, None, 1, 1] * points[..., 1] / zc + K[:, None, 1, 2]
    return torch.stack([u, v], -1), z > min_depth


def reciprocal_matches(desc_a: torch.Tensor, desc_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours in descriptor space (eq. 1). (N, D), (M, D) -> index tensors (L,), (L,)."""
    dist = torch.cdist(desc_a.detach(), desc_b.detach())
    ab = dist.argmin(dim=1)
    ba = dist.argmin(dim=0)
    ia = torch.arange(desc_a.shape[0], device=desc_a.device)
    keep = ba[ab] == ia
    return ia[keep], ab[keep]


def pnp_initial_pose(points_t: np.ndarray, pixels_c: np.ndarray, K: np.ndarray, reproj_px: float = 3.0,
                     iterations: int = 200) -> tuple[np.ndarray, np.ndarray] | None:
    """RANSAC-PnP on detached correspondences: (L, 3) target points, (L, 2) context pixels, (3, 3) K.
    Returns (T_c_t (4, 4) float64, inliers (L,) bool) or None when it fails (fewer than 6 points,
    no solution, or fewer than 6 inliers)."""
    if len(points_t) < 6:
        return None
    ok, rvec, tvec, inl = cv2.solvePnPRansac(points_t.astype(np.float64), pixels_c.astype(np.float64),
                                             K.astype(np.float64), None, iterationsCount=iterations,
                                             reprojectionError=reproj_px, confidence=0.99,
                                             flags=cv2.SOLVEPNP_EPNP)
    if not ok or inl is None or len(inl) < 6:
        return None
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    inliers = np.zeros(len(points_t), bool)
    inliers[inl.ravel()] = True
    return T, inliers


@dataclass(frozen=True)
class KeypointLossConfig:
    top_k: int = 300                  # target keypoints (highest scores) used per image
    pnp_reproj_px: float = 3.0        # RANSAC-PnP inlier threshold (pixels)
    pnp_iterations: int = 200
    descriptor_margin: float = 0.2    # triplet margin m (eq. 8; KP2D value)
    negative_radius_px: float = 8.0   # context keypoints closer than this to the warped anchor are not negatives
    score_max_px: float = 16.0        # score loss only for anchors whose nearest context keypoint is this close


def _flatten(out: dict, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 2) pixels, (N,) scores, (N, D) descriptors of batch item b."""
    coord = out["coord"][b].flatten(1).T
    score = out["score"][b].flatten()
    desc = out["descriptor"][b].flatten(1).T
    return coord, score, desc


def keypoint_pair_losses(kp_t: dict, kp_c: dict, depth_t: torch.Tensor, depth_c: torch.Tensor, K: torch.Tensor,
                         cfg: KeypointLossConfig = KeypointLossConfig(), warp_pose: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """All keypoint terms of one target/context pair, averaged over the batch.

    warp_pose: optional (B, 4, 4) T_c_t (e.g. ground truth) used instead of the keypoint pose to warp the
    anchors of L_desc / L_score; L_geom and L_const always use the keypoint pose.

    Returns (T_c_t (B, 4, 4) differentiable pose, {"geom", "desc", "score", "const": scalar tensors,
    "inliers": mean PnP inlier count (float tensor, no grad), "pnp_failed": fraction}).
    """
    B = depth_t.shape[0]
    H, W = depth_t.shape[-2:]
    poses, terms = [], {"geom": [], "desc": [], "score": [], "const": []}
    n_inl, failed = 0.0, 0
    for b in range(B):
        Kb = K[b:b + 1]
        p_t, s_t, f_t = _flatten(kp_t, b)
        p_c, s_c, f_c = _flatten(kp_c, b)
        k = min(cfg.top_k, p_t.shape[0])
        sel = torch.topk(s_t.detach(), k).indices
        p_t, s_t, f_t = p_t[sel], s_t[sel], f_t[sel]
        d_t = sample_map(depth_t[b:b + 1], p_t[None], H, W)[0, :, 0]                     # (k,)
        P_t = lift(p_t[None], d_t[None], Kb)                                              # (1, k, 3)

        # 1. reciprocal matches and the RANSAC-PnP initial pose (not differentiable)
        it, ic = reciprocal_matches(f_t, f_c)
        res = pnp_initial_pose(P_t[0, it].detach().cpu().double().numpy(), p_c[ic].detach().cpu().double().numpy(),
                               Kb[0].detach().cpu().double().numpy(), cfg.pnp_reproj_px, cfg.pnp_iterations)
        if res is None:
            failed += 1
            T0 = torch.eye(4, dtype=depth_t.dtype, device=depth_t.device)
            inl = torch.zeros(len(it), dtype=torch.bool, device=depth_t.device)
        else:
            T0 = torch.as_tensor(res[0], dtype=depth_t.dtype, device=depth_t.device)
            inl = torch.as_tensor(res[1], device=depth_t.device)
        n_inl += float(inl.sum())

        # 2. Procrustes residual pose on the inliers: P_c = pi^-1(p_c, [X0 P_t]_z)  (eq. 3-5)
        Pt_in = P_t[:, it[inl]]
        if Pt_in.shape[1] >= 3:
            # X0 is solved on detached points, yet its translation is in the depth's units: rescale it
            # by (depth / detached depth) = 1, so it follows the depth's scale in the gradient. Without
            # this, L_geom and L_const push the (unobservable) monocular scale down at every step; on
            # synthetic streets that ran the DepthNet into its minimum depth within 250 steps (docs/training.md).
            depth_scale = d_t[it[inl]].mean() / d_t[it[inl]].detach().mean().clamp(min=1e-9)
            T0 = torch.cat([torch.cat([T0[:3, :3], T0[:3, 3:] * depth_scale], 1), T0[3:]], 0)
            d_c = transform_points(T0[None], Pt_in)[..., 2]
            Pc_in = lift(p_c[ic[inl]][None], d_c, Kb)
            R, t = weighted_procrustes(Pt_in, Pc_in)
            T = make_transform(R, t)
        else:
            T = T0[None]
        poses.append(T)

        # 3. L_geom (eq. 7) over the inlier matches
        zero = depth_t.sum() * 0.0
        if Pt_in.shape[1] >= 3:
            pw, _ = project(transform_points(T, Pt_in), Kb)
            terms["geom"].append((pw[0] - p_c[ic[inl]]).norm(dim=-1).mean())
            # L_const (eq. 11), with the target depth moved into the context frame ([X P_t]_z) so the
            # two depths describe the same point in one frame; the paper's formula compares the raw
            # depths D_t(p_t) and D_c(p_c), which differ by the camera motion along z.
            z_tc = transform_points(T, Pt_in)[0, :, 2]
            z_c = sample_map(depth_c[b:b + 1], p_c[ic[inl]][None], H, W)[0, :, 0]
            terms["const"].append(((z_tc - z_c).abs() / (z_tc + z_c).clamp(min=1e-6)).mean())
        else:
            terms["geom"].append(zero)
            terms["const"].append(zero)

        # 4. warp every selected target keypoint with the (detached) pose
        T_warp = T.detach() if warp_pose is None else warp_pose[b:b + 1].to(T.dtype)
        pw_all, front = project(transform_points(T_warp, P_t.detach()), Kb)
        pw_all = pw_all[0]
        valid = front[0] & (pw_all[:, 0] >= 0) & (pw_all[:, 0] <= W - 1) & (pw_all[:, 1] >= 0) & (pw_all[:, 1] <= H - 1)
        if int(valid.sum()) == 0:
            terms["desc"].append(zero)
            terms["score"].append(zero)
            continue
        a_f, a_s, a_p = f_t[valid], s_t[valid], pw_all[valid]

        # L_desc (eq. 8): positive = context dense descriptor at the warped location, negative = the
        # hardest context keypoint descriptor farther than negative_radius_px from it.
        pos = F.normalize(sample_map(kp_c["dense_descriptor"][b:b + 1], a_p[None], H, W)[0], dim=-1)
        d_pos = (a_f - pos).norm(dim=-1)
        d_all = torch.cdist(a_f, f_c)                                                       # (n, M)
        far = torch.cdist(a_p, p_c.detach()) > cfg.negative_radius_px
        d_neg = torch.where(far, d_all, torch.full_like(d_all, 10.0)).min(dim=1).values
        terms["desc"].append(F.relu(d_pos - d_neg + cfg.descriptor_margin).mean())

        # L_score (eq. 9) with the nearest context keypoint to each warped anchor
        dist = torch.cdist(a_p, p_c)                                                        # grads into p_c
        d_nn, j = dist.min(dim=1)
        close = d_nn < cfg.score_max_px
        if int(close.sum()) == 0:
            terms["score"].append(zero)
            continue
        d_nn, j, a_s2 = d_nn[close], j[close], a_s[close]
        s_nn = s_c[j]
        d_bar = d_nn.detach().mean()
        terms["score"].append(((a_s2 + s_nn) / 2.0 * (d_nn.detach() - d_bar) + (a_s2 - s_nn) ** 2).mean())
    losses = {k: torch.stack(v).mean() for k, v in terms.items()}
    losses["inliers"] = torch.tensor(n_inl / B)
    losses["pnp_failed"] = torch.tensor(failed / B)
    return torch.cat(poses, 0), losses
