"""Bundle adjustment of a keyframe window: camera poses and 3D points from reprojections and, for
observations with a measured depth (RGB-D), from that depth too.

Minimises sum_m rho(|r_m|^2) with a Huber rho, r_m = pi(T_cam_world[c_m] P[p_m]) - uv_m, or with depth
r_m = (pi(Pc) - uv_m, (Z(Pc) - z_m) / sigma_m): the depth error whitened by its standard deviation and
counted like a pixel of reprojection error (keypoints taken as 1 px accurate), over the free
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
from kp_vo.geometry.robust import huber_cost, huber_weights
from kp_vo.geometry.se3 import se3_exp_many


def _linearize(T: np.ndarray, P: np.ndarray, cam_slices: list[slice], pt: np.ndarray, uv: np.ndarray,
               K: np.ndarray, depth: tuple[np.ndarray, np.ndarray] | None = None):
    """Residuals (M, k), d r / d xi_cam (M, k, 6) and d r / d P (M, k, 3) of every observation: k = 2
    (reprojection) without ``depth``, else k = 3 with the whitened depth error of the observations
    ``depth`` = (z (M,) metres, 1 / sigma (M,) per metre, 0 where there is no depth).

    The observations are sorted by camera; ``cam_slices[c]`` holds camera c's, so the rotations are
    applied per camera (one matrix product each) instead of gathered per observation. The pose
    Jacobian is written out in closed form: for Pc = (X, Y, Z) and the left perturbation
    exp(xi) T, d Pc / d xi = [-[Pc]x, I], so d u / d xi = fx [-XY/Z^2, 1 + X^2/Z^2, -Y/Z, 1/Z, 0, -X/Z^2]
    and d v / d xi = fy [-(1 + Y^2/Z^2), XY/Z^2, X/Z, 0, 1/Z, -Y/Z^2]; the depth row d Z / d xi is
    [Y, -X, 0, 0, 0, 1] over sigma.
    """
    Pw = P[pt]
    Pc = np.empty_like(Pw)
    for c, rows in enumerate(cam_slices):
        Pc[rows] = Pw[rows] @ T[c, :3, :3].T + T[c, :3, 3]
    X, Y = Pc[:, 0], Pc[:, 1]
    iz = 1.0 / np.maximum(Pc[:, 2], 1e-6)
    x, y = X * iz, Y * iz                                 # normalised image coordinates
    fx, fy = K[0, 0], K[1, 1]
    k = 2 if depth is None else 3
    r = np.empty((len(uv), k))
    r[:, 0], r[:, 1] = fx * x + K[0, 2] - uv[:, 0], fy * y + K[1, 2] - uv[:, 1]
    Jc = np.empty((len(uv), k, 6))
    Jc[:, 0, 0], Jc[:, 0, 1], Jc[:, 0, 2] = -fx * x * y, fx * (1.0 + x * x), -fx * y
    Jc[:, 0, 3], Jc[:, 0, 4], Jc[:, 0, 5] = fx * iz, 0.0, -fx * x * iz
    Jc[:, 1, 0], Jc[:, 1, 1], Jc[:, 1, 2] = -fy * (1.0 + y * y), fy * x * y, fy * x
    Jc[:, 1, 3], Jc[:, 1, 4], Jc[:, 1, 5] = 0.0, fy * iz, -fy * y * iz
    if depth is not None:
        z, inv_sigma = depth
        r[:, 2] = (Pc[:, 2] - z) * inv_sigma
        Jc[:, 2, 0], Jc[:, 2, 1], Jc[:, 2, 2] = Y * inv_sigma, -X * inv_sigma, 0.0
        Jc[:, 2, 3], Jc[:, 2, 4], Jc[:, 2, 5] = 0.0, 0.0, inv_sigma
    Jp = np.empty((len(uv), k, 3))                       # d r / d Pc (the last three pose columns) times R
    for c, rows in enumerate(cam_slices):
        Jp[rows] = (Jc[rows, :, 3:].reshape(-1, 3) @ T[c, :3, :3]).reshape(-1, k, 3)
    return r, Jc, Jp


def _inverse_3x3(A: np.ndarray) -> np.ndarray:
    """Inverses (N, 3, 3) of the (N, 3, 3) matrices A, by their adjugates (5x faster than np.linalg.inv
    on many small matrices; A here is symmetric positive definite, damped)."""
    c = np.cross(A[:, 1], A[:, 2]), np.cross(A[:, 2], A[:, 0]), np.cross(A[:, 0], A[:, 1])
    adjugate = np.stack(c, axis=2)                      # columns: cofactors of the rows of A
    det = np.einsum("ni,ni->n", A[:, 0], c[0])
    return adjugate / det[:, None, None]


def _depth_terms(obs_depth: np.ndarray | None, obs_depth_sigma: np.ndarray | None, num_obs: int
                 ) -> tuple[np.ndarray, np.ndarray] | None:
    """(z, 1 / sigma) (M,) of the observations' measured depths (0, 0 where none), or None without depths."""
    if obs_depth is None and obs_depth_sigma is None:
        return None
    if obs_depth is None or obs_depth_sigma is None:
        raise InvalidInputError("bundle_adjust: obs_depth and obs_depth_sigma go together")
    z = np.asarray(obs_depth, np.float64)
    sigma = np.asarray(obs_depth_sigma, np.float64)
    if z.shape != (num_obs,) or sigma.shape != (num_obs,):
        raise InvalidInputError(f"bundle_adjust: obs_depth {z.shape} and obs_depth_sigma {sigma.shape} "
                                f"must be ({num_obs},)")
    has = np.isfinite(z)
    if np.any(~(sigma[has] > 0)) or np.any(~np.isfinite(sigma[has])):
        raise InvalidInputError("bundle_adjust: obs_depth_sigma must be positive and finite where there is a depth")
    return np.where(has, z, 0.0), np.where(has, 1.0 / np.where(has, sigma, 1.0), 0.0)


