"""GuidedMatcher: several projection-guided searches of one frame; a narrower search reuses the candidate
pairs of a wider one and must give exactly the matches of a search from scratch."""

from dataclasses import dataclass

import numpy as np
import pytest

from kp_vo.features.base import Features
from kp_vo.geometry import matching
from kp_vo.geometry.matching import match_by_projection
from kp_vo.geometry.se3 import invert, make_pose, transform
from kp_vo.odometry import guided
from kp_vo.odometry.guided import GuidedMatcher

K = np.array([[400.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])


@dataclass
class _Camera:
    width: int = 640
    height: int = 480


@dataclass
class _Window:
    xyz: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.xyz)


def _scene(seed: int, n_points: int = 1500, n_keypoints: int = 1200):
    """Window points in front of the camera, a frame whose keypoints are noisy projections of part of them
    plus clutter, and hamming descriptors with near-duplicates (ties and ratio-test failures)."""
    rng = np.random.default_rng(seed)
    xyz = np.column_stack([rng.uniform(-4, 4, n_points), rng.uniform(-3, 3, n_points), rng.uniform(2, 9, n_points)])
    words = rng.integers(0, 256, (40, 32), dtype=np.uint8)           # few words: many equal distances
    desc_window = words[rng.integers(0, len(words), n_points)] ^ (rng.random((n_points, 32)) < 0.02).astype(np.uint8)
    seen = rng.choice(n_points, n_keypoints // 2, replace=False)
    uv_seen, _ = matching_projection(xyz[seen])
    uv = np.vstack([uv_seen + rng.normal(0, 1.5, uv_seen.shape),
                    np.column_stack([rng.uniform(0, 640, n_keypoints - len(seen)),
                                     rng.uniform(0, 480, n_keypoints - len(seen))])])
    desc_frame = np.vstack([desc_window[seen], words[rng.integers(0, len(words), n_keypoints - len(seen))]])
    features = Features(uv.astype(np.float32), np.ones(len(uv), np.float32), desc_frame, "hamming")
    return _Window(xyz, desc_window), features


def matching_projection(xyz_cam: np.ndarray):
    uv = xyz_cam[:, :2] / xyz_cam[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv, xyz_cam[:, 2] > 0


def _from_scratch(window, features, T_world_cam, radius, ratio, rows):
    """match_by_projection of the chosen rows, as the tracker would call it without GuidedMatcher."""
    uv, front = matching_projection(transform(invert(T_world_cam), window.xyz[rows]))
    inside = front & (uv[:, 0] >= 0) & (uv[:, 0] < 640) & (uv[:, 1] >= 0) & (uv[:, 1] < 480)
    uv = np.where(inside[:, None], uv, np.nan)
    m, _ = match_by_projection(window.descriptors[rows], uv, features.descriptors,
                               features.keypoints.astype(np.float64), "hamming", radius, ratio)
    m[:, 0] = rows[m[:, 0]]
    return m


@pytest.mark.parametrize("seed", range(6))
def test_a_narrower_search_after_a_wider_one_gives_the_matches_of_a_fresh_search(seed):
    window, features = _scene(seed)
    rng = np.random.default_rng(100 + seed)
    prior = np.eye(4)
    # The solved pose differs from the prior by up to ~12 px of image motion: some rows reuse, some do not.
    solved = make_pose(np.eye(3), rng.normal(0, 0.04, 3))
    first_rows = np.sort(rng.choice(len(window), 1000, replace=False))
    all_rows = np.arange(len(window))
    matcher = GuidedMatcher(window, features, K, _Camera())
    first = matcher.match(prior, 14.0, 0.9, first_rows)
    second = matcher.match(solved, 6.0, 0.9, all_rows)
    np.testing.assert_array_equal(first, _from_scratch(window, features, prior, 14.0, 0.9, first_rows))
    np.testing.assert_array_equal(second, _from_scratch(window, features, solved, 6.0, 0.9, all_rows))
    assert len(second) > 100


def test_the_narrow_search_reuses_the_rows_whose_ball_fits_and_searches_only_the_others(monkeypatch):
    window, features = _scene(7)
    searched = []
    pairs = matching.pairs_within_radius

    def counting(uv, tree, radius):
        searched.append(len(uv))
        return pairs(uv, tree, radius)

    monkeypatch.setattr(guided, "pairs_within_radius", counting)
    matcher = GuidedMatcher(window, features, K, _Camera())
    rows = np.arange(len(window))
    first = matcher.match(np.eye(4), 14.0, None, rows)
    # A shift under 0.5 px everywhere: every row seen by both searches fits (0.5 + 6 <= 14); only rows that
    # cross the image border are searched afresh.
    nudged = make_pose(np.eye(3), [0.2 * 5.0 / 400.0, 0.0, 0.0])
    second = matcher.match(nudged, 6.0, None, rows)
    assert len(searched) == 2 and searched[0] > 1000 and searched[1] <= 5
    np.testing.assert_array_equal(second, _from_scratch(window, features, nudged, 6.0, None, rows))
    assert len(first) > len(second) > 0
    # A wider search than the kept one cannot reuse it.
    matcher.match(np.eye(4), 20.0, None, rows)
    assert len(searched) == 3 and searched[2] == searched[0]
