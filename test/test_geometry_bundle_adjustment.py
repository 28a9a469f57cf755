"""Bundle adjustment: recovers a perturbed window exactly on clean data, keeps fixed cameras, shrugs off outliers."""

import numpy as np
import pytest

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.bundle_adjustment import bundle_adjust
from kp_vo.geometry.camera import project
from kp_vo.geometry.se3 import invert, se3_exp, transform

K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])


def _scene(rng, num_cams=5, num_points=300):
    """Cameras moving sideways along x, looking down +z at points 4-10 m away; every point seen by every camera."""
    T_world_cam = [se3_exp(np.r_[rng.normal(0, 0.02, 3), 0.3 * c, rng.normal(0, 0.02, 2)]) for c in range(num_cams)]
    T_cw = np.stack([invert(T) for T in T_world_cam])
    points = np.c_[rng.uniform(-3, 4, num_points), rng.uniform(-2, 2, num_points), rng.uniform(4, 10, num_points)]
    cam, pt, uv = [], [], []
    for c in range(num_cams):
        q, front = project(transform(T_cw[c], points), K)
        assert front.all()
        cam += [c] * num_points
        pt += list(range(num_points))
        uv.append(q)
    return T_cw, points, np.array(cam), np.array(pt), np.concatenate(uv)


def _perturbed(rng, T_cw, points, fixed):
    T = T_cw.copy()
    for c in np.flatnonzero(~fixed):
        T[c] = se3_exp(rng.normal(0, [0.01, 0.01, 0.01, 0.05, 0.05, 0.05])) @ T[c]
    return T, points + rng.normal(0, 0.1, points.shape)


def test_recovers_clean_window_exactly():
    rng = np.random.default_rng(0)
    T_cw, points, cam, pt, uv = _scene(rng)
    fixed = np.array([True, True, False, False, False])
    T0, P0 = _perturbed(rng, T_cw, points, fixed)
    T, P, residual = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, max_iterations=30)
    assert residual.max() < 1e-4
    np.testing.assert_allclose(T, T_cw, atol=1e-6)
    np.testing.assert_allclose(P, points, atol=1e-5)
    np.testing.assert_array_equal(T[:2], T0[:2])  # fixed cameras untouched


def test_huber_limits_outliers_and_never_increases_cost():
    rng = np.random.default_rng(1)
    T_cw, points, cam, pt, uv = _scene(rng)
    uv = uv + rng.normal(0, 0.5, uv.shape)
    bad = rng.choice(len(uv), len(uv) // 20, replace=False)
    uv[bad] += rng.uniform(20, 60, (len(bad), 2))
    fixed = np.array([True, True, False, False, False])
    T0, P0 = _perturbed(rng, T_cw, points, fixed)
    T, P, residual = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, huber_px=1.0, max_iterations=30)
    good = np.setdiff1d(np.arange(len(uv)), bad)
    assert np.median(residual[good]) < 1.0
    centre_err = [np.linalg.norm(invert(a)[:3, 3] - invert(b)[:3, 3]) for a, b in zip(T, T_cw)]
    assert max(centre_err) < 0.01  # metres, for cameras 0.3 m apart and points 4-10 m away


def test_bad_shapes_raise():
    with pytest.raises(InvalidInputError):
        bundle_adjust(np.eye(4), np.zeros((3, 3)), [0], [0], [[0, 0]], K, [True])
    with pytest.raises(InvalidInputError):
        bundle_adjust(np.eye(4)[None], np.zeros((3, 3)), [0, 0], [0], [[0, 0]], K, [True])


