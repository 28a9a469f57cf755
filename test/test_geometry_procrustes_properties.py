"""Properties of weighted Procrustes and RANSAC-Procrustes (``kp_vo.geometry.procrustes``).

Noise: the error of the recovered pose follows the first-order covariance of the weighted least-squares
problem, so it shrinks like sigma / sqrt(N). Weights: zero weights drop points, integer weights equal
duplicated points, a common factor changes nothing. Outliers: RANSAC returns exactly the true inliers and a
pose within a chi-square bound of the noise. Degenerate (collinear) and mirrored inputs give proper
rotations; RANSAC rejects collinear data.

Model: dst_i = R src_i + t + n_i with n_i ~ N(0, sigma_i^2 I). With y_i = R (src_i - mu), mu the weighted
centroid and w_i = 1 / sigma_i^2, the rotation error theta = log(R_est R^T) has covariance M^-1 with
M = sum_i w_i (|y_i|^2 I - y_i y_i^T), and the error of the transformed centroid has covariance
I / sum_i w_i.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.procrustes import procrustes, ransac_procrustes, weighted_procrustes
from kp_vo.geometry.se3 import se3_exp, so3_exp, so3_log, transform

FEW = settings(max_examples=25, deadline=None, derandomize=True)
seeds = st.integers(0, 2**32 - 1)


def random_pose(rng: np.random.Generator) -> np.ndarray:
    """A (4, 4) pose with a rotation of up to ~pi and a translation of a few metres."""
    return se3_exp(np.r_[rng.normal(0, 1.0, 3), rng.normal(0, 2.0, 3)])


def cloud(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n, 3) points spread over a few metres, off the origin."""
    return rng.normal(size=(n, 3)) * [2.0, 1.0, 0.5] + [0.5, -1.0, 3.0]


