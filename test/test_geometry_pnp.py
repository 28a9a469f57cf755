"""RANSAC-PnP + Gauss-Newton on synthetic scenes with known poses."""

import numpy as np
import pytest

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import project
from kp_vo.geometry.pnp import PnPResult, refine_pose_gauss_newton, solve_pnp_ransac
from kp_vo.geometry.se3 import invert, rotation_angle_deg, se3_exp, transform

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
SCENE_DEPTH = 20.0


def make_scene(seed, n=200, outlier_frac=0.3, noise_px=0.5):
    """World points seen by a random camera; returns (T_cam_world, points_world, uv, is_outlier)."""
    rng = np.random.default_rng(seed)
    T = se3_exp(np.r_[rng.normal(0, 0.3, 3), rng.normal(0, 2.0, 3)])
    uv_true = np.c_[rng.uniform(0, 640, n), rng.uniform(0, 480, n)]
    z = rng.uniform(3.0, SCENE_DEPTH, n)
    P_cam = np.c_[(uv_true[:, 0] - 320) / 520 * z, (uv_true[:, 1] - 240) / 520 * z, z]
    P_world = transform(invert(T), P_cam)
    uv = uv_true + rng.normal(0, noise_px, (n, 2))
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, int(outlier_frac * n), replace=False)] = True
    uv[outlier] = rng.uniform(0, 640, (outlier.sum(), 2))
    # Make the outliers real outliers (at least 10 px from the truth).
    far = np.linalg.norm(uv[outlier] - uv_true[outlier], axis=1) < 10
    uv[np.flatnonzero(outlier)[far]] += 50.0
    return T, P_world, uv, outlier


def pose_errors(T_est, T_true):
    rot = rotation_angle_deg(T_est[:3, :3] @ T_true[:3, :3].T)
    # Camera-centre error.
    trans = np.linalg.norm(invert(T_est)[:3, 3] - invert(T_true)[:3, 3])
    return rot, trans


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pnp_ransac_recovers_pose_with_outliers(seed):
    T_true, Pw, uv, outlier = make_scene(seed)
    res = solve_pnp_ransac(Pw, uv, K, threshold_px=2.0)
    assert isinstance(res, PnPResult) and res.success
    rot, trans = pose_errors(res.T_cam_world, T_true)
    assert rot < 0.2
    assert trans < 0.01 * SCENE_DEPTH
    assert not (res.inliers & outlier).any()  # every outlier is reported as an outlier
    assert res.inliers[~outlier].mean() > 0.95
    assert res.num_inliers == res.inliers.sum()
    assert 0.3 < res.reprojection_rmse < 1.2  # ~ sqrt(2) * 0.5 px
    C = res.covariance
    assert C.shape == (6, 6)
    np.testing.assert_allclose(C, C.T, atol=1e-18)
    assert np.linalg.eigvalsh(C).min() > 0
    # Without the final least-squares refinement (a caller refining it itself): PoseLib's pose, as good.
    raw = solve_pnp_ransac(Pw, uv, K, threshold_px=2.0, final_refinement=False)
    assert raw.success and raw.covariance is None
    assert not (raw.inliers & outlier).any() and raw.inliers[~outlier].mean() > 0.95
    assert pose_errors(raw.T_cam_world, T_true)[0] < 0.2 and pose_errors(raw.T_cam_world, T_true)[1] < 0.01 * SCENE_DEPTH
    assert 0.3 < raw.reprojection_rmse < 1.2


def test_pnp_is_deterministic_and_ignores_nonfinite_rows():
    T_true, Pw, uv, outlier = make_scene(5)
    Pw[3] = np.nan
    uv[7] = np.inf
    a = solve_pnp_ransac(Pw, uv, K, rng=np.random.default_rng(9))
    b = solve_pnp_ransac(Pw, uv, K, rng=np.random.default_rng(9))
    assert a.success
    np.testing.assert_array_equal(a.T_cam_world, b.T_cam_world)
    np.testing.assert_array_equal(a.inliers, b.inliers)
    assert not a.inliers[3] and not a.inliers[7]