def bundle_adjust(T_cam_world: np.ndarray, points: np.ndarray, obs_cam: np.ndarray, obs_point: np.ndarray,
                  obs_uv: np.ndarray, K: np.ndarray, fixed: np.ndarray, huber_px: float = 2.0,
                  max_iterations: int = 10, tolerance: float = 1e-6, obs_depth: np.ndarray | None = None,
                  obs_depth_sigma: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Refine poses and points; never returns a state of higher cost than the input.

    Stops after ``max_iterations`` or once an accepted step lowers the cost by less than
    ``tolerance`` times the cost.

    T_cam_world: (C, 4, 4) camera poses (world -> camera). points: (P, 3) world points.
    obs_cam, obs_point: (M,) int camera / point index of each observation (each pair at most once);
    obs_uv: (M, 2) observed pixels. fixed: (C,) bool, cameras kept as they are.
    obs_depth, obs_depth_sigma: optional (M,) measured depth along the camera's optical axis and its
    standard deviation (metres); NaN depth = none measured. With depths, one camera fixes the gauge.
    Returns (T_cam_world (C, 4, 4), points (P, 3), residual_px (M,)): the norm of each observation's
    residual, its whitened depth error included.
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
    depth = _depth_terms(obs_depth, obs_depth_sigma, len(uv))
    C, N, M = len(T), len(P), len(uv)
    # Work on the observations sorted by camera (each camera's rows are one slice); residuals are
    # returned in the caller's order.
    order = np.argsort(cam, kind="stable")
    cam, pt, uv = cam[order], pt[order], uv[order]
    if depth is not None:
        depth = depth[0][order], depth[1][order]
    bounds = np.searchsorted(cam, np.arange(C + 1))
    cam_slices = [slice(bounds[c], bounds[c + 1]) for c in range(C)]
    free = np.flatnonzero(~fixed)
    is_free = ~fixed[cam]
    F = len(free)
    free_obs = np.flatnonzero(is_free)
    free_cam = (np.cumsum(~fixed) - 1)[cam[free_obs]]    # index among the free cameras
    # Flat positions of each free observation's (6, 3) block in an (F, 6, N, 3) array (below).
    block_at = ((free_cam[:, None, None] * 6 + np.arange(6)[:, None]) * N + pt[free_obs, None, None]) * 3 \
        + np.arange(3)
    # Sums over the observations of each point / each camera, as sparse (N, M) / (C, M) products.
    by_point = sparse.csr_matrix((np.ones(M), (pt, np.arange(M))), shape=(N, M))
    by_cam = sparse.csr_matrix((np.ones(M), (cam, np.arange(M))), shape=(C, M))
    lam = 1e-3
    W_cols = np.zeros(F * 6 * N * 3)                     # every iteration writes the same entries (block_at)
    Y_cols = np.zeros(F * 6 * N * 3)

    r, Jc, Jp = _linearize(T, P, cam_slices, pt, uv, K, depth)
    cost = huber_cost(np.linalg.norm(r, axis=1), huber_px)
    for _ in range(max_iterations):
        w = huber_weights(np.linalg.norm(r, axis=1), huber_px)[:, None, None]
        Jc_w = Jc * (w * is_free[:, None, None])        # fixed cameras get no update
        Jp_w = Jp * w
        # Per-point blocks V (N,3,3), g_p (N,3); per-camera U (C,6,6), g_c (C,6); W per observation (M,6,3).
        V = (by_point @ (Jp_w.transpose(0, 2, 1) @ Jp).reshape(M, 9)).reshape(N, 3, 3)
        g_p = by_point @ np.einsum("mki,mk->mi", Jp_w, r)
        U = np.stack([Jc_w[rows].reshape(-1, 6).T @ Jc[rows].reshape(-1, 6) for rows in cam_slices])
        g_c = np.stack([Jc_w[rows].reshape(-1, 6).T @ r[rows].reshape(-1) for rows in cam_slices])
        W = Jc_w.transpose(0, 2, 1) @ Jp

        V_inv = _inverse_3x3(V + lam * (np.eye(3) * (np.einsum("nii->ni", V)[:, :, None] + 1e-9)))
        # Schur complement on the free cameras: S = U - sum_p W_p V_p^-1 W_p^T, with W_p the (6F, 3)
        # column of point p, laid out as (F, 6, N, 3) so that the sum over points is one matrix product
        # (one dense product beat summing 6x6 blocks over the pairs of observations of each point).
        Y = W @ V_inv[pt]                                                       # (M, 6, 3)
        W_cols[block_at] = W[free_obs]
        Y_cols[block_at] = Y[free_obs]
        S = -(Y_cols.reshape(6 * F, 3 * N) @ W_cols.reshape(6 * F, 3 * N).T)
        U_damped = U[free] + lam * (np.eye(6) * (np.einsum("cii->ci", U[free])[:, :, None] + 1e-9))
        for f in range(F):
            S[6 * f:6 * f + 6, 6 * f:6 * f + 6] += U_damped[f]
        b = -g_c[free].reshape(-1) + (by_cam @ np.einsum("mij,mj->mi", Y, g_p[pt]))[free].reshape(-1)
        delta_c = np.zeros((C, 6))
        try:
            delta_c[free] = np.linalg.solve(S, b).reshape(F, 6)
        except np.linalg.LinAlgError:
            lam *= 10
            continue
        back = by_point @ np.einsum("mji,mj->mi", W, delta_c[cam])            # sum_c W_cp^T delta_c  (N, 3)
        delta_p = -np.einsum("nij,nj->ni", V_inv, g_p + back)

        T_new = T.copy()
        T_new[free] = se3_exp_many(delta_c[free]) @ T[free]
        P_new = P + delta_p
        r_new, Jc_new, Jp_new = _linearize(T_new, P_new, cam_slices, pt, uv, K, depth)
        cost_new = huber_cost(np.linalg.norm(r_new, axis=1), huber_px)
        if cost_new < cost:
            T, P, r, Jc, Jp = T_new, P_new, r_new, Jc_new, Jp_new
            converged = cost - cost_new < tolerance * cost
            cost = cost_new
            lam = max(lam / 10, 1e-7)
            if converged:
                break
        else:
            lam *= 10
    residual = np.empty(M)
    residual[order] = np.linalg.norm(r, axis=1)
    return T, P, residual
