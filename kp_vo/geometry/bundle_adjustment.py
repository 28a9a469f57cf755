"""Bundle adjustment of a keyframe window: camera poses and 3D points from reprojections.

Minimises sum_m rho(|pi(T_cam_world[c_m] P[p_m]) - uv_m|^2) with a Huber rho over the free
cameras (LEFT perturbation ``T <- exp(xi) T``, xi = [omega, rho]) and every point, by
Levenberg-Marquardt on the normal equations with the points eliminated (Schur complement):
a window has few cameras (6C unknowns) and many points (3 each, independent given the
cameras), so each step solves one small dense system. Fixed cameras anchor the gauge; for
monocular maps fix at least two (they fix the scale too).
"""

from __future__ import annotations

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.se3 import se3_exp


def _linearize(T: np.ndarray, P: np.ndarray, cam: np.ndarray, pt: np.ndarray, uv: np.ndarray, K: np.ndarray):
    """Residuals (M, 2), d r / d xi_cam (M, 2, 6) and d r / d P (M, 2, 3) of every observation."""
    R, t = T[cam, :3, :3], T[cam, :3, 3]
    Pc = np.einsum("mij,mj->mi", R, P[pt]) + t
    X, Y, Z = Pc[:, 0], Pc[:, 1], np.maximum(Pc[:, 2], 1e-6)
    fx, fy = K[0, 0], K[1, 1]
    r = np.stack([fx * X / Z + K[0, 2] - uv[:, 0], fy * Y / Z + K[1, 2] - uv[:, 1]], axis=1)
    J_proj = np.zeros((len(uv), 2, 3))
    J_proj[:, 0, 0] = fx / Z
    J_proj[:, 0, 2] = -fx * X / Z**2
    J_proj[:, 1, 1] = fy / Z
    J_proj[:, 1, 2] = -fy * Y / Z**2
    J_pose = np.zeros((len(uv), 3, 6))  # d Pc / d xi for exp(xi) T: [-[Pc]x, I]
    J_pose[:, 0, 1], J_pose[:, 0, 2] = Pc[:, 2], -Pc[:, 1]
    J_pose[:, 1, 0], J_pose[:, 1, 2] = -Pc[:, 2], Pc[:, 0]
    J_pose[:, 2, 0], J_pose[:, 2, 1] = Pc[:, 1], -Pc[:, 0]
    J_pose[:, 0, 3] = J_pose[:, 1, 4] = J_pose[:, 2, 5] = 1.0
    return r, J_proj @ J_pose, J_proj @ R


def _huber_weights(r: np.ndarray, huber_px: float) -> np.ndarray:
    e = np.linalg.norm(r, axis=1)
    return np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-12))


def _cost(r: np.ndarray, huber_px: float) -> float:
    e = np.linalg.norm(r, axis=1)
    return float(np.sum(np.where(e <= huber_px, 0.5 * e**2, huber_px * (e - 0.5 * huber_px))))