def test_pnp_uses_t_init_and_fails_gracefully():
    T_true, Pw, uv, outlier = make_scene(6)
    res = solve_pnp_ransac(Pw, uv, K, iterations=1, T_init=T_true)  # one sample, but T_init is scored
    assert res.success and pose_errors(res.T_cam_world, T_true)[0] < 0.2
    # Too few points.
    T_init = se3_exp(np.array([0, 0, 0.1, 1, 0, 0]))
    res = solve_pnp_ransac(Pw[:5], uv[:5], K, T_init=T_init)
    assert not res.success and res.num_inliers == 0 and not res.inliers.any()
    np.testing.assert_array_equal(res.T_cam_world, T_init)
    # Pure noise: no consensus.
    rng = np.random.default_rng(0)
    res = solve_pnp_ransac(rng.normal(size=(100, 3)) + [0, 0, 10], rng.uniform(0, 640, (100, 2)), K,
                           min_inliers=30)
    assert not res.success
    np.testing.assert_array_equal(res.T_cam_world, np.eye(4))


def test_pnp_bad_inputs_raise():
    T_true, Pw, uv, _ = make_scene(7, n=20)
    with pytest.raises(InvalidInputError):
        solve_pnp_ransac(Pw, uv[:-1], K)
    with pytest.raises(InvalidInputError):
        solve_pnp_ransac(Pw[:, :2], uv, K)
    with pytest.raises(InvalidInputError):
        solve_pnp_ransac(Pw, uv, K * np.nan)
    with pytest.raises(InvalidInputError):
        solve_pnp_ransac(Pw, uv, K, T_init=np.full((4, 4), np.nan))


@pytest.mark.parametrize("seed", [10, 11, 12, 13])
def test_gauss_newton_never_worsens_and_converges(seed):
    rng = np.random.default_rng(seed)
    T_true, Pw, uv, outlier = make_scene(seed, outlier_frac=0.0, noise_px=0.5)

    def cost(T):
        proj, _ = project(transform(T, Pw), K)
        return np.sum((proj - uv) ** 2)

    T0 = se3_exp(np.r_[rng.normal(0, 0.03, 3), rng.normal(0, 0.2, 3)]) @ T_true
    T, C, rmse = refine_pose_gauss_newton(T0, Pw, uv, K, iterations=10)
    assert cost(T) <= cost(T0)
    assert cost(T) <= cost(T_true) + 1e-6  # least-squares optimum beats the noisy truth
    assert pose_errors(T, T_true)[0] < 0.1
    assert rmse == pytest.approx(np.sqrt(cost(T) / len(Pw)), rel=1e-9)
    assert np.linalg.eigvalsh(C).min() > 0 and np.allclose(C, C.T)
    # Starting at the optimum, it does not move away; a zero-iteration call returns the input.
    T2, _, _ = refine_pose_gauss_newton(T, Pw, uv, K, iterations=5)
    assert cost(T2) <= cost(T) + 1e-9
    T3, _, _ = refine_pose_gauss_newton(T0, Pw, uv, K, iterations=0)
    np.testing.assert_array_equal(T3, T0)
    # Without the covariance (nobody reads it): the same pose and RMSE.
    T4, C4, rmse4 = refine_pose_gauss_newton(T0, Pw, uv, K, iterations=10, covariance=False)
    assert C4 is None and rmse4 == rmse
    np.testing.assert_array_equal(T4, T)


