"""Camera pose from 3D-2D correspondences: RANSAC-PnP then Gauss-Newton on se(3) (KP3D appendix F).

The pose is ``T_cam_world`` (4x4): it maps world points into the camera optical frame. The refinement
minimises the reprojection error sum_i |pi(T P_i) - uv_i|^2 (eq. 14-15) over a LEFT perturbation
``T <- exp(xi) T`` with ``xi = [omega, rho]`` (eq. 16-17). Covariances are returned in ROS order
(tx, ty, tz, rx, ry, rz). The robust search and the iterations run in PoseLib (C++ LO-RANSAC and
Levenberg-Marquardt): 10-15x faster than the same steps in numpy and no less accurate (docs/design.md);
the covariance is computed here from the analytic Jacobian.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import poselib

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import check_K, check_points, project_unchecked
from kp_vo.geometry.robust import huber_cost, huber_weights
from kp_vo.geometry.se3 import check_pose, make_pose

log = logging.getLogger(__name__)

MIN_SIGMA2_PX2 = 0.25  # floor of the residual variance used for the covariance (px^2)
FAILED_COVARIANCE = 1e6  # diagonal of the covariance reported when no pose could be estimated
_BEHIND_PX = 1e3  # reprojection error charged to a point that falls behind the camera
_TWIST_TO_ROS = [3, 4, 5, 0, 1, 2]  # [omega, rho] -> (tx, ty, tz, rx, ry, rz)
MIN_ITERATIONS = 50  # RANSAC iterations drawn even when the adaptive count says fewer suffice


@dataclass
class PnPResult:
    """Outcome of :func:`solve_pnp_ransac`.

    success: a pose with enough inliers was found.
    T_cam_world: (4, 4) camera pose (world -> camera); T_init or identity on failure.
    inliers: (N,) bool over the input correspondences.
    num_inliers: inliers.sum().
    reprojection_rmse: RMS reprojection error over the inliers (px); inf on failure.
    covariance: (6, 6) covariance of the left perturbation of T_cam_world in ROS order
        (tx, ty, tz, rx, ry, rz); a large diagonal on failure; None when the caller asked for no
        final refinement.
    """

    success: bool
    T_cam_world: np.ndarray
    inliers: np.ndarray
    num_inliers: int
    reprojection_rmse: float
    covariance: np.ndarray | None = field(default_factory=lambda: FAILED_COVARIANCE * np.eye(6))


def _squared_errors(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Squared reprojection errors (N,) px^2; points behind the camera get _BEHIND_PX^2."""
    Pc = Pw @ T[:3, :3].T + T[:3, 3]
    proj, front = project_unchecked(Pc, K)
    e2 = np.sum((proj - uv) ** 2, axis=1)
    return np.where(front, e2, _BEHIND_PX**2)


def _linearize(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray):
    """Residuals e = pi(T P) - uv (N, 2), Jacobians de/dxi (N, 2, 6) and the in-front mask (N,)."""
    Pc = Pw @ T[:3, :3].T + T[:3, 3]
    proj, front = project_unchecked(Pc, K)
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


