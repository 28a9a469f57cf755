"""The keyframe window and the 3D points its keyframes observe.

Every 3D point has an integer id; a keyframe stores, per keypoint, the id of the point it
observes (-1 for none). A point seen by several keyframes (tracked, then kept when the next
keyframe is made) is one id, so the scale of the map propagates from keyframe to keyframe.
Points no keyframe of the window observes any more are forgotten.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from kp_vo.features.base import Features
from kp_vo.odometry.types import Keyframe


@dataclass
class WindowPoints:
    """Unique points observed by the window, for matching a new frame against.

    ids (P,) int64; xyz (P, 3) world coordinates; descriptors (P, D) of the newest observation;
    keyframe_of (P,) index into the window of that newest observing keyframe; uv (P, 2) float32
    pixel of that observation.
    """

    ids: np.ndarray
    xyz: np.ndarray
    descriptors: np.ndarray
    keyframe_of: np.ndarray
    uv: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def by_recency(self) -> np.ndarray:
        """Rows (P,) ordered by their newest observation, most recent keyframe first (ties: window order)."""
        return np.argsort(-self.keyframe_of, kind="stable")


class LocalMap:
    """A bounded window of keyframes (oldest first) and their 3D points."""

    def __init__(self, window_size: int):
        if window_size < 2:
            raise ValueError("the keyframe window needs at least 2 keyframes")
        self.window_size = window_size
        self.keyframes: list[Keyframe] = []
        self._xyz = np.zeros((0, 3))
        self._ids = np.zeros(0, np.int64)   # id of each row of _xyz, increasing (new ids are always larger)
        self._next_id = 0
        self._version = 0                   # bumped by every change of the window's points or observations
        self._window_cache: tuple[int, WindowPoints] | None = None

    def __len__(self) -> int:
        return len(self.keyframes)

    @property
    def num_points(self) -> int:
        return len(self._ids)

    def clear(self) -> None:
        self.__init__(self.window_size)

    # -- points ---------------------------------------------------------------------------
    def add_points(self, xyz: np.ndarray) -> np.ndarray:
        """Store new world points (P, 3); return their ids (P,)."""
        ids = np.arange(self._next_id, self._next_id + len(xyz), dtype=np.int64)
        self._xyz = np.vstack([self._xyz, np.asarray(xyz, np.float64).reshape(-1, 3)])
        self._ids = np.concatenate([self._ids, ids])
        self._next_id += len(xyz)
        return ids

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Rows of _xyz holding ``ids`` (binary search in the increasing id column); KeyError for unknown ids."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        rows = np.searchsorted(self._ids, ids)
        known = rows < len(self._ids)
        known[known] = self._ids[rows[known]] == ids[known]
        if not known.all():
            raise KeyError(f"unknown map point ids {ids[~known][:5].tolist()}")
        return rows

    def points(self, ids: np.ndarray) -> np.ndarray:
        """(len(ids), 3) world coordinates of known ids."""
        rows = self._rows(ids)
        return self._xyz[rows] if len(rows) else np.zeros((0, 3))

    def set_points(self, ids: np.ndarray, xyz: np.ndarray) -> None:
        """Move known points; the keyframes' ``points_world`` follow at the next :meth:`sync_all`."""
        rows = self._rows(ids)
        if len(rows):
            self._xyz[rows] = xyz
        self._version += 1

    # -- keyframes ------------------------------------------------------------------------
    def add_keyframe(self, keyframe: Keyframe, point_ids: np.ndarray) -> Keyframe | None:
        """Append a keyframe observing ``point_ids`` (one per keypoint, -1 = none).

        Returns the oldest keyframe when the window was full and it was dropped, else None.
        """
        keyframe.point_ids = np.asarray(point_ids, np.int64).copy()
        self._sync(keyframe)
        self.keyframes.append(keyframe)
        if len(self.keyframes) <= self.window_size:
            return None
        dropped = self.keyframes.pop(0)
        self._forget_unobserved()
        return dropped

    def assign(self, keyframe: Keyframe, keypoint_index: np.ndarray, ids: np.ndarray) -> None:
        """Let keypoints of ``keyframe`` observe points ``ids``."""
        keyframe.point_ids[keypoint_index] = ids
        self._sync(keyframe)

    def observations(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every (window keyframe index, keypoint index, point id) with a point, as three (M,) int arrays."""
        kf_idx, kp_idx, pid = [], [], []
        for w, kf in enumerate(self.keyframes):
            k = np.flatnonzero(kf.point_ids >= 0)
            kf_idx.append(np.full(len(k), w, np.int64))
            kp_idx.append(k)
            pid.append(kf.point_ids[k])
        if not kf_idx:
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        return np.concatenate(kf_idx), np.concatenate(kp_idx), np.concatenate(pid)

    def sync_all(self) -> None:
        """Refresh every keyframe's ``points_world`` from the point store (after edits of ``point_ids``)."""
        for kf in self.keyframes:
            self._sync(kf)

    def _sync(self, keyframe: Keyframe) -> None:
        ids = keyframe.point_ids
        pts = np.full((len(ids), 3), np.nan)
        has = ids >= 0
        pts[has] = self.points(ids[has])
        keyframe.points_world = pts
        self._version += 1

    def _forget_unobserved(self) -> None:
        observed = np.zeros(len(self._ids), dtype=bool)
        for kf in self.keyframes:
            observed[self._rows(kf.point_ids[kf.point_ids >= 0])] = True
        self._xyz = self._xyz[observed]
        self._ids = self._ids[observed]

    def window_points(self) -> WindowPoints:
        """Unique points of the window with the descriptor of their newest observation.

        Cached until the map changes (frames between keyframes match against the same window); the
        returned arrays are shared and must not be modified.
        """
        if self._window_cache is None or self._window_cache[0] != self._version:
            self._window_cache = (self._version, self._collect_window_points())
        return self._window_cache[1]

    def prepare_window_points(self) -> None:
        """Collect :meth:`window_points` and its recency order now (in the mapping worker), so that the
        next frame's matching finds them cached."""
        _ = self.window_points().by_recency

    def _collect_window_points(self) -> WindowPoints:
        ids, owners, keypoints = [], [], []
        for w in range(len(self.keyframes) - 1, -1, -1):  # newest first: np.unique keeps first occurrences
            k = np.flatnonzero(self.keyframes[w].point_ids >= 0)
            ids.append(self.keyframes[w].point_ids[k])
            owners.append(np.full(len(k), w, np.int64))
            keypoints.append(k)
        if not self.keyframes or sum(len(i) for i in ids) == 0:
            d = self.keyframes[-1].features.descriptors if self.keyframes else np.zeros((0, 32), np.uint8)
            return WindowPoints(np.zeros(0, np.int64), np.zeros((0, 3)), d[:0], np.zeros(0, np.int64),
                                np.zeros((0, 2), np.float32))
        ids_all, owners_all, kp_all = np.concatenate(ids), np.concatenate(owners), np.concatenate(keypoints)
        unique_ids, first = np.unique(ids_all, return_index=True)
        owners_u, kp_u = owners_all[first], kp_all[first]
        desc = self.gather("descriptors", owners_u, kp_u)
        uv = self.gather("keypoints", owners_u, kp_u).astype(np.float32)
        return WindowPoints(unique_ids, self.points(unique_ids), desc, owners_u, uv)

    def gather(self, field: str, keyframe_index: np.ndarray, keypoint_index: np.ndarray) -> np.ndarray:
        """Rows of the window keyframes' ``features.<field>`` (e.g. "keypoints", "descriptors") for the
        (window keyframe index, keypoint index) pairs (M,), (M,)."""
        return self.gather_rows([getattr(kf.features, field) for kf in self.keyframes], keyframe_index,
                                keypoint_index)

    def gather_rows(self, per_keyframe: list[np.ndarray], keyframe_index: np.ndarray,
                    keypoint_index: np.ndarray) -> np.ndarray:
        """Rows of ``per_keyframe`` (one array per window keyframe, a row per keypoint) for the (window
        keyframe index, keypoint index) pairs (M,), (M,): one indexing of the stacked arrays."""
        first_row = np.cumsum([0] + [len(kf.features) for kf in self.keyframes[:-1]])
        return np.concatenate(per_keyframe)[first_row[keyframe_index] + keypoint_index]


def new_keyframe(frame_index: int, stamp_ns: int, T_world_cam: np.ndarray, features: Features,
                 depth: np.ndarray | None) -> Keyframe:
    n = len(features)
    return Keyframe(frame_index, stamp_ns, T_world_cam.copy(), features, np.full((n, 3), np.nan),
                    np.full(n, -1, np.int64), depth)