def test_gauss_newton_with_huber_resists_outliers_and_never_worsens():
    T_true, Pw, uv, outlier = make_scene(20, outlier_frac=0.1)
    T0 = se3_exp(np.array([0.01, -0.01, 0.005, 0.05, 0.05, -0.05])) @ T_true
    T_h, _, _ = refine_pose_gauss_newton(T0, Pw, uv, K, iterations=20, huber_px=2.0)
    assert pose_errors(T_h, T_true)[0] < pose_errors(T0, T_true)[0]
    # From a pose far away (points partly behind the camera) it may not converge but never worsens.
    T_bad = se3_exp(np.array([0.0, 2.5, 0.0, 0.0, 0.0, 0.0])) @ T_true

    def huber_cost(T):
        proj, front = project(transform(T, Pw), K)
        r = np.where(front, np.linalg.norm(proj - uv, axis=1), 1e3)
        return np.sum(np.where(r <= 2.0, r**2, 4.0 * r - 4.0))

    T_out, _, _ = refine_pose_gauss_newton(T_bad, Pw, uv, K, huber_px=2.0)
    assert huber_cost(T_out) <= huber_cost(T_bad)


def test_covariance_matches_numeric_jacobian_in_ros_order():
    """C = sigma^2 (J^T J)^-1 for T <- exp(xi) T, with xi re-ordered to (tx, ty, tz, rx, ry, rz)."""
    T_true, Pw, uv, _ = make_scene(30, n=60, outlier_frac=0.0, noise_px=1.0)
    T, C, rmse = refine_pose_gauss_newton(T_true, Pw, uv, K, iterations=10)

    def residuals(T_):
        proj, _ = project(transform(T_, Pw), K)
        return (proj - uv).ravel()

    e = residuals(T)
    J = np.zeros((e.size, 6))
    h = 1e-7
    for k, twist_index in enumerate([3, 4, 5, 0, 1, 2]):  # ROS order -> [omega, rho] slot
        d = np.zeros(6)
        d[twist_index] = h
        J[:, k] = (residuals(se3_exp(d) @ T) - residuals(se3_exp(-d) @ T)) / (2 * h)
    sigma2 = max(e @ e / (e.size - 6), 0.25)
    C_ref = sigma2 * np.linalg.inv(J.T @ J)
    np.testing.assert_allclose(C, C_ref, rtol=1e-4, atol=1e-12)
    assert rmse == pytest.approx(np.sqrt(e @ e / len(Pw)))


def test_covariance_floor_on_noise_free_data():
    T_true, Pw, uv, _ = make_scene(31, n=60, outlier_frac=0.0, noise_px=0.0)
    _, C_clean, rmse = refine_pose_gauss_newton(T_true, Pw, uv, K)
    _, C_noisy, _ = refine_pose_gauss_newton(T_true, Pw, uv + 0.1, K)
    assert rmse < 1e-6
    # sigma^2 is floored at 0.25 px^2, so a perfect fit does not claim a zero covariance.
    assert np.linalg.eigvalsh(C_clean).min() > 0
    np.testing.assert_allclose(C_clean, C_noisy, rtol=1e-2, atol=1e-2 * np.abs(C_noisy).max())


def test_only_the_motion_prior_can_solve_a_mostly_outlier_problem():
    """12 true correspondences among 300: one random minimal sample almost never holds 3 of them, so
    with a single RANSAC iteration only the scored prior T_init finds the pose."""
    T_true, Pw, uv, _ = make_scene(21, n=300, outlier_frac=0.96, noise_px=0.3)
    blind = solve_pnp_ransac(Pw, uv, K, iterations=1, min_inliers=10, rng=np.random.default_rng(0))
    assert not blind.success or pose_errors(blind.T_cam_world, T_true)[1] > 0.1
    T_prior = se3_exp(np.r_[0.002, -0.001, 0.001, 0.02, 0.01, -0.02]) @ T_true  # a prior close to the truth
    res = solve_pnp_ransac(Pw, uv, K, iterations=1, min_inliers=10, T_init=T_prior, rng=np.random.default_rng(0))
    assert res.success and res.num_inliers >= 10
    rot, trans = pose_errors(res.T_cam_world, T_true)
    assert rot < 0.2 and trans < 0.05