def test_batched_3x3_inverse_matches_numpy():
    from kp_vo.geometry.bundle_adjustment import _inverse_3x3

    rng = np.random.default_rng(4)
    M = rng.normal(size=(50, 3, 3))
    A = M @ M.transpose(0, 2, 1) + 0.1 * np.eye(3)  # the damped point blocks are symmetric positive definite
    np.testing.assert_allclose(_inverse_3x3(A), np.linalg.inv(A), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(_inverse_3x3(A) @ A, np.broadcast_to(np.eye(3), A.shape), atol=1e-9)


def test_observation_order_and_which_cameras_are_fixed_do_not_matter():
    """Observations in any order, each point seen by a subset of the cameras, fixed cameras anywhere in
    the window: the same solution, and the residuals come back in the caller's order."""
    rng = np.random.default_rng(5)
    T_cw, points, cam, pt, uv = _scene(rng, num_cams=6, num_points=200)
    seen = rng.random(len(cam)) < 0.6
    seen[cam == 0] = seen[cam == 3] = True               # the fixed cameras see every point (scale and gauge)
    cam, pt, uv = cam[seen], pt[seen], uv[seen] + rng.normal(0, 0.3, (seen.sum(), 2))
    fixed = np.array([True, False, False, True, False, False])
    T0, P0 = _perturbed(rng, T_cw, points, fixed)
    T_a, P_a, r_a = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, max_iterations=30)
    shuffle = rng.permutation(len(cam))
    T_b, P_b, r_b = bundle_adjust(T0, P0, cam[shuffle], pt[shuffle], uv[shuffle], K, fixed, max_iterations=30)
    np.testing.assert_allclose(T_b, T_a, atol=1e-9)
    np.testing.assert_allclose(P_b, P_a, atol=1e-7)
    np.testing.assert_allclose(r_b, r_a[shuffle], atol=1e-7)
    np.testing.assert_array_equal(T_b[fixed], T0[fixed])
    own = np.linalg.norm(np.stack([project(transform(T_a[c], P_a[p][None]), K)[0][0] for c, p in zip(cam, pt)]) - uv,
                         axis=1)
    np.testing.assert_allclose(r_a, own, atol=1e-9)    # each residual is its own observation's
    centre_err = [np.linalg.norm(invert(a)[:3, 3] - invert(b)[:3, 3]) for a, b in zip(T_a, T_cw)]
    assert max(centre_err) < 0.01


def test_jacobians_match_finite_differences():
    from kp_vo.geometry.bundle_adjustment import _linearize

    rng = np.random.default_rng(6)
    T_cw, points, cam, pt, uv = _scene(rng, num_cams=3, num_points=20)
    slices = [slice(c * 20, (c + 1) * 20) for c in range(3)]   # _scene lists the observations camera by camera
    r, Jc, Jp = _linearize(T_cw, points, slices, pt, uv, K)
    eps = 1e-6
    for k in range(6):
        step = np.zeros(6)
        step[k] = eps
        T_step = np.stack([se3_exp(step) @ T for T in T_cw])
        numeric = (_linearize(T_step, points, slices, pt, uv, K)[0] - r) / eps
        np.testing.assert_allclose(Jc[:, :, k], numeric, rtol=1e-4, atol=1e-3)
    for k in range(3):
        P_step = points.copy()
        P_step[:, k] += eps
        numeric = (_linearize(T_cw, P_step, slices, pt, uv, K)[0] - r) / eps
        np.testing.assert_allclose(Jp[:, :, k], numeric, rtol=1e-4, atol=1e-3)


def test_depth_row_jacobian_matches_finite_differences():
    """The RGB-D residual's third row (whitened depth error), with and without a measured depth."""
    from kp_vo.geometry.bundle_adjustment import _depth_terms, _linearize

    rng = np.random.default_rng(7)
    T_cw, points, cam, pt, uv = _scene(rng, num_cams=3, num_points=20)
    slices = [slice(c * 20, (c + 1) * 20) for c in range(3)]
    z = np.array([transform(T_cw[c], points[p][None])[0, 2] for c, p in zip(cam, pt)]) + rng.normal(0, 0.05, 60)
    z[::4] = np.nan                                      # no depth measured: a zero row
    depth = _depth_terms(z, np.full(60, 0.02), 60)
    r, Jc, Jp = _linearize(T_cw, points, slices, pt, uv, K, depth)
    assert r.shape == (60, 3)
    assert np.all(r[::4, 2] == 0) and np.all(Jc[::4, 2] == 0) and np.all(Jp[::4, 2] == 0)
    eps = 1e-6
    for k in range(6):
        step = np.zeros(6)
        step[k] = eps
        T_step = np.stack([se3_exp(step) @ T for T in T_cw])
        numeric = (_linearize(T_step, points, slices, pt, uv, K, depth)[0] - r) / eps
        np.testing.assert_allclose(Jc[:, :, k], numeric, rtol=1e-4, atol=1e-3)
    for k in range(3):
        P_step = points.copy()
        P_step[:, k] += eps
        numeric = (_linearize(T_cw, P_step, slices, pt, uv, K, depth)[0] - r) / eps
        np.testing.assert_allclose(Jp[:, :, k], numeric, rtol=1e-4, atol=1e-3)


