"""Direct known-answer tests of core guards that scripts/mutants.py found unguarded: each fails when
its one line is broken (the mutant id is named in each test)."""

import math

import numpy as np

from kp_vo.geometry.pnp import solve_pnp_ransac
from kp_vo.geometry.ransac import needed_iterations
from kp_vo.geometry.se3 import invert, se3_exp, transform
from kp_vo.geometry.triangulation import triangulate

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def _pixels(T_c_w, X):
    Pc = transform(T_c_w, X)
    return Pc[:, :2] / Pc[:, 2:3] * 500.0 + [320.0, 240.0]


def test_triangulation_rejects_points_behind_the_cameras():
    """Mutant triangulation-no-cheirality. A stereo pair 1 m apart and points 5-10 m in front of it,
    plus the same points mirrored behind it: the pixel pairs of a mirrored point are consistent (DLT
    puts it back behind with zero reprojection error), so only the depth-sign check rejects them."""
    T1 = np.eye(4)
    T2 = invert(se3_exp(np.r_[0.0, 0.0, 0.0, 1.0, 0.0, 0.0]))     # camera 2 at x = 1 m
    rng = np.random.default_rng(3)
    front = np.c_[rng.uniform(-2, 2, 20), rng.uniform(-1, 1, 20), rng.uniform(5, 10, 20)]
    behind = front * [1.0, 1.0, -1.0]
    X = np.vstack([front, behind])
    points, valid = triangulate(T1, T2, _pixels(T1, X), _pixels(T2, X), K, max_reprojection_px=1.0,
                                min_parallax_deg=1.0)
    np.testing.assert_array_equal(valid, [True] * 20 + [False] * 20)
    np.testing.assert_allclose(points[:20], front, atol=1e-6)


def test_pnp_inliers_are_exactly_the_points_within_the_threshold():
    """Mutant pnp-loose-final-inliers. 60 exact correspondences and 20 moved by 4-5 px: with a 2 px
    threshold the reported inliers are exactly the 60 (a 6 px threshold would take all 80 in)."""
    rng = np.random.default_rng(5)
    T = se3_exp(np.r_[0.05, -0.1, 0.02, 0.3, -0.2, 0.5])
    uv_true = np.c_[rng.uniform(20, 620, 80), rng.uniform(20, 460, 80)]
    z = rng.uniform(4.0, 12.0, 80)
    P = transform(invert(T), np.c_[(uv_true[:, 0] - 320) / 500 * z, (uv_true[:, 1] - 240) / 500 * z, z])
    uv = uv_true.copy()
    angle = rng.uniform(0, 2 * np.pi, 20)
    uv[60:] += rng.uniform(4.0, 5.0, 20)[:, None] * np.c_[np.cos(angle), np.sin(angle)]
    result = solve_pnp_ransac(P, uv, K, threshold_px=2.0, iterations=200, min_inliers=10,
                              rng=np.random.default_rng(0))
    assert result.success and result.num_inliers == 60
    np.testing.assert_array_equal(result.inliers, [True] * 60 + [False] * 20)
    np.testing.assert_allclose(result.T_cam_world, T, atol=1e-6)


def test_ransac_needed_iterations_known_answers():
    """Mutant ransac-iterations-off-by-one. The count k is the smallest with 1 - (1 - w^s)^k >= p:
    w = 0.5, s = 3, p = 0.99: log(0.01) / log(0.875) = 34.49 -> 35; w = 0.8, s = 3, p = 0.999: 9.99 -> 10."""
    assert needed_iterations(0.5, 3, 0.99, 1000) == 35
    assert needed_iterations(0.8, 3, 0.999, 1000) == 10
    for w, s, p in ((0.5, 3, 0.99), (0.8, 3, 0.999), (0.3, 4, 0.95)):
        k = needed_iterations(w, s, p, 10**6)
        assert 1 - (1 - w**s) ** k >= p > 1 - (1 - w**s) ** (k - 1)
    assert needed_iterations(0.1, 3, 0.999, 500) == 500          # capped
    assert needed_iterations(1.0, 3, 0.999, 500) == 0            # all inliers: nothing to draw
    assert math.isclose(needed_iterations(0.5, 3, 0.99, 20), 20)


def _repo_and_queries():
    """Map: 3 unit descriptors at 3 far-apart points. Queries: q0 close to map row 0, q1 nearer to row 0
    than to any other row but farther from it than q0, q2 close to row 2."""
    from kp_vo.features.base import Features
    from kp_vo.reloc.index import IndexConfig
    from kp_vo.reloc.repository import Repository

    e = np.eye(8, dtype=np.float32)
    d = e[:3]
    repo = Repository("l2", 8, "toy", index_config=IndexConfig(threads=1))
    repo.add_points(np.array([[0.0, 0, 5], [3.0, 0, 5], [0.0, 3, 5]]),
                    Features(np.zeros((3, 2), np.float32), np.ones(3, np.float32), d, "l2"), 0, 0, np.eye(4))
    q = np.stack([e[0] + 0.05 * e[3], e[0] + 0.3 * e[4], e[2] + 0.05 * e[5]]).astype(np.float32)
    return repo, Features(np.zeros((3, 2), np.float32), np.ones(3, np.float32), q, "l2")


def test_localizer_mutual_matching_keeps_only_the_map_points_nearest_query():
    """Mutant localizer-not-mutual. q0 and q1 both have map row 0 as nearest neighbour; row 0's nearest
    query is q0, so "mutual" (ratio test off: ratio 1) keeps (q0, 0) and (q2, 2) and drops q1."""
    from kp_vo.reloc.localizer import LocalizerConfig, match_to_repository

    repo, queries = _repo_and_queries()
    q, ids, dist = match_to_repository(queries, repo, LocalizerConfig(match_mode="mutual", ratio=1.0))
    np.testing.assert_array_equal(q, [0, 2])
    np.testing.assert_array_equal(ids, [0, 2])
    np.testing.assert_allclose(dist, [0.05, 0.05], rtol=1e-5)
    # "topk" with one candidate keeps both of row 0's suitors (what mutual filtering removes).
    q, ids, _ = match_to_repository(queries, repo, LocalizerConfig(match_mode="topk", candidates=2, max_distance=0.5))
    assert sorted(zip(q.tolist(), ids.tolist())) == [(0, 0), (1, 0), (2, 2)]


def test_localizer_confidence_known_answers():
    """Mutant localizer-confidence-no-ratio. confidence = inliers/matches x (1 - exp(-(inliers - min + 1) / min)):
    50 of 100 with min 12 -> 0.5 x (1 - e^-3.25) = 0.480613; 50 of 50 -> 0.961226; below min -> 0."""
    from kp_vo.reloc.localizer import _confidence

    assert math.isclose(_confidence(50, 100, 12), 0.5 * (1 - math.exp(-39 / 12)), rel_tol=1e-12)
    assert math.isclose(_confidence(50, 100, 12), 0.480613, abs_tol=1e-6)
    assert math.isclose(_confidence(50, 50, 12), 0.961226, abs_tol=1e-6)
    assert _confidence(11, 100, 12) == 0.0 and _confidence(0, 0, 12) == 0.0
