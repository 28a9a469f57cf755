"""Camera pose from 3D-2D correspondences: RANSAC-PnP then Gauss-Newton on se(3) (KP3D appendix F).

The pose is ``T_cam_world`` (4x4): it maps world points into the camera optical frame. Gauss-Newton
minimises the reprojection error sum_i |pi(T P_i) - uv_i|^2 (eq. 14-15) over a LEFT perturbation
``T <- exp(xi) T`` with ``xi = [omega, rho]`` (eq. 16-17). Covariances are returned in ROS order
(tx, ty, tz, rx, ry, rz).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import MIN_DEPTH, check_K, check_points
from kp_vo.geometry.ransac import needed_iterations
from kp_vo.geometry.se3 import check_pose, make_pose, se3_exp, so3_exp

log = logging.getLogger(__name__)

MIN_SIGMA2_PX2 = 0.25  # floor of the residual variance used for the covariance (px^2)
FAILED_COVARIANCE = 1e6  # diagonal of the covariance reported when no pose could be estimated
_BEHIND_PX = 1e3  # reprojection error charged to a point that falls behind the camera
_TWIST_TO_ROS = [3, 4, 5, 0, 1, 2]  # [omega, rho] -> (tx, ty, tz, rx, ry, rz)


@dataclass
class PnPResult:
    """Outcome of :func:`solve_pnp_ransac`.

    success: a pose with enough inliers was found.
    T_cam_world: (4, 4) camera pose (world -> camera); T_init or identity on failure.
    inliers: (N,) bool over the input correspondences.
    num_inliers: inliers.sum().
    reprojection_rmse: RMS reprojection error over the inliers (px); inf on failure.
    covariance: (6, 6) covariance of the left perturbation of T_cam_world in ROS order
        (tx, ty, tz, rx, ry, rz); a large diagonal on failure.
    """

    success: bool
    T_cam_world: np.ndarray
    inliers: np.ndarray
    num_inliers: int
    reprojection_rmse: float
    covariance: np.ndarray = field(default_factory=lambda: FAILED_COVARIANCE * np.eye(6))


def _project_cam(Pc: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (N, 2) of camera-frame points (N, 3) and the in-front mask (N,)."""
    z = Pc[:, 2]
    front = z > MIN_DEPTH
    zs = np.where(front, z, 1.0)
    x, y = Pc[:, 0] / zs, Pc[:, 1] / zs
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)
    return uv, front