def pose_errors(T_est: np.ndarray, T: np.ndarray, src: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation error theta (3,) rad (left perturbation) and the error (3,) m of the mapped weighted centroid."""
    mu = (w @ src) / w.sum()
    theta = so3_log(T_est[:3, :3] @ T[:3, :3].T)
    return theta, transform(T_est, mu[None])[0] - transform(T, mu[None])[0]


def information(T: np.ndarray, src: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(3, 3) information M of the rotation error for points ``src`` with weights w = 1 / sigma^2."""
    mu = (w @ src) / w.sum()
    y = (src - mu) @ T[:3, :3].T
    return np.eye(3) * (w @ (y * y).sum(1)) - (y * w[:, None]).T @ y


def cost(R: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """Least-squares cost of the best translation for rotation R."""
    r = (dst - dst.mean(0)) - (src - src.mean(0)) @ R.T
    return float((r * r).sum())


# -- exact answers ------------------------------------------------------------------------------------------------

@FEW
@given(seeds, st.integers(3, 60), st.booleans(), st.booleans())
def test_noise_free_data_gives_the_exact_pose(seed, n, weighted, with_scale):
    rng = np.random.default_rng(seed)
    T = random_pose(rng)
    s_true = rng.uniform(0.3, 3.0) if with_scale else 1.0
    src = cloud(rng, n)
    dst = s_true * src @ T[:3, :3].T + T[:3, 3]
    w = rng.uniform(0.05, 20.0, n) if weighted else None
    T_est, s = weighted_procrustes(src, dst, w, with_scale=with_scale)
    np.testing.assert_allclose(T_est, T, atol=1e-9)
    assert s == pytest.approx(s_true, rel=1e-9)


# -- Gaussian noise -----------------------------------------------------------------------------------------------

def _normalised_errors(rng, n: int, sigma: float, trials: int) -> tuple[float, float]:
    """Mean of theta^T M theta / 3 and of N |e_centroid|^2 / (3 sigma^2) over ``trials`` (both ~1)."""
    rot, cen = [], []
    src = cloud(rng, n)
    for _ in range(trials):
        T = random_pose(rng)
        dst = transform(T, src) + rng.normal(0, sigma, (n, 3))
        theta, e_c = pose_errors(procrustes(src, dst), T, src, np.ones(n))
        M = information(T, src, np.full(n, 1.0 / sigma**2))
        rot.append(theta @ M @ theta / 3)
        cen.append(n * (e_c @ e_c) / (3 * sigma**2))
    return float(np.mean(rot)), float(np.mean(cen))


@pytest.mark.parametrize("n", [10, 40, 160, 640])
@pytest.mark.parametrize("sigma", [1e-4, 1e-2])
def test_noise_error_follows_the_first_order_covariance(n, sigma):
    """The normalised squared errors average 1 (chi-square / 3 over 300 trials: +-10 % is > 3 sd)."""
    rot, cen = _normalised_errors(np.random.default_rng(n), n, sigma, trials=300)
    assert 0.8 < rot < 1.25, rot
    assert 0.8 < cen < 1.25, cen


def test_noise_error_shrinks_like_sigma_over_sqrt_n():
    """RMS rotation and centroid errors, divided by sigma / sqrt(N), stay constant over N and sigma."""
    rng = np.random.default_rng(11)
    ratios_r, ratios_t = [], []
    for n in (16, 64, 256, 1024):
        for sigma in (1e-3, 3e-2):
            src = cloud(rng, n)
            e_r, e_t = [], []
            for _ in range(150):
                T = random_pose(rng)
                theta, e_c = pose_errors(procrustes(src, transform(T, src) + rng.normal(0, sigma, (n, 3))),
                                         T, src, np.ones(n))
                e_r.append(theta @ theta)
                e_t.append(e_c @ e_c)
            ratios_r.append(np.sqrt(np.mean(e_r)) / (sigma / np.sqrt(n)))
            ratios_t.append(np.sqrt(np.mean(e_t)) / (sigma / np.sqrt(n)))
    assert max(ratios_t) / min(ratios_t) < 1.3, ratios_t
    np.testing.assert_allclose(ratios_t, np.sqrt(3), rtol=0.15)
    assert max(ratios_r) / min(ratios_r) < 1.4, ratios_r   # same point spread for every N


def test_inverse_variance_weights_reach_the_weighted_covariance_and_beat_equal_weights():
    rng = np.random.default_rng(5)
    n, trials = 80, 300
    src = cloud(rng, n)
    sig = np.where(rng.random(n) < 0.5, 2e-3, 5e-2)      # half the points are 25x noisier
    w = 1.0 / sig**2
    rot_w, cen_w, sq_w, sq_u = [], [], [], []
    for _ in range(trials):
        T = random_pose(rng)
        dst = transform(T, src) + rng.normal(size=(n, 3)) * sig[:, None]
        theta, e_c = pose_errors(weighted_procrustes(src, dst, w)[0], T, src, w)
        rot_w.append(theta @ information(T, src, w) @ theta / 3)
        cen_w.append(w.sum() * (e_c @ e_c) / 3)
        sq_w.append(theta @ theta)
        theta_u, _ = pose_errors(procrustes(src, dst), T, src, w)
        sq_u.append(theta_u @ theta_u)
    assert 0.8 < np.mean(rot_w) < 1.25
    assert 0.8 < np.mean(cen_w) < 1.25
    assert np.mean(sq_w) < 0.2 * np.mean(sq_u)


# -- weights ------------------------------------------------------------------------------------------------------

def _noisy_pair(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    src = cloud(rng, n)
    return src, transform(random_pose(rng), src) + rng.normal(0, 0.05, (n, 3))


@FEW
@given(seeds, st.integers(3, 30))
def test_integer_weights_equal_duplicated_points(seed, n):
    rng = np.random.default_rng(seed)
    src, dst = _noisy_pair(rng, n)
    k = rng.integers(1, 5, n)
    for with_scale in (False, True):
        T_w, s_w = weighted_procrustes(src, dst, k.astype(float), with_scale=with_scale)
        T_d, s_d = weighted_procrustes(np.repeat(src, k, 0), np.repeat(dst, k, 0), with_scale=with_scale)
        np.testing.assert_allclose(T_w, T_d, atol=1e-9)
        assert s_w == pytest.approx(s_d, rel=1e-9)


@FEW
@given(seeds, st.integers(3, 30), st.integers(1, 30))
def test_zero_weights_ignore_their_points(seed, n_kept, n_dropped):
    rng = np.random.default_rng(seed)
    src, dst = _noisy_pair(rng, n_kept)
    junk_src = rng.normal(0, 100, (n_dropped, 3))
    junk_dst = rng.normal(0, 100, (n_dropped, 3))
    w_kept = rng.uniform(0.1, 3.0, n_kept)
    order = rng.permutation(n_kept + n_dropped)
    all_src = np.r_[src, junk_src][order]
    all_dst = np.r_[dst, junk_dst][order]
    all_w = np.r_[w_kept, np.zeros(n_dropped)][order]
    for with_scale in (False, True):
        T_all, s_all = weighted_procrustes(all_src, all_dst, all_w, with_scale=with_scale)
        T_kept, s_kept = weighted_procrustes(src, dst, w_kept, with_scale=with_scale)
        np.testing.assert_allclose(T_all, T_kept, atol=1e-9)
        assert s_all == pytest.approx(s_kept, rel=1e-9)


@FEW
@given(seeds, st.integers(3, 40), st.floats(-6, 6))
def test_scaling_all_weights_changes_nothing(seed, n, log10_c):
    rng = np.random.default_rng(seed)
    src, dst = _noisy_pair(rng, n)
    w = rng.uniform(0.1, 3.0, n)
    for with_scale in (False, True):
        T_1, s_1 = weighted_procrustes(src, dst, w, with_scale=with_scale)
        T_c, s_c = weighted_procrustes(src, dst, w * 10.0**log10_c, with_scale=with_scale)
        np.testing.assert_allclose(T_c, T_1, atol=1e-9)
        assert s_c == pytest.approx(s_1, rel=1e-9)
    # Equal weights of any size are the unweighted solution.
    np.testing.assert_allclose(weighted_procrustes(src, dst, np.full(n, 10.0**log10_c))[0], procrustes(src, dst),
                               atol=1e-9)


# -- outliers -----------------------------------------------------------------------------------------------------

@FEW
@given(seeds, st.floats(0.3, 0.6), st.integers(60, 160))
def test_ransac_returns_the_true_inliers_and_a_pose_within_the_noise_bound(seed, outlier_share, n):
    """Noise sigma = 3 mm, threshold 5 cm, outliers moved >= 0.5 m: the inlier set is exact, and the pose is
    the least-squares fit on it, so theta^T M theta and N |e_centroid|^2 / sigma^2 (chi-square, 3 dof) stay
    below 36 (p ~ 1e-7)."""
    rng = np.random.default_rng(seed)
    sigma = 3e-3
    T = random_pose(rng)
    src = cloud(rng, n)
    dst = transform(T, src) + rng.normal(0, sigma, (n, 3))
    outlier = np.zeros(n, dtype=bool)
    outlier[rng.choice(n, int(round(outlier_share * n)), replace=False)] = True
    k = int(outlier.sum())
    direction = rng.normal(size=(k, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    dst[outlier] += direction * rng.uniform(0.5, 5.0, (k, 1))

    ok, T_est, inliers = ransac_procrustes(src, dst, threshold_m=0.05)
    assert ok
    np.testing.assert_array_equal(inliers, ~outlier)
    w_in = np.full(n - k, 1.0 / sigma**2)
    theta, e_c = pose_errors(T_est, T, src[~outlier], w_in)
    assert theta @ information(T, src[~outlier], w_in) @ theta < 36
    assert (n - k) * (e_c @ e_c) / sigma**2 < 36
    assert np.linalg.det(T_est[:3, :3]) == pytest.approx(1.0)


# -- degenerate and mirrored input --------------------------------------------------------------------------------

@FEW
@given(seeds, st.integers(3, 30))
def test_collinear_points_give_a_proper_rotation_and_ransac_rejects_them(seed, n):
    """On a line the rotation about the line is undetermined: the solver still returns a proper rotation that
    maps the line onto itself exactly; RANSAC, whose samples must span a triangle, fails cleanly."""
    rng = np.random.default_rng(seed)
    T = random_pose(rng)
    direction = rng.normal(size=3)
    src = rng.normal(size=3) + rng.uniform(-3, 3, (n, 1)) * direction
    dst = transform(T, src)
    T_est, s = weighted_procrustes(src, dst, rng.uniform(0.5, 2.0, n))
    R = T_est[:3, :3]
    assert np.isfinite(T_est).all() and s == 1.0
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(transform(T_est, src), dst, atol=1e-8)

    ok, T_r, inl = ransac_procrustes(src, dst, threshold_m=0.01, min_inliers=3)
    assert not ok and not inl.any()
    np.testing.assert_array_equal(T_r, np.eye(4))


def test_coincident_points_have_no_scale():
    src = np.ones((5, 3))
    with pytest.raises(InvalidInputError):
        weighted_procrustes(src, src + 1.0, with_scale=True)


@FEW
@given(seeds, st.integers(4, 40), st.booleans())
def test_mirrored_input_gives_the_best_proper_rotation(seed, n, with_scale):
    """dst is a reflection of src: no rotation fits. The result is a rotation (det +1), and no nearby
    rotation has a lower cost, so the reflection fix flips the weakest axis, not an arbitrary one."""
    rng = np.random.default_rng(seed)
    src = cloud(rng, n)
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    mirror = np.eye(3) - 2 * np.outer(normal, normal)
    T = random_pose(rng)
    dst = src @ (T[:3, :3] @ mirror).T + T[:3, 3]
    T_est, s = weighted_procrustes(src, dst, with_scale=with_scale)
    R = T_est[:3, :3]
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert s > 0
    best = cost(R, src, dst)
    for _ in range(20):
        assert cost(so3_exp(rng.normal(0, 0.05, 3)) @ R, src, dst) >= best - 1e-9 * max(best, 1.0)
