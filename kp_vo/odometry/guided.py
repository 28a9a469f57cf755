"""Projection-guided matching of the window's points to one frame's keypoints, for the several searches
the tracker makes in one frame (motion prior, a wider retry, the solved pose).

A search of the keypoints keeps its candidate pairs (window row, keypoint, pixel distance, descriptor
distance). A later search takes a row's candidates from it instead of searching the keypoints again
when the ball of radius r around the row's new predicted pixel lies inside the earlier ball of radius R
(the two predictions are s <= R - r apart): every keypoint within r of the new prediction is then among
the earlier candidates, so filtering them to r gives the same candidates and the same matches. The
filter needs pixel offsets only where the triangle inequality leaves the answer open (earlier pixel
distance within s of r). The solved-pose pass (r = 6 px after a 14 px prior pass) reuses every row the
prior pass searched whose prediction moved by at most 8 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from kp_vo.features.base import Features
from kp_vo.geometry.camera import project
from kp_vo.geometry.matching import check_descriptors, pair_distances, pairs_within_radius, select_guided_matches
from kp_vo.geometry.se3 import invert, transform

# A row reuses the previous search when its new ball fits inside the old one with this relative margin,
# far above the rounding of the distances and far below a pixel.
_CONTAINMENT_MARGIN = 1e-9


@dataclass
class _Search:
    """One search's predictions uv (W, 2) over all window rows (NaN: not searched or outside the image),
    its radius, and its candidate pairs: window rows (P,), keypoints (P,), pixel distances (P,) from the
    predictions, descriptor distances (P,)."""

    uv: np.ndarray
    radius: float
    rows: np.ndarray
    keypoints: np.ndarray
    pixel_distances: np.ndarray
    distances: np.ndarray


class GuidedMatcher:
    """Guided matching of ``window`` (its xyz (W, 3) world points and descriptors (W, D)) to the
    ``features`` of one frame seen by ``camera`` with intrinsics K (3, 3)."""

    def __init__(self, window, features: Features, K: np.ndarray, camera):
        self._window, self._K, self._camera = window, K, camera
        self._metric = features.metric
        self._desc_window, self._desc_frame = check_descriptors(window.descriptors, features.descriptors,
                                                                features.metric)
        uv = features.keypoints.astype(np.float64)
        self._keypoints_finite = np.flatnonzero(np.isfinite(uv).all(axis=1))
        self._uv = uv
        self._tree = cKDTree(uv[self._keypoints_finite]) if len(self._keypoints_finite) else None
        self._previous: _Search | None = None

    def match(self, T_world_cam: np.ndarray, radius_px: float, ratio: float | None,
              rows: np.ndarray | None = None) -> np.ndarray:
        """Matches (K, 2) [window row, keypoint] of the window points (or of its increasing ``rows``)
        projected with the camera pose ``T_world_cam`` (4, 4), each compared with the keypoints within
        ``radius_px`` of its predicted pixel (see :func:`select_guided_matches`)."""
        rows = np.arange(len(self._window)) if rows is None else rows
        uv_rows = self._predict(T_world_cam, rows)
        uv = np.full((len(self._window), 2), np.nan)
        uv[rows] = uv_rows
        shift = self._reusable_shift(uv_rows, rows, radius_px)
        reused = np.isfinite(shift)
        fresh = np.flatnonzero(~reused & np.isfinite(uv_rows[:, 0]))
        search = self._search(rows[fresh], uv_rows[fresh], radius_px, uv)
        pair_rows, pair_keypoints, pair_d = search.rows, search.keypoints, search.distances
        if reused.any():
            shift_full = np.full(len(self._window), np.nan)
            shift_full[rows[reused]] = shift[reused]
            kept_rows, kept_keypoints, kept_d = self._filter_previous(shift_full, uv, radius_px)
            pair_rows = np.concatenate([pair_rows, kept_rows])
            pair_keypoints = np.concatenate([pair_keypoints, kept_keypoints])
            pair_d = np.concatenate([pair_d, kept_d])
        else:
            self._previous = search        # a search of the keypoints alone: later searches may reuse it
        matches, _ = select_guided_matches(pair_rows, pair_keypoints, pair_d, ratio)
        return matches

    def _predict(self, T_world_cam: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Predicted pixels (R, 2) of the window rows; NaN behind the camera or outside the image."""
        uv, in_front = project(transform(invert(T_world_cam), self._window.xyz[rows]), self._K)
        inside = in_front & (uv[:, 0] >= 0) & (uv[:, 0] < self._camera.width) \
            & (uv[:, 1] >= 0) & (uv[:, 1] < self._camera.height)
        return np.where(inside[:, None], uv, np.nan)

    def _reusable_shift(self, uv_rows: np.ndarray, rows: np.ndarray, radius_px: float) -> np.ndarray:
        """(R,) how far each row's prediction moved since the kept search, where its new ball lies inside
        the old one; NaN where it does not (or there is no kept search)."""
        previous = self._previous
        if previous is None or radius_px > previous.radius:
            return np.full(len(rows), np.nan)
        shift = np.linalg.norm(uv_rows - previous.uv[rows], axis=1)      # NaN where either is missing
        with np.errstate(invalid="ignore"):
            inside = shift + radius_px <= previous.radius * (1.0 - _CONTAINMENT_MARGIN)
        return np.where(inside, shift, np.nan)

    def _search(self, rows: np.ndarray, uv_rows: np.ndarray, radius_px: float, uv: np.ndarray) -> _Search:
        """Search of the keypoints within radius_px of the finite predictions uv_rows (R, 2) of ``rows``;
        uv (W, 2): this search's predictions over all window rows, kept with its pairs."""
        if len(rows) == 0 or self._tree is None:
            empty = np.zeros(0, np.int64)
            return _Search(uv, float(radius_px), empty, empty, np.zeros(0), np.zeros(0, np.float32))
        i, j, pixel_distances = pairs_within_radius(uv_rows, self._tree, radius_px)
        pair_rows, pair_keypoints = rows[i], self._keypoints_finite[j]
        d = pair_distances(self._desc_window, self._desc_frame, pair_rows, pair_keypoints, self._metric)
        return _Search(uv, float(radius_px), pair_rows, pair_keypoints, pixel_distances, d)

    def _filter_previous(self, shift: np.ndarray, uv: np.ndarray, radius_px: float):
        """The kept search's candidate pairs of the rows with a finite ``shift`` (W,) that lie within
        radius_px of the new predictions uv (W, 2): (window rows, keypoints, descriptor distances)."""
        previous = self._previous
        s = shift[previous.rows]                                   # NaN: a row not reused
        v = previous.pixel_distances
        with np.errstate(invalid="ignore"):
            inside = v + s <= radius_px                            # |new offset| <= v + s
            open_question = np.flatnonzero(~inside & (v - s <= radius_px))   # |new offset| >= v - s
        offset = self._uv[previous.keypoints[open_question]] - uv[previous.rows[open_question]]
        inside[open_question[np.einsum("ij,ij->i", offset, offset) <= radius_px * radius_px]] = True
        return previous.rows[inside], previous.keypoints[inside], previous.distances[inside]