def bundle_adjust(T_cam_world: np.ndarray, points: np.ndarray, obs_cam: np.ndarray, obs_point: np.ndarray,
                  obs_uv: np.ndarray, K: np.ndarray, fixed: np.ndarray, huber_px: float = 2.0,
                  max_iterations: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine poses and points; never returns a state of higher cost than the input.

    T_cam_world: (C, 4, 4) camera poses (world -> camera). points: (P, 3) world points.
    obs_cam, obs_point: (M,) int camera / point index of each observation (each pair at most once);
    obs_uv: (M, 2) observed pixels. fixed: (C,) bool, cameras kept as they are.
    Returns (T_cam_world (C, 4, 4), points (P, 3), residual_px (M,)).
    """
    T = np.array(T_cam_world, np.float64)
    P = np.array(points, np.float64)
    cam = np.asarray(obs_cam, np.int64)
    pt = np.asarray(obs_point, np.int64)
    uv = np.asarray(obs_uv, np.float64)
    fixed = np.asarray(fixed, bool)
    if T.ndim != 3 or T.shape[1:] != (4, 4) or P.ndim != 2 or P.shape[1] != 3:
        raise InvalidInputError(f"bundle_adjust: bad shapes T {T.shape}, points {P.shape}")
    if not (len(cam) == len(pt) == len(uv)) or fixed.shape != (len(T),):
        raise InvalidInputError("bundle_adjust: observation arrays and the fixed mask must have matching lengths")
    C, N = len(T), len(P)
    free = np.flatnonzero(~fixed)
    slot = np.full(C, -1, np.int64)
    slot[free] = np.arange(len(free))
    lam = 1e-3

    r, Jc, Jp = _linearize(T, P, cam, pt, uv, K)
    cost = _cost(r, huber_px)
    for _ in range(max_iterations):
        w = _huber_weights(r, huber_px)[:, None, None]
        Jc_w = np.where((slot[cam] >= 0)[:, None, None], Jc, 0.0) * w
        Jp_w = Jp * w
        # Per-point blocks V (N,3,3), g_p (N,3); per-camera blocks U (C,6,6), g_c (C,6); W per observation (M,6,3).
        V = np.zeros((N, 3, 3))
        np.add.at(V, pt, Jp_w.transpose(0, 2, 1) @ Jp)
        g_p = np.zeros((N, 3))
        np.add.at(g_p, pt, np.einsum("mki,mk->mi", Jp_w, r))
        U = np.zeros((C, 6, 6))
        np.add.at(U, cam, Jc_w.transpose(0, 2, 1) @ Jc)
        g_c = np.zeros((C, 6))
        np.add.at(g_c, cam, np.einsum("mki,mk->mi", Jc_w, r))
        W = Jc_w.transpose(0, 2, 1) @ Jp

        V_damped = V + lam * (np.eye(3) * (np.einsum("nii->ni", V)[:, :, None] + 1e-9))
        V_inv = np.linalg.inv(V_damped)
        # Schur complement on the cameras, with dense per-point camera blocks (C is small).
        W_dense = np.zeros((N, C, 6, 3))
        W_dense[pt, cam] = W
        WV = W_dense @ V_inv[:, None]                                           # (N, C, 6, 3)
        # S -= sum_n WV[n] W_dense[n]^T, as one matrix product over the stacked (point, 3) axis.
        S = -(WV.transpose(1, 2, 0, 3).reshape(6 * C, 3 * N) @ W_dense.transpose(1, 2, 0, 3).reshape(6 * C, 3 * N).T)
        U_damped = U + lam * (np.eye(6) * (np.einsum("cii->ci", U)[:, :, None] + 1e-9))
        for c in range(C):
            S[6 * c:6 * c + 6, 6 * c:6 * c + 6] += U_damped[c]
        b = -g_c.reshape(-1) + np.einsum("ncik,nk->ci", WV, g_p).reshape(-1)
        keep = np.repeat(slot >= 0, 6)
        delta_c = np.zeros(6 * C)
        try:
            delta_c[keep] = np.linalg.solve(S[np.ix_(keep, keep)], b[keep])
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        delta_c = delta_c.reshape(C, 6)
        delta_p = -np.einsum("nij,nj->ni", V_inv, g_p + np.einsum("ncik,ci->nk", W_dense, delta_c))

        T_new = T.copy()
        for c in free:
            T_new[c] = se3_exp(delta_c[c]) @ T[c]
        P_new = P + delta_p
        r_new, Jc_new, Jp_new = _linearize(T_new, P_new, cam, pt, uv, K)
        cost_new = _cost(r_new, huber_px)
        if cost_new < cost:
            T, P, r, Jc, Jp = T_new, P_new, r_new, Jc_new, Jp_new
            converged = cost - cost_new < 1e-6 * cost
            cost = cost_new
            lam = max(lam / 10, 1e-7)
            if converged:
                break
        else:
            lam *= 10
    return T, P, np.linalg.norm(r, axis=1)
