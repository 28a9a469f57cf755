"""Weighted Procrustes, KP3D Procrustes refinement, RANSAC-Procrustes and two-view triangulation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import project
from kp_vo.geometry.procrustes import (
    procrustes, ransac_procrustes, refine_pose_procrustes, weighted_procrustes,
)
from kp_vo.geometry.se3 import invert, make_pose, rotation_angle_deg, se3_exp, so3_exp, transform
from kp_vo.geometry.triangulation import parallax_deg, triangulate

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def random_pose(rng, rot=1.0, trans=2.0):
    return se3_exp(np.r_[rng.normal(0, rot, 3), rng.normal(0, trans, 3)])


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.booleans())
def test_weighted_procrustes_recovers_clean_transforms(seed, with_scale):
    rng = np.random.default_rng(seed)
    T = random_pose(rng)
    s_true = rng.uniform(0.2, 5.0) if with_scale else 1.0
    src = rng.normal(size=(20, 3)) * 3
    dst = s_true * src @ T[:3, :3].T + T[:3, 3]
    T_est, s = weighted_procrustes(src, dst, weights=rng.uniform(0.1, 2.0, 20), with_scale=with_scale)
    np.testing.assert_allclose(T_est, T, atol=1e-9)
    assert s == pytest.approx(s_true, rel=1e-10)


def test_zero_weighted_outliers_are_ignored():
    rng = np.random.default_rng(1)
    T = random_pose(rng)
    src = rng.normal(size=(30, 3))
    dst = transform(T, src)
    w = np.ones(30)
    dst[:10] += rng.normal(0, 50, (10, 3))
    w[:10] = 0.0
    np.testing.assert_allclose(weighted_procrustes(src, dst, w)[0], T, atol=1e-9)
    assert rotation_angle_deg(procrustes(src, dst)[:3, :3] @ T[:3, :3].T) > 1.0  # unweighted is wrong


@pytest.mark.parametrize("with_scale", [False, True])
def test_planar_and_mirrored_configurations_give_proper_rotations(with_scale):
    rng = np.random.default_rng(2)
    T = random_pose(rng)
    planar = np.c_[rng.normal(size=(15, 2)), np.zeros(15)]
    T_est, _ = weighted_procrustes(planar, transform(T, planar), with_scale=with_scale)
    np.testing.assert_allclose(T_est, T, atol=1e-9)
    # Mirrored target: no rotation fits; the result must still be a rotation (det = +1).
    src = rng.normal(size=(15, 3))
    mirrored = src * [1.0, 1.0, -1.0]
    T_m, s = weighted_procrustes(src, mirrored, with_scale=with_scale)
    assert np.linalg.det(T_m[:3, :3]) == pytest.approx(1.0)
    np.testing.assert_allclose(T_m[:3, :3].T @ T_m[:3, :3], np.eye(3), atol=1e-12)
    assert s > 0


def test_weighted_procrustes_bad_inputs():
    p = np.zeros((5, 3)) + np.arange(5)[:, None]
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p[:2], p[:2])
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p, p[:4])
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p, p, weights=-np.ones(5))
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p, p, weights=np.zeros(5))
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p, p, weights=np.ones(4))
    with pytest.raises(InvalidInputError):
        weighted_procrustes(p[:, :2], p[:, :2])
    bad = p.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidInputError):
        weighted_procrustes(bad, p)


def lifted_scene(rng, n=100):
    """Target-frame points P_t, the true T_c_t, and the context pixels uv_c."""
    T_c_t = se3_exp(np.r_[rng.normal(0, 0.05, 3), rng.normal(0, 0.5, 3)])
    P_t = np.c_[rng.uniform(-5, 5, (n, 2)), rng.uniform(5, 30, n)]
    uv_c, front = project(transform(T_c_t, P_t), K)
    assert front.all()
    return T_c_t, P_t, uv_c


@pytest.mark.parametrize("seed", range(6))
def test_refine_pose_procrustes_improves_a_perturbed_pose(seed):
    rng = np.random.default_rng(seed)
    T_true, P_t, uv_c = lifted_scene(rng)
    T0 = se3_exp(np.r_[rng.normal(0, 0.01, 3), rng.normal(0, 0.2, 3)]) @ T_true

    def errors(T):
        d = invert(T_true) @ T
        uv, _ = project(transform(T, P_t), K)
        return rotation_angle_deg(d[:3, :3]), np.linalg.norm(d[:3, 3]), np.sqrt(np.mean(np.sum((uv - uv_c) ** 2, 1)))

    rot0, trans0, rep0 = errors(T0)
    rot1, trans1, rep1 = errors(refine_pose_procrustes(T0, P_t, uv_c, K))
    # The context points lie on the true rays, so rotation and reprojection improve markedly; the
    # depth error along the rays comes from the initial pose (KP3D eq. 3) and is not removed.
    assert rot1 < 0.5 * rot0
    assert rep1 < rep0
    assert trans1 <= trans0 + 1e-9


def test_refine_pose_procrustes_with_exact_pose_is_a_fixed_point_and_handles_few_points():
    rng = np.random.default_rng(7)
    T_true, P_t, uv_c = lifted_scene(rng)
    np.testing.assert_allclose(refine_pose_procrustes(T_true, P_t, uv_c, K), T_true, atol=1e-9)
    # Points that land behind the context camera are dropped; fewer than 3 left -> unchanged.
    T_behind = make_pose(np.eye(3), np.array([0.0, 0.0, -100.0]))
    np.testing.assert_array_equal(refine_pose_procrustes(T_behind, P_t, uv_c, K), T_behind)
    with pytest.raises(InvalidInputError):
        refine_pose_procrustes(T_true, P_t, uv_c[:-1], K)


def test_ransac_procrustes_with_40_percent_outliers():
    rng = np.random.default_rng(8)
    T = random_pose(rng)
    n = 100
    src = rng.uniform(-5, 5, (n, 3))
    dst = transform(T, src) + rng.normal(0, 0.005, (n, 3))
    out = np.zeros(n, dtype=bool)
    out[rng.choice(n, 40, replace=False)] = True
    dst[out] += rng.uniform(1.0, 5.0, (40, 3)) * rng.choice([-1, 1], (40, 3))
    src[3] = np.nan
    ok, T_est, inl = ransac_procrustes(src, dst, threshold_m=0.05)
    assert ok
    assert rotation_angle_deg(T_est[:3, :3] @ T[:3, :3].T) < 0.2
    assert np.linalg.norm(T_est[:3, 3] - T[:3, 3]) < 0.02
    assert not (inl & out).any() and not inl[3]
    assert inl[~out].sum() >= 58
    # Pure noise fails without raising.
    ok, T_f, inl_f = ransac_procrustes(rng.normal(size=(30, 3)), rng.normal(size=(30, 3)), 0.01, min_inliers=6)
    assert not ok and not inl_f.any()
    np.testing.assert_array_equal(T_f, np.eye(4))
    with pytest.raises(InvalidInputError):
        ransac_procrustes(src, dst, threshold_m=-1.0)


def two_cameras():
    T_c1_w = np.eye(4)
    T_c2_w = invert(make_pose(so3_exp(np.array([0.0, 0.05, 0.0])), np.array([1.0, 0.0, 0.0])))
    return T_c1_w, T_c2_w


def test_triangulation_recovers_points_exactly():
    rng = np.random.default_rng(9)
    T1, T2 = two_cameras()
    X = np.c_[rng.uniform(-3, 3, (50, 2)), rng.uniform(4, 20, 50)]
    uv1, _ = project(transform(T1, X), K)
    uv2, _ = project(transform(T2, X), K)
    X_est, valid = triangulate(T1, T2, uv1, uv2, K)
    assert valid.all()
    np.testing.assert_allclose(X_est, X, atol=1e-7)
    # A generic pose pair too.
    T3 = random_pose(rng, rot=0.1, trans=0.5) @ T2
    uv3, f3 = project(transform(T3, X), K)
    X_est, valid = triangulate(T1, T3, uv1, uv3, K, min_parallax_deg=0.0)
    np.testing.assert_allclose(X_est[valid], X[valid], atol=1e-7)
    assert valid[f3].mean() > 0.9


def test_triangulation_flags_behind_low_parallax_and_bad_reprojection():
    T1, T2 = two_cameras()
    X = np.array([[0.0, 0.0, 10.0],     # fine
                  [0.5, 0.2, 500.0],    # far away: parallax ~0.1 deg
                  [0.2, 0.1, 8.0],      # pixel in view 2 corrupted below
                  [0.0, 0.0, 10.0]])    # mirrored below so it is behind both cameras
    uv1, _ = project(transform(T1, X), K)
    uv2, _ = project(transform(T2, X), K)
    uv2[2] += [0.0, 15.0]
    # Pixels of a point behind both cameras: project the mirrored point through the rays.
    behind = np.array([0.0, 0.0, -10.0])
    uv1[3] = K[:2, :2] @ (behind[:2] / behind[2]) + K[:2, 2]
    pc2 = transform(T2, behind[None])[0]
    uv2[3] = K[:2, :2] @ (pc2[:2] / pc2[2]) + K[:2, 2]
    X_est, valid = triangulate(T1, T2, uv1, uv2, K)
    assert valid.tolist() == [True, False, False, False]
    par = parallax_deg(T1, T2, X[:2])
    assert par[0] == pytest.approx(np.degrees(np.arctan2(1.0, 10.0)), abs=0.5)
    assert par[1] < 0.2
    X_est, valid = triangulate(T1, T2, uv1, uv2, K, min_parallax_deg=0.0)
    assert valid[1]


def test_triangulation_bad_inputs():
    T1, T2 = two_cameras()
    uv = np.zeros((3, 2))
    with pytest.raises(InvalidInputError):
        triangulate(T1, T2, uv, uv[:2], K)
    with pytest.raises(InvalidInputError):
        triangulate(T1, np.eye(3), uv, uv, K)
    with pytest.raises(InvalidInputError):
        triangulate(T1, T2, uv, uv, np.zeros((3, 3)))
    X, valid = triangulate(T1, T2, np.zeros((0, 2)), np.zeros((0, 2)), K)
    assert X.shape == (0, 3) and valid.shape == (0,)


@pytest.mark.parametrize("camera_ahead", [1, 2])
def test_forward_motion_triangulation_checks_each_view_on_its_own(camera_ahead):
    """Under a 3 m forward step DLT puts most of a bad match's error into the view of the camera ahead:
    7.5 px off in the camera behind leaves 1.8 px there and 10.3 px ahead, so a check of only one view
    passes it whenever the bad pixel is on that view's side."""
    ahead = invert(make_pose(np.eye(3), np.array([0.0, 0.0, 3.0])))
    T1, T2 = (ahead, np.eye(4)) if camera_ahead == 1 else (np.eye(4), ahead)
    X = np.array([[4.0, 2.0, 8.0], [-3.0, 0.5, 12.0]])
    uv1, _ = project(transform(T1, X), K)
    uv2, _ = project(transform(T2, X), K)
    _, valid = triangulate(T1, T2, uv1, uv2, K, min_parallax_deg=0.5)
    assert valid.all()
    # Move the first point's pixel in the camera behind by 7.5 px across its epipolar line (which runs
    # radially from the principal point, the epipole of a straight forward step).
    uv = uv2 if camera_ahead == 1 else uv1
    radial = (uv[0] - K[:2, 2]) / np.linalg.norm(uv[0] - K[:2, 2])
    uv[0] += 7.5 * np.array([-radial[1], radial[0]])
    _, valid = triangulate(T1, T2, uv1, uv2, K, min_parallax_deg=0.5)
    assert valid.tolist() == [False, True]


@pytest.mark.parametrize("with_scale", [False, True])
def test_mirrored_procrustes_scale_is_the_least_squares_scale_of_its_rotation(with_scale):
    """For mirrored data the best proper rotation leaves a residual; Umeyama's scale (with the reflection
    sign) is then the least-squares scale given that rotation: sum(xd . R xs) / sum(|xs|^2)."""
    rng = np.random.default_rng(8)
    src = rng.normal(size=(30, 3)) * [3.0, 2.0, 1.0]
    dst = 1.7 * src * [1.0, 1.0, -1.0] + [0.5, -1.0, 2.0]
    T, s = weighted_procrustes(src, dst, with_scale=with_scale)
    if not with_scale:
        assert s == 1.0
        return
    xs, xd = src - src.mean(axis=0), dst - dst.mean(axis=0)
    expected = float(np.sum(xd * (xs @ T[:3, :3].T)) / np.sum(xs * xs))
    assert s == pytest.approx(expected, rel=1e-9)
    assert 0 < s < 1.7  # the mirrored axis cannot be matched, so the fit shrinks
