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


def test_localizer_max_distance_drops_the_farther_nearest_neighbour():
    """Mutant localizer-max-distance-ignored. Nearest map rows: q0 -> 0 at 0.05, q1 -> 0 at 0.3, q2 -> 2
    at 0.05 (the rivals are >= 1 away, so the ratio test at 0.9 passes all three). max_distance 0.1 keeps
    q0 and q2; 0.5 keeps all three."""
    from kp_vo.reloc.localizer import LocalizerConfig, match_to_repository

    repo, queries = _repo_and_queries()
    q, ids, dist = match_to_repository(queries, repo, LocalizerConfig(match_mode="ratio", max_distance=0.1))
    np.testing.assert_array_equal(q, [0, 2])
    np.testing.assert_array_equal(ids, [0, 2])
    np.testing.assert_allclose(dist, [0.05, 0.05], rtol=1e-5)
    q, ids, dist = match_to_repository(queries, repo, LocalizerConfig(match_mode="ratio", max_distance=0.5))
    np.testing.assert_array_equal(q, [0, 1, 2])
    np.testing.assert_array_equal(ids, [0, 0, 2])
    np.testing.assert_allclose(dist, [0.05, 0.3, 0.05], rtol=1e-5)


def test_localizer_confidence_known_answers():
    """Mutant localizer-confidence-no-ratio. confidence = inliers/matches x (1 - exp(-(inliers - min + 1) / min)):
    50 of 100 with min 12 -> 0.5 x (1 - e^-3.25) = 0.480613; 50 of 50 -> 0.961226; below min -> 0."""
    from kp_vo.reloc.localizer import _confidence

    assert math.isclose(_confidence(50, 100, 12), 0.5 * (1 - math.exp(-39 / 12)), rel_tol=1e-12)
    assert math.isclose(_confidence(50, 100, 12), 0.480613, abs_tol=1e-6)
    assert math.isclose(_confidence(50, 50, 12), 0.961226, abs_tol=1e-6)
    assert _confidence(11, 100, 12) == 0.0 and _confidence(0, 0, 12) == 0.0


# -- localization with query depth: a scene built point by point (identity query pose, f = 500 px) -------

_QUERY_CAMERA_PX = (500.0, 500.0, 320.0, 240.0, 640, 480)


def _rays(uv: np.ndarray) -> np.ndarray:
    """Camera-frame points (N, 3) at depth 1 m on the rays of pixels uv (N, 2) of the query camera."""
    return np.c_[(uv[:, 0] - 320.0) / 500.0, (uv[:, 1] - 240.0) / 500.0, np.ones(len(uv))]


def _paired_lateral_offsets(uv: np.ndarray, offset_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of 8 places, each twice, and their points at 1 m moved ``offset_m`` sideways (x or y) in
    opposite directions per pair: the pairs cancel, so the 3D-3D fit of all of them is exactly the
    identity, while each point reprojects offset_m x 500 px off its pixel."""
    step = np.array([[1.0, 0, 0], [0, 1.0, 0]] * 4)
    pixels = np.r_[uv[:8], uv[:8]]
    return pixels, _rays(pixels) + offset_m * np.r_[step, -step]


def _localize_with_depth(uv: np.ndarray, points_world: np.ndarray, has_depth: np.ndarray, **config):
    """Localize a query whose keypoint i (pixel uv[i], one-hot descriptor i) matches map point i exactly;
    the depth image holds 1 m at the keypoints with ``has_depth`` and nothing elsewhere."""
    from kp_vo.features.base import Features
    from kp_vo.reloc.index import IndexConfig
    from kp_vo.reloc.localizer import Localizer, LocalizerConfig
    from kp_vo.reloc.repository import Repository
    from kp_vo.types import CameraIntrinsics

    n = len(uv)
    descriptors = np.eye(64, dtype=np.float32)[:n]
    features = Features(uv.astype(np.float32), np.ones(n, np.float32), descriptors, "l2")
    repo = Repository("l2", 64, "toy", index_config=IndexConfig(threads=1))
    repo.add_points(points_world, features, 0, 0, np.eye(4))
    depth = np.zeros((480, 640), np.float32)
    u, v = uv[has_depth].astype(int).T
    depth[v, u] = 1.0
    localizer = Localizer(repo, None, LocalizerConfig(**config))
    return localizer.localize_features(features, CameraIntrinsics(*_QUERY_CAMERA_PX), depth)


def _grid_pixels(n: int, seed: int) -> np.ndarray:
    """n distinct integer pixels of the 640 x 480 query image, away from its border."""
    rng = np.random.default_rng(seed)
    u = rng.choice(np.arange(40, 600, 8), n, replace=False)
    v = rng.choice(np.arange(40, 440, 8), n, replace=True)
    return np.c_[u, v].astype(np.float64)


def test_localizer_3d3d_inliers_are_exactly_the_points_within_the_metric_threshold():
    """Mutant localizer-3d3d-loose-reselect. 16 matches with depth, 3.5 cm off their map points in
    cancelling pairs (3D inliers of the identity at the 5 cm threshold, but 17.5 px off in the image, so
    the reprojection polish finds none and the 3D-3D result stands), and 4 wrong matches 20 cm off (outliers
    at 5 cm, inliers at 10 x 5 cm). Known answer: the identity pose and exactly the 16 as inliers."""
    pixels, points = _paired_lateral_offsets(_grid_pixels(12, 0), 0.035)
    wrong = _grid_pixels(12, 0)[8:12]
    uv = np.r_[pixels, wrong]
    points = np.r_[points, _rays(wrong) + 0.2 * np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, 0, 0]])]
    result = _localize_with_depth(uv, points, np.ones(20, bool))
    assert result.success and result.method == "procrustes"
    np.testing.assert_array_equal(result.inliers, [True] * 16 + [False] * 4)
    assert result.num_inliers == 16 and np.isnan(result.reprojection_rmse)   # the 3D-3D pose, not polished
    np.testing.assert_allclose(result.T_world_cam, np.eye(4), atol=1e-9)


def test_localizer_fails_when_the_polished_pose_keeps_fewer_than_min_inliers():
    """Mutant localizer-min-inliers-dropped. The 16 paired matches with depth fix the 3D-3D pose at the
    identity (3D inliers, 17.5 px reprojection error). 12 depth-less matches at 2-10 m are within 3 px
    of it: 11 reproject 2.5 px right of their keypoints, one 2 px left. The least-squares polish on those
    12 moves the 11 below 1 px and the lone one to 3.6 px: 11 inliers. With min_inliers 12 the
    localization fails (no pose); with 11 it succeeds with exactly those 11."""
    pixels, paired = _paired_lateral_offsets(_grid_pixels(20, 0), 0.035)
    depthless = _grid_pixels(20, 0)[8:20]
    z = np.random.default_rng(1).uniform(2.0, 10.0, 12)
    far = _rays(depthless) * z[:, None]
    far[:11, 0] += 2.5 / 500.0 * z[:11]
    far[11, 0] -= 2.0 / 500.0 * z[11]
    uv, points = np.r_[pixels, depthless], np.r_[paired, far]
    has_depth = np.r_[np.ones(16, bool), np.zeros(12, bool)]
    strict = _localize_with_depth(uv, points, has_depth, min_inliers=12)
    assert not strict.success and strict.T_world_cam is None and strict.confidence == 0.0
    assert strict.num_inliers == 11
    loose = _localize_with_depth(uv, points, has_depth, min_inliers=11)
    assert loose.success and loose.method == "procrustes"
    np.testing.assert_array_equal(loose.inliers, [False] * 16 + [True] * 11 + [False])