def _covariance(T: np.ndarray, Pw: np.ndarray, uv: np.ndarray, K: np.ndarray,
                huber_px: float | None) -> np.ndarray:
    """sigma^2 (J^T W J)^-1 in ROS order, sigma^2 = weighted residual variance floored at MIN_SIGMA2_PX2."""
    e, J, front = _linearize(T, Pw, uv, K)
    e, J = e[front], J[front]
    n = len(e)
    if n < 3:
        return FAILED_COVARIANCE * np.eye(6)
    w = huber_weights(np.sqrt(np.sum(e**2, axis=1)), huber_px)
    J_rows = J.reshape(-1, 6)                                 # (2n, 6): the u and v rows of every point
    H = (J_rows * np.repeat(w, 2)[:, None]).T @ J_rows        # sum_n w_n J_n^T J_n
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
                             K: np.ndarray, iterations: int = 10, huber_px: float | None = None,
                             covariance: bool = True) -> tuple[np.ndarray, np.ndarray | None, float]:
    """Non-linear least-squares refinement of ``T_cam_world`` (4, 4) on world points (N, 3) seen at uv (N, 2).

    Minimises sum_i rho(|pi(T P_i) - uv_i|^2) (eq. 14-15) with PoseLib's Levenberg-Marquardt on a
    left-perturbed pose (C++; at most ``iterations`` steps); rho is Huber with threshold ``huber_px``
    (IRLS) or plain squares when it is None. Never returns a pose with a higher cost than the input.
    Rows with non-finite values are ignored.
    Returns (T_cam_world (4, 4), covariance (6, 6) ROS order (None when ``covariance`` is False: a
    refinement whose covariance nobody reads skips it), reprojection RMSE px over in-front points).
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

    e2 = _squared_errors(T, Pw, uv, K)
    if iterations > 0:
        pose, _ = poselib.refine_absolute_pose(_deskew(uv, K), Pw, _to_poselib(T), _poselib_camera(K),
                                               _bundle_options(huber_px, iterations))
        T_new = _from_poselib(pose)
        if np.isfinite(T_new).all():
            e2_new = _squared_errors(T_new, Pw, uv, K)
            if huber_cost(np.sqrt(e2_new), huber_px) <= huber_cost(np.sqrt(e2), huber_px):
                T, e2 = T_new, e2_new

    front = e2 < _BEHIND_PX**2
    rmse = float(np.sqrt(e2[front].mean())) if front.any() else float("inf")
    return T, _covariance(T, Pw, uv, K, huber_px) if covariance else None, rmse


def solve_pnp_ransac(points_world: np.ndarray, uv: np.ndarray, K: np.ndarray, threshold_px: float = 2.0,
                     iterations: int = 200, confidence: float = 0.999, min_inliers: int = 8,
                     T_init: np.ndarray | None = None,
                     rng: np.random.Generator | None = None, final_refinement: bool = True) -> PnPResult:
    """Robust ``T_cam_world`` from world points (N, 3) and their pixels uv (N, 2).

    PoseLib's LO-RANSAC (C++): P3P hypotheses on random minimal samples plus ``T_init`` when given,
    MSAC scoring (reprojection error < threshold_px, in front of the camera), local optimisation of
    every new best model, the iteration count adapted to the inlier ratio (``confidence``) within
    [min(``iterations``, MIN_ITERATIONS), ``iterations``], then a Huber refinement on the inliers.
    A final Gauss-Newton on the re-classified inliers gives the covariance (skipped with
    ``final_refinement=False``, for a caller that refines the pose itself: the pose is then
    PoseLib's, the covariance None and the RMSE that of PoseLib's pose). Data-dependent failures
    return success=False with T_init (or identity); malformed input raises InvalidInputError. Rows
    with non-finite values are ignored. Deterministic for a given ``rng`` (default:
    np.random.default_rng(0)), which seeds PoseLib's sampler.
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
    ransac_options = {"max_reproj_error": float(threshold_px), "max_iterations": int(iterations),
                      "min_iterations": min(int(iterations), MIN_ITERATIONS), "success_prob": float(confidence),
                      "seed": int(rng.integers(2**31 - 1))}
    pose, info = poselib.estimate_absolute_pose(_deskew(q, K), P, _poselib_camera(K), ransac_options,
                                                _bundle_options(threshold_px, 25),
                                                None if T_init is None else _to_poselib(T_fallback))
    T = _from_poselib(pose)
    if not np.isfinite(T).all() or info["num_inliers"] < max(min_inliers, 4):
        return failure(f"best hypothesis has {info['num_inliers']} inliers < {min_inliers} "
                       f"after {info['iterations']} iterations")

    # Re-classify with the refined pose, then a plain least-squares fit on the inliers for the covariance.
    mask = _squared_errors(T, P, q, K) < threshold_px**2
    if mask.sum() < max(min_inliers, 4):
        return failure(f"{int(mask.sum())} inliers after refinement < {min_inliers}")
    if final_refinement:
        T, cov, rmse = refine_pose_gauss_newton(T, P[mask], q[mask], K)
        if not np.isfinite(T).all() or cov[0, 0] >= FAILED_COVARIANCE:
            return failure("degenerate configuration (singular normal equations)")
    else:
        cov, rmse = None, float(np.sqrt(_squared_errors(T, P[mask], q[mask], K).mean()))
    inliers = np.zeros(n, dtype=bool)
    inliers[rows[mask]] = True
    log.debug("solve_pnp_ransac: %d/%d inliers after %d iterations, rmse %.3f px",
              int(mask.sum()), n, info["iterations"], rmse)
    return PnPResult(True, T, inliers, int(mask.sum()), rmse, cov)


# -- PoseLib adapters --------------------------------------------------------------------------

def _poselib_camera(K: np.ndarray) -> dict:
    """PoseLib's PINHOLE camera of K (3, 3); the skew is removed from the pixels by :func:`_deskew`."""
    return {"model": "PINHOLE", "width": 0, "height": 0, "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}


def _deskew(uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels (N, 2) of K mapped to the zero-skew pinhole of :func:`_poselib_camera`: u - s (v - cy) / fy."""
    if K[0, 1] == 0.0:
        return np.ascontiguousarray(uv, dtype=np.float64)
    out = np.array(uv, dtype=np.float64)
    out[:, 0] -= K[0, 1] * (out[:, 1] - K[1, 2]) / K[1, 1]
    return out


def _bundle_options(huber_px: float | None, iterations: int) -> dict:
    loss = {"loss_type": "TRIVIAL"} if huber_px is None else {"loss_type": "HUBER", "loss_scale": float(huber_px)}
    return {"max_iterations": int(iterations), **loss}


def _to_poselib(T_cam_world: np.ndarray) -> poselib.CameraPose:
    pose = poselib.CameraPose()
    pose.R = T_cam_world[:3, :3]
    pose.t = T_cam_world[:3, 3]
    return pose


def _from_poselib(pose: poselib.CameraPose) -> np.ndarray:
    return make_pose(np.asarray(pose.R), np.asarray(pose.t))
