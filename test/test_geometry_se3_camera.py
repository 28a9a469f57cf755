"""SE(3)/SO(3) helpers and the pinhole camera model."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import backproject, lift_keypoints, project, sample_depth
from kp_vo.geometry.se3 import (
    check_pose, invert, make_pose, nearest_rotation, rotation_angle_deg, se3_exp, se3_log, skew, so3_exp,
    so3_log, transform,
)

K = np.array([[500.0, 0.0, 320.0], [0.0, 480.0, 240.0], [0.0, 0.0, 1.0]])

twists = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=6, max_size=6).map(np.array)


def random_rotation_vector(rng, max_angle=math.pi - 1e-3):
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    return axis * rng.uniform(0.0, max_angle)


@settings(max_examples=60, deadline=None)
@given(twists)
def test_se3_exp_log_round_trip(xi):
    if np.linalg.norm(xi[:3]) >= math.pi - 1e-6:  # the log returns the angle in [0, pi]
        xi[:3] *= (math.pi - 0.01) / np.linalg.norm(xi[:3])
    T = se3_exp(xi)
    check_pose(T)
    np.testing.assert_allclose(se3_log(T), xi, atol=1e-9)
    np.testing.assert_allclose(se3_exp(se3_log(T)), T, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(twists)
def test_invert_and_transform(xi):
    T = se3_exp(xi)
    np.testing.assert_allclose(invert(T) @ T, np.eye(4), atol=1e-12)
    pts = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_allclose(transform(invert(T), transform(T, pts)), pts, atol=1e-12)


def test_se3_exp_uses_v_matrix():
    # A pure rotation about z by 90 deg with rho along x moves the origin along a circle arc:
    # t = V rho with V = I + (1-cos)/th^2 W + (th - sin)/th^3 W^2.
    th = math.pi / 2
    T = se3_exp(np.array([0, 0, th, 1.0, 0, 0]))
    expected_t = np.array([math.sin(th) / th, (1 - math.cos(th)) / th, 0.0])
    np.testing.assert_allclose(T[:3, 3], expected_t, atol=1e-12)


def test_so3_small_angles_and_skew():
    w = np.array([1e-9, -2e-9, 3e-9])
    np.testing.assert_allclose(so3_log(so3_exp(w)), w, rtol=1e-6, atol=1e-18)
    v = np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(skew(w) @ v, np.cross(w, v), atol=1e-20)
    np.testing.assert_allclose(so3_log(np.eye(3)), np.zeros(3))


@pytest.mark.parametrize("eps", [0.0, 1e-9, 1e-6, 1e-4, 1e-2])
def test_so3_log_near_pi(eps):
    rng = np.random.default_rng(3)
    for _ in range(20):
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        w = axis * (math.pi - eps)
        w_back = so3_log(so3_exp(w))
        assert abs(np.linalg.norm(w_back) - (math.pi - eps)) < 1e-7
        # Same rotation (the axis sign is ambiguous exactly at pi).
        np.testing.assert_allclose(so3_exp(w_back), so3_exp(w), atol=1e-9)
        if eps >= 1e-6:
            np.testing.assert_allclose(w_back, w, atol=1e-6)


def test_rotation_angle_and_nearest_rotation():
    rng = np.random.default_rng(4)
    w = random_rotation_vector(rng)
    R = so3_exp(w)
    assert rotation_angle_deg(R) == pytest.approx(math.degrees(np.linalg.norm(w)), abs=1e-9)
    noisy = R + 1e-3 * rng.normal(size=(3, 3))
    Rn = nearest_rotation(noisy)
    np.testing.assert_allclose(Rn.T @ Rn, np.eye(3), atol=1e-12)
    assert np.linalg.det(Rn) == pytest.approx(1.0)
    assert rotation_angle_deg(Rn.T @ R) < 0.5
    # A reflection is mapped to a proper rotation.
    assert np.linalg.det(nearest_rotation(np.diag([1.0, 1.0, -1.0]))) == pytest.approx(1.0)


def test_check_pose_rejects_bad_poses():
    good = make_pose(so3_exp(np.array([0.1, 0.2, 0.3])), np.array([1.0, 2.0, 3.0]))
    assert check_pose(good) is not None
    bad = [np.eye(3), good * np.array([[1], [1], [1], [2]]), np.diag([1.0, 1.0, -1.0, 1.0]),
           np.where(np.eye(4) > 0, np.nan, 0.0), 2.0 * good]
    for T in bad:
        with pytest.raises(InvalidInputError):
            check_pose(T, "T_test")
    with pytest.raises(InvalidInputError):
        se3_exp(np.zeros(5))
    with pytest.raises(InvalidInputError):
        so3_log(np.full((3, 3), np.nan))


def test_project_backproject_round_trip():
    rng = np.random.default_rng(5)
    P = np.c_[rng.uniform(-3, 3, (50, 2)), rng.uniform(0.5, 30, 50)]
    uv, front = project(P, K)
    assert front.all()
    np.testing.assert_allclose(backproject(uv, P[:, 2], K), P, atol=1e-9)
    # The principal point sees the optical axis.
    uv0, _ = project(np.array([[0.0, 0.0, 2.0]]), K)
    np.testing.assert_allclose(uv0, [[320.0, 240.0]])


def test_project_behind_camera_does_not_raise():
    P = np.array([[1.0, 1.0, -2.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    uv, front = project(P, K)
    assert front.tolist() == [False, False, True]
    assert not np.isinf(uv).any()
    with pytest.raises(InvalidInputError):
        project(np.zeros((3, 2)), K)
    with pytest.raises(InvalidInputError):
        project(P, np.eye(2))
    with pytest.raises(InvalidInputError):
        project(P, np.diag([-1.0, 1.0, 1.0]))


def test_sample_depth_invalid_handling():
    D = np.full((4, 5), 2.0, dtype=np.float32)
    D[0, 0] = 0.0
    D[0, 1] = np.nan
    D[0, 2] = np.inf
    D[0, 3] = -1.0
    D[3, 4] = 7.0
    uv = np.array([[0, 0], [1, 0], [2, 0], [3, 0], [4.4, 2.6], [-0.6, 1], [5.2, 1], [np.nan, 1], [2.2, 1.9]])
    d = sample_depth(D, uv)
    np.testing.assert_array_equal(d, [0, 0, 0, 0, 7.0, 0, 0, 0, 2.0])
    assert d.dtype == np.float64


def test_sample_depth_bilinear():
    D = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 0.0], [5.0, 6.0, 7.0]], dtype=np.float32)
    uv = np.array([[0.5, 0.5], [0.25, 0.0], [1.6, 0.3], [1.4, 1.2], [2.0, 2.0]])
    d = sample_depth(D, uv, mode="bilinear")
    assert d[0] == pytest.approx(2.5)            # mean of 1, 2, 3, 4
    assert d[1] == pytest.approx(1.25)           # along the top edge
    assert d[2] == pytest.approx(3.0)            # neighbour (2, 1) invalid -> nearest pixel (2, 0)
    assert d[3] == pytest.approx(4.0)            # neighbour (2, 1) invalid -> nearest pixel (1, 1)
    assert d[4] == pytest.approx(7.0)            # last pixel: no 2x2 box -> nearest
    with pytest.raises(InvalidInputError):
        sample_depth(D, uv, mode="cubic")
    with pytest.raises(InvalidInputError):
        sample_depth(np.zeros((2, 2, 2)), uv)


def test_lift_keypoints():
    D = np.zeros((480, 640), dtype=np.float32)
    D[100:200, 100:200] = 4.0
    uv = np.array([[150.0, 150.0], [10.0, 10.0], [700.0, 10.0]])
    P, valid = lift_keypoints(uv, D, K)
    assert valid.tolist() == [True, False, False]
    np.testing.assert_allclose(P[0], [(150 - 320) / 500 * 4, (150 - 240) / 480 * 4, 4.0])
    assert np.isnan(P[1:]).all()


def test_se3_exp_many_equals_se3_exp_row_by_row():
    from kp_vo.geometry.se3 import se3_exp_many

    rng = np.random.default_rng(7)
    xi = rng.normal(size=(40, 6))
    xi[:10, :3] *= 1e-6          # below the small-angle threshold: the Taylor branch
    xi[10:12, :3] = 0.0
    xi[12:20, :3] *= 1.5         # large rotations
    np.testing.assert_allclose(se3_exp_many(xi), np.stack([se3_exp(x) for x in xi]), atol=1e-14)
    assert se3_exp_many(np.zeros((0, 6))).shape == (0, 4, 4)
    with pytest.raises(InvalidInputError):
        se3_exp_many(np.zeros((3, 5)))
    with pytest.raises(InvalidInputError):
        se3_exp_many(np.full((1, 6), np.nan))


def test_project_unchecked_matches_project_in_front_and_stays_finite_behind():
    from kp_vo.geometry.camera import project, project_unchecked
    rng = np.random.default_rng(3)
    P = rng.normal(size=(50, 3)) + [0, 0, 0.5]
    K = np.array([[500.0, 2.0, 320.0], [0, 480.0, 240.0], [0, 0, 1]])
    uv, front = project(P, K)
    uv_fast, front_fast = project_unchecked(P, K)
    np.testing.assert_array_equal(front, front_fast)
    assert 0 < front.sum() < len(P) and np.isfinite(uv_fast).all() and np.isnan(uv[~front]).all()
    np.testing.assert_array_equal(uv[front], uv_fast[front])


def test_adjoint_translation_first_maps_twists_between_frames():
    from kp_vo.geometry.se3 import adjoint_translation_first

    rng = np.random.default_rng(8)
    A, B = se3_exp(rng.normal(size=6)), se3_exp(rng.normal(size=6))
    np.testing.assert_allclose(adjoint_translation_first(A @ B),
                               adjoint_translation_first(A) @ adjoint_translation_first(B), atol=1e-12)
    # A body twist (v, w) of frame b seen from a frame a offset by t (same orientation): (v + t x w, w).
    t, v, w = np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.0, 0.0]), np.array([0.0, 0.0, 0.5])
    np.testing.assert_allclose(adjoint_translation_first(make_pose(np.eye(3), t)) @ np.r_[v, w],
                               np.r_[v + np.cross(t, w), w])
