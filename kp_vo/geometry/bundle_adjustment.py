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
from scipy import sparse

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


def _inverse_3x3(A: np.ndarray) -> np.ndarray:
    """Inverses (N, 3, 3) of the (N, 3, 3) matrices A, by their adjugates (5x faster than np.linalg.inv
    on many small matrices; A here is symmetric positive definite, damped)."""
    c = np.cross(A[:, 1], A[:, 2]), np.cross(A[:, 2], A[:, 0]), np.cross(A[:, 0], A[:, 1])
    adjugate = np.stack(c, axis=2)                      # columns: cofactors of the rows of A
    det = np.einsum("ni,ni->n", A[:, 0], c[0])
    return adjugate / det[:, None, None]


def _huber_weights(r: np.ndarray, huber_px: float) -> np.ndarray:
    e = np.linalg.norm(r, axis=1)
    return np.where(e <= huber_px, 1.0, huber_px / np.maximum(e, 1e-12))


def _cost(r: np.ndarray, huber_px: float) -> float:
    e = np.linalg.norm(r, axis=1)
    return float(np.sum(np.where(e <= huber_px, 0.5 * e**2, huber_px * (e - 0.5 * huber_px))))


def bundle_adjust(T_cam_world: np.ndarray, points: np.ndarray, obs_cam: np.ndarray, obs_point: np.ndarray,
                  obs_uv: np.ndarray, K: np.ndarray, fixed: np.ndarray, huber_px: float = 2.0,
                  max_iterations: int = 10,
                  tolerance: float = 1e-6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine poses and points; never returns a state of higher cost than the input.

    Stops after ``max_iterations`` or once an accepted step lowers the cost by less than
    ``tolerance`` times the cost.

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
    C, N, M = len(T), len(P), len(uv)
    free = np.flatnonzero(~fixed)
    is_free = ~fixed[cam]
    keep = np.repeat(~fixed, 6)
    # Sums over the observations of each point / each camera, as sparse (N, M) / (C, M) products.
    by_point = sparse.csr_matrix((np.ones(M), (pt, np.arange(M))), shape=(N, M))
    by_cam = sparse.csr_matrix((np.ones(M), (cam, np.arange(M))), shape=(C, M))
    lam = 1e-3

    r, Jc, Jp = _linearize(T, P, cam, pt, uv, K)
    cost = _cost(r, huber_px)
    for _ in range(max_iterations):
        w = _huber_weights(r, huber_px)[:, None, None]
        Jc_w = Jc * (w * is_free[:, None, None])        # fixed cameras get no update
        Jp_w = Jp * w
        # Per-point blocks V (N,3,3), g_p (N,3); per-camera U (C,6,6), g_c (C,6); W per observation (M,6,3).
        V = (by_point @ (Jp_w.transpose(0, 2, 1) @ Jp).reshape(M, 9)).reshape(N, 3, 3)
        g_p = by_point @ np.einsum("mki,mk->mi", Jp_w, r)
        U = (by_cam @ (Jc_w.transpose(0, 2, 1) @ Jc).reshape(M, 36)).reshape(C, 6, 6)
        g_c = by_cam @ np.einsum("mki,mk->mi", Jc_w, r)
        W = Jc_w.transpose(0, 2, 1) @ Jp

        V_inv = _inverse_3x3(V + lam * (np.eye(3) * (np.einsum("nii->ni", V)[:, :, None] + 1e-9)))
        # Schur complement on the cameras: S = U - sum_p W_p V_p^-1 W_p^T, with W_p the (6C, 3) column
        # of point p, laid out as (C, 6, N, 3) so that the sum over points is one matrix product.
        Y = W @ V_inv[pt]                                                       # (M, 6, 3)
        W_cols = np.zeros((C, 6, N, 3))
        Y_cols = np.zeros((C, 6, N, 3))
        W_cols[cam, :, pt] = W
        Y_cols[cam, :, pt] = Y
        S = -(Y_cols.reshape(6 * C, 3 * N) @ W_cols.reshape(6 * C, 3 * N).T)
        U_damped = U + lam * (np.eye(6) * (np.einsum("cii->ci", U)[:, :, None] + 1e-9))
        for c in range(C):
            S[6 * c:6 * c + 6, 6 * c:6 * c + 6] += U_damped[c]
        b = -g_c.reshape(-1) + (by_cam @ np.einsum("mij,mj->mi", Y, g_p[pt])).reshape(-1)
        delta_c = np.zeros(6 * C)
        try:
            delta_c[keep] = np.linalg.solve(S[np.ix_(keep, keep)], b[keep])
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        delta_c = delta_c.reshape(C, 6)
        back = by_point @ np.einsum("mji,mj->mi", W, delta_c[cam])            # sum_c W_cp^T delta_c  (N, 3)
        delta_p = -np.einsum("nij,nj->ni", V_inv, g_p + back)

        T_new = T.copy()
        for c in free:
            T_new[c] = se3_exp(delta_c[c]) @ T[c]
        P_new = P + delta_p
        r_new, Jc_new, Jp_new = _linearize(T_new, P_new, cam, pt, uv, K)
        cost_new = _cost(r_new, huber_px)
        if cost_new < cost:
            T, P, r, Jc, Jp = T_new, P_new, r_new, Jc_new, Jp_new
            converged = cost - cost_new < tolerance * cost
            cost = cost_new
            lam = max(lam / 10, 1e-7)
            if converged:
                break
        else:
            lam *= 10
    return T, P, np.linalg.norm(r, axis=1)