def _true_depths(T_cw, points, cam, pt):
    return np.array([transform(T_cw[c], points[p][None])[0, 2] for c, p in zip(cam, pt)])


def test_measured_depth_fixes_scale_with_one_fixed_camera():
    """Reprojections alone cannot tell a window from its scaled copy when one camera is fixed; with the
    measured depths the adjustment recovers the true scale, and the clean window exactly."""
    rng = np.random.default_rng(8)
    T_cw, points, cam, pt, uv = _scene(rng)
    fixed = np.array([True, False, False, False, False])
    T0 = T_cw.copy()
    T0[1:, :3, 3] *= 1.3                                  # the free cameras and the points 30 % too far
    P0 = points * 1.3
    z = _true_depths(T_cw, points, cam, pt)
    sigma = np.full(len(z), 0.01)
    T, P, residual = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, max_iterations=30, obs_depth=z,
                                   obs_depth_sigma=sigma)
    assert residual.max() < 1e-4
    np.testing.assert_allclose(T, T_cw, atol=1e-6)
    np.testing.assert_allclose(P, points, atol=1e-5)
    T_mono, _, r_mono = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, max_iterations=30)
    assert r_mono.max() < 1e-3                          # the scaled copy reprojects all but perfectly ...
    assert T_mono[4, 0, 3] / T_cw[4, 0, 3] > 1.25      # ... so without depth it stays about 30 % too far


def test_depth_outliers_are_limited_and_reported_in_the_residuals():
    """A wrong depth on a few observations (a keypoint on a depth edge) barely moves the window, and those
    observations stand out in the returned residuals (the tracker drops them); a depth error of one sigma
    counts as one pixel."""
    rng = np.random.default_rng(9)
    T_cw, points, cam, pt, uv = _scene(rng)
    fixed = np.array([True, False, False, False, False])
    z = _true_depths(T_cw, points, cam, pt)
    bad = rng.random(len(z)) < 0.05
    z[bad] += rng.choice([-1.5, 1.5], bad.sum())
    sigma = np.full(len(z), 0.02)
    T0, P0 = _perturbed(rng, T_cw, points, fixed)
    T, P, residual = bundle_adjust(T0, P0, cam, pt, uv, K, fixed, huber_px=2.0, max_iterations=30, obs_depth=z,
                                   obs_depth_sigma=sigma)
    centre_err = [np.linalg.norm(invert(a)[:3, 3] - invert(b)[:3, 3]) for a, b in zip(T, T_cw)]
    assert max(centre_err) < 0.02
    assert np.median(residual[bad]) > 30 and np.median(residual[~bad]) < 2.0
    _, _, one_sigma = bundle_adjust(T_cw, points, cam, pt, uv, K, np.ones(5, bool), max_iterations=0,
                                    obs_depth=_true_depths(T_cw, points, cam, pt) + 0.02, obs_depth_sigma=sigma)
    np.testing.assert_allclose(one_sigma, 1.0, atol=1e-6)


def test_bad_depth_arguments_raise():
    rng = np.random.default_rng(10)
    T_cw, points, cam, pt, uv = _scene(rng, num_cams=2, num_points=10)
    fixed = np.array([True, False])
    z = _true_depths(T_cw, points, cam, pt)
    for depth, sigma in [(z, None), (None, np.ones(20)), (z[:5], np.ones(20)), (z, np.zeros(20)),
                         (z, np.full(20, np.nan))]:
        with pytest.raises(InvalidInputError):
            bundle_adjust(T_cw, points, cam, pt, uv, K, fixed, obs_depth=depth, obs_depth_sigma=sigma)
    z[:3] = np.nan                                     # no depth: its sigma is not looked at
    sigma = np.ones(20)
    sigma[:3] = np.nan
    bundle_adjust(T_cw, points, cam, pt, uv, K, fixed, obs_depth=z, obs_depth_sigma=sigma)


def test_huber_weights_and_cost_known_answers():
    from kp_vo.geometry.robust import huber_cost, huber_weights

    e = np.array([0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(huber_weights(e, 2.0), [1.0, 1.0, 1.0, 0.5])
    np.testing.assert_allclose(huber_weights(e, None), 1.0)
    assert huber_cost(e, 2.0) == pytest.approx(0.0 + 0.5 + 2.0 + 2.0 * (4.0 - 1.0))
    assert huber_cost(e, None) == pytest.approx(0.5 * (0 + 1 + 4 + 16))