def _squared_errors(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Squared reprojection errors (N,) px^2; points behind the camera get _BEHIND_PX^2."""
    Pc = Pw @ T[:3, :3].T + T[:3, 3]
    proj, front = _project_cam(Pc, K)
    e2 = np.sum((proj - uv) ** 2, axis=1)
    return np.where(front, e2, _BEHIND_PX**2)


def _robust_cost(e2: np.ndarray, huber_px: float | None) -> float:
    if huber_px is None:
        return float(e2.sum())
    r = np.sqrt(e2)
    return float(np.where(r <= huber_px, e2, 2.0 * huber_px * r - huber_px**2).sum())


def _linearize(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray):
    """Residuals e = pi(T P) - uv (N, 2), Jacobians de/dxi (N, 2, 6) and the in-front mask (N,)."""
    Pc = Pw @ T[:3, :3].T + T[:3, 3]
    proj, front = _project_cam(Pc, K)
    e = proj - uv
    x, y = Pc[:, 0], Pc[:, 1]
    z = np.where(front, Pc[:, 2], 1.0)
    fx, s, fy = K[0, 0], K[0, 1], K[1, 1]
    # d pi / d Pc  (N, 2, 3)
    A = np.zeros((len(Pc), 2, 3))
    A[:, 0, 0] = fx / z
    A[:, 0, 1] = s / z
    A[:, 0, 2] = -(fx * x + s * y) / z**2
    A[:, 1, 1] = fy / z
    A[:, 1, 2] = -fy * y / z**2
    # d Pc / d xi for exp(xi) T: [-[Pc]x | I]  (N, 3, 6)
    B = np.zeros((len(Pc), 3, 6))
    B[:, 0, 1], B[:, 0, 2] = Pc[:, 2], -Pc[:, 1]
    B[:, 1, 0], B[:, 1, 2] = -Pc[:, 2], Pc[:, 0]
    B[:, 2, 0], B[:, 2, 1] = Pc[:, 1], -Pc[:, 0]
    B[:, :, 3:] = np.eye(3)
    return e, A @ B, front


def _huber_weights(e2: np.ndarray, huber_px: float | None) -> np.ndarray:
    if huber_px is None:
        return np.ones_like(e2)
    r = np.sqrt(e2)
    return np.where(r <= huber_px, 1.0, huber_px / np.maximum(r, 1e-12))


def _covariance(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray,
                huber_px: float | None) -> np.ndarray:
    """sigma^2 (J^T W J)^-1 in ROS order, sigma^2 = weighted residual variance floored at MIN_SIGMA2_PX2."""
    e, J, front = _linearize(T, Pw, uv, K)
    e, J = e[front], J[front]
    n = len(e)
    if n < 3:
        return FAILED_COVARIANCE * np.eye(6)
    w = _huber_weights(np.sum(e**2, axis=1), huber_px)
    H = np.einsum("n,nki,nkj->ij", w, J, J)
    dof = max(2 * n - 6, 1)
    sigma2 = max(float(np.sum(w * np.sum(e**2, axis=1))) / dof, MIN_SIGMA2_PX2)
    try:
        if np.linalg.cond(H) > 1e12:
            return FAILED_COVARIANCE * np.eye(6)
        cov = sigma2 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        return FAILED_COVARIANCE * np.eye(6)
    cov = cov[np.ix_(_TWIST_TO_ROS, _TWIST_TO_ROS)]
    return 0.5 * (cov + cov.T)


def refine_pose_gauss_newton(T_cam_world: np.ndarray, points_world: np.ndarray, uv: np.ndarray,
                             K: np.ndarray, iterations: int = 10,
                             huber_px: float | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Gauss-Newton refinement of ``T_cam_world`` (4, 4) on world points (N, 3) observed at uv (N, 2).

    Each step solves (J^T W J) xi = -J^T W e with the analytic 2x6 Jacobian of the pinhole projection
    w.r.t. a left perturbation, then T <- exp(xi) T (halving the step if it does not lower the cost).
    W are Huber weights when ``huber_px`` is given (IRLS). Stops when |xi| < 1e-10 or no step helps,
    and never returns a pose with a higher cost than the input. Rows with non-finite values are ignored.
    Returns (T_cam_world (4, 4), covariance (6, 6) ROS order, reprojection RMSE px over in-front points).
    """
    T = check_pose(T_cam_world, "T_cam_world")
    Pw = check_points(points_world, 3, "points_world")
    uv = check_points(uv, 2, "uv")
    if len(Pw) != len(uv):
        raise InvalidInputError(f"{len(Pw)} points_world but {len(uv)} uv")
    K = check_K(K)
    if huber_px is not None and not (math.isfinite(huber_px) and huber_px > 0):
        raise InvalidInputError(f"huber_px must be positive, got {huber_px}")
    ok = np.isfinite(Pw).all(axis=1) & np.isfinite(uv).all(axis=1)
    Pw, uv = Pw[ok], uv[ok]
    if len(Pw) < 3:
        return T.copy(), FAILED_COVARIANCE * np.eye(6), float("inf")

    cost = _robust_cost(_squared_errors(T, Pw, uv, K), huber_px)
    for _ in range(int(iterations)):
        e, J, front = _linearize(T, Pw, uv, K)
        if front.sum() < 3:
            break
        e, J = e[front], J[front]
        w = _huber_weights(np.sum(e**2, axis=1), huber_px)
        H = np.einsum("n,nki,nkj->ij", w, J, J)
        g = np.einsum("n,nki,nk->i", w, J, e)
        try:
            xi = -np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            break
        if not np.all(np.isfinite(xi)):
            break
        improved = False
        step = 1.0
        for _halving in range(5):
            T_new = se3_exp(step * xi) @ T
            cost_new = _robust_cost(_squared_errors(T_new, Pw, uv, K), huber_px)
            if cost_new <= cost:
                T, cost, improved = T_new, cost_new, True
                break
            step *= 0.5
        if not improved or step * np.linalg.norm(xi) < 1e-10:
            break

    e2 = _squared_errors(T, Pw, uv, K)
    front = e2 < _BEHIND_PX**2
    rmse = float(np.sqrt(e2[front].mean())) if front.any() else float("inf")
    return T, _covariance(T, Pw, uv, K, huber_px), rmse


def _minimal_pose(Pw: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray | None:
    """T_cam_world from 4 correspondences with OpenCV's AP3P, or None if the solver fails."""
    try:
        ok, rvec, tvec = cv2.solvePnP(Pw.reshape(-1, 1, 3), uv.reshape(-1, 1, 2), K, None,
                                      flags=cv2.SOLVEPNP_AP3P)
    except cv2.error:
        return None
    if not ok or rvec is None or not (np.isfinite(rvec).all() and np.isfinite(tvec).all()):
        return None
    return make_pose(so3_exp(rvec.reshape(3)), tvec.reshape(3))


def solve_pnp_ransac(points_world: np.ndarray, uv: np.ndarray, K: np.ndarray, threshold_px: float = 2.0,
                     iterations: int = 200, confidence: float = 0.999, min_inliers: int = 8,
                     T_init: np.ndarray | None = None,
                     rng: np.random.Generator | None = None) -> PnPResult:
    """Robust ``T_cam_world`` from world points (N, 3) and their pixels uv (N, 2).

    1. Hypotheses from AP3P on random 4-subsets (plus ``T_init`` if given), scored by inlier count
       (reprojection error < threshold_px, in front of the camera), ties broken by the MSAC cost;
       the iteration count adapts to the best inlier ratio (``confidence``), capped at ``iterations``.
    2. Gauss-Newton on the inliers, re-classification with the refined pose, Gauss-Newton again.
    Data-dependent failures return success=False with T_init (or identity); malformed input raises
    InvalidInputError. Rows with non-finite values are ignored. Deterministic for a given ``rng``
    (default: np.random.default_rng(0)).
    """
    Pw = check_points(points_world, 3, "points_world")
    uv = check_points(uv, 2, "uv")
    if len(Pw) != len(uv):
        raise InvalidInputError(f"{len(Pw)} points_world but {len(uv)} uv")
    K = check_K(K)
    if not (math.isfinite(threshold_px) and threshold_px > 0):
        raise InvalidInputError(f"threshold_px must be positive, got {threshold_px}")
    if not 0.0 < confidence < 1.0:
        raise InvalidInputError(f"confidence must be in (0, 1), got {confidence}")
    T_fallback = np.eye(4) if T_init is None else check_pose(T_init, "T_init")
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(Pw)

    def failure(reason: str) -> PnPResult:
        log.debug("solve_pnp_ransac failed: %s", reason)
        return PnPResult(False, T_fallback.copy(), np.zeros(n, dtype=bool), 0, float("inf"),
                         FAILED_COVARIANCE * np.eye(6))

    rows = np.flatnonzero(np.isfinite(Pw).all(axis=1) & np.isfinite(uv).all(axis=1))
    if len(rows) < max(4, min_inliers):
        return failure(f"{len(rows)} usable correspondences < {max(4, min_inliers)}")
    P, q = Pw[rows], uv[rows]
    th2 = threshold_px**2

    def score(T: np.ndarray) -> tuple[int, float, np.ndarray]:
        e2 = _squared_errors(T, P, q, K)
        mask = e2 < th2
        return int(mask.sum()), float(np.minimum(e2, th2).sum()), mask

    best = (-1, math.inf, None, None)  # (count, msac cost, mask, T)

    def consider(T: np.ndarray) -> bool:
        nonlocal best
        count, cost, mask = score(T)
        if count > best[0] or (count == best[0] and cost < best[1]):
            best = (count, cost, mask, T)
            return True
        return False

    if T_init is not None:
        consider(T_fallback)
    needed = iterations if best[0] <= 0 else needed_iterations(best[0] / len(P), 4, confidence, iterations)
    it = 0
    while it < min(iterations, needed):
        it += 1
        idx = rng.choice(len(P), 4, replace=False)
        T = _minimal_pose(P[idx], q[idx], K)
        if T is not None and consider(T):
            needed = needed_iterations(best[0] / len(P), 4, confidence, iterations)
    count, _, mask, T = best
    if count < max(min_inliers, 4):
        return failure(f"best hypothesis has {max(count, 0)} inliers < {min_inliers} after {it} iterations")

    # Refine on the inliers, re-classify, refine again.
    T, _, _ = refine_pose_gauss_newton(T, P[mask], q[mask], K, huber_px=threshold_px)
    mask = _squared_errors(T, P, q, K) < th2
    if mask.sum() < max(min_inliers, 4):
        return failure(f"{int(mask.sum())} inliers after refinement < {min_inliers}")
    T, cov, rmse = refine_pose_gauss_newton(T, P[mask], q[mask], K)
    if not np.isfinite(T).all() or cov[0, 0] >= FAILED_COVARIANCE:
        return failure("degenerate configuration (singular normal equations)")
    inliers = np.zeros(n, dtype=bool)
    inliers[rows[mask]] = True
    log.debug("solve_pnp_ransac: %d/%d inliers after %d iterations, rmse %.3f px",
              int(mask.sum()), n, it, rmse)
    return PnPResult(True, T, inliers, int(mask.sum()), rmse, cov)
