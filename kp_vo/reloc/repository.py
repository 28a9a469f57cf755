"""The 3D keypoint repository (ViewSynth §4.1): the top-K keypoints of every mapped frame with
their 3D world coordinates, descriptors, scores and source frame, plus a descriptor index.

Arrays (row i = map point i):
    points_world (N, 3) float64  world coordinates (metres)
    descriptors  (N, D) float32 (metric "l2") | (N, B) uint8 (metric "hamming")
    scores       (N,)   float32  detector score
    keypoints    (N, 2) float32  pixel (u, v) in the source frame
    frame_ids    (N,)   int64    row of the source frame in the frame table
Frame table (row j = mapped frame j):
    frame_indices (F,) int64, frame_stamps_ns (F,) int64, frame_poses (F, 4, 4) float64 T_world_cam

The arrays are views of growable buffers: ``add_points`` appends in amortised O(new rows) (a full
buffer doubles its capacity) and keeps the descriptor index current without building one on the
caller's thread (``kp_vo.reloc.live_index``), so a keyframe added to the odometry's archive costs
about as much at 0.5 M points as at 5 k, apart from one copy per doubling
(``scripts/bench_archive.py``).

Memory: ``nbytes`` is what the map holds (allocated buffers plus an estimate of its descriptor index);
``max_bytes`` bounds it: near the bound the buffers grow only as far as it allows, ``can_add`` says
whether a frame's points still fit, and ``add_points`` past it raises ``ArchiveFullError`` and adds
nothing. The policy at the bound is the owner's (the odometry's archive keeps its earlier keyframes and
stops archiving, as with its keyframe count bound).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np

from kp_vo.errors import InvalidInputError, MapFileError
from kp_vo.features.base import Extractor, Features, extract_frame
from kp_vo.geometry.camera import lift_keypoints
from kp_vo.geometry.se3 import transform
from kp_vo.reloc.index import DescriptorIndex, IndexConfig, choose_kind
from kp_vo.reloc.live_index import LiveIndex
from kp_vo.reloc.map_file import read_map_file, write_map_file
from kp_vo.types import CameraIntrinsics, Frame

logger = logging.getLogger(__name__)

_POINT_ARRAYS = ("points_world", "descriptors", "scores", "keypoints", "frame_ids")
_FRAME_ARRAYS = ("frame_indices", "frame_stamps_ns", "frame_poses")


def lift_to_camera(uv: np.ndarray, depth: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    """3D camera-frame points (N, 3) float64 of pixels ``uv`` (N, 2) using the depth at the nearest
    pixel of ``depth`` (H, W) float32 metres; rows are NaN where the depth is invalid or off-image."""
    return lift_keypoints(np.asarray(uv, np.float64).reshape(-1, 2), depth, camera.K)[0]


class _Table:
    """Columns of one row count, appended in amortised O(new rows): a full buffer doubles its capacity
    and a read-only one (memory-mapped from a map file) is copied at the first append. Readers get
    views of the filled rows, which later appends never modify."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self.set(columns)

    def set(self, columns: dict[str, np.ndarray]) -> None:
        self._buffers = dict(columns)
        self.rows = len(next(iter(columns.values())))

    def __getitem__(self, name: str) -> np.ndarray:
        return self._buffers[name][: self.rows]

    @property
    def capacity(self) -> int:
        return len(next(iter(self._buffers.values())))

    @property
    def row_bytes(self) -> int:
        return sum(b.itemsize * int(np.prod(b.shape[1:])) for b in self._buffers.values())

    def capacity_after(self, end: int, limit: int | None = None) -> int:
        """The capacity once ``end`` rows are held: unchanged while they fit a writable buffer, else doubled
        (at least 64 rows), but not past ``limit`` rows (never below ``end``)."""
        writable = all(b.flags.writeable for b in self._buffers.values())
        if end <= self.capacity and writable:
            return self.capacity
        grown = max(2 * self.capacity, 64)
        return max(end, grown if limit is None else min(grown, limit))

    def append(self, parts: dict[str, np.ndarray], limit: int | None = None) -> None:
        """Append rows; a buffer that must grow gets ``capacity_after(end, limit)`` rows."""
        end = self.rows + len(next(iter(parts.values())))
        capacity = self.capacity_after(end, limit)
        for name, part in parts.items():
            buffer = self._buffers[name]
            if end > len(buffer) or not buffer.flags.writeable:
                grown = np.empty((capacity,) + buffer.shape[1:], buffer.dtype)
                grown[: self.rows] = buffer[: self.rows]
                self._buffers[name] = buffer = grown
            buffer[self.rows: end] = part
        self.rows = end


class ArchiveFullError(InvalidInputError):
    """``add_points`` on a map whose ``max_bytes`` the new points would pass (nothing is added)."""


def _column(table: str, name: str) -> property:
    return property(lambda self: getattr(self, table)[name])


def _check_pose(T: np.ndarray, what: str) -> np.ndarray:
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InvalidInputError(f"{what} must be a finite 4x4 pose, got shape {T.shape}")
    return T


class Repository:
    """A keypoint map: see the module docstring for the arrays. Build with ``empty`` + ``add_*``,
    ``from_keyframes``, ``build_repository`` or ``load``; search with ``index``."""

    def __init__(self, metric: str, descriptor_dim: int, extractor: str = "", metadata: dict | None = None,
                 index_config: IndexConfig | None = None, max_bytes: int | None = None):
        if metric not in ("l2", "hamming"):
            raise InvalidInputError(f"unknown descriptor metric {metric!r}")
        self.metric = metric
        self.descriptor_dim = int(descriptor_dim)
        self.extractor = extractor
        self.metadata = dict(metadata or {})
        self.index_config = index_config or IndexConfig()
        if max_bytes is not None and not max_bytes > 0:
            raise InvalidInputError(f"max_bytes must be > 0 (or None: unbounded), got {max_bytes}")
        self.max_bytes = max_bytes   # bound of ``nbytes`` that ``add_points`` keeps (None: unbounded)
        dtype = np.uint8 if metric == "hamming" else np.float32
        self._points = _Table({"points_world": np.zeros((0, 3), np.float64),
                               "descriptors": np.zeros((0, self.descriptor_dim), dtype),
                               "scores": np.zeros(0, np.float32), "keypoints": np.zeros((0, 2), np.float32),
                               "frame_ids": np.zeros(0, np.int64)})
        self._frames = _Table({"frame_indices": np.zeros(0, np.int64), "frame_stamps_ns": np.zeros(0, np.int64),
                               "frame_poses": np.zeros((0, 4, 4), np.float64)})
        self._index = LiveIndex(metric, self.index_config)

    points_world = _column("_points", "points_world")
    descriptors = _column("_points", "descriptors")
    scores = _column("_points", "scores")
    keypoints = _column("_points", "keypoints")
    frame_ids = _column("_points", "frame_ids")
    frame_indices = _column("_frames", "frame_indices")
    frame_stamps_ns = _column("_frames", "frame_stamps_ns")
    frame_poses = _column("_frames", "frame_poses")

    def _set_arrays(self, arrays: dict[str, np.ndarray], index: DescriptorIndex | None = None) -> None:
        """Replace every array (a loaded or merged map) and the index (None: built when needed)."""
        self._points.set({name: arrays[name] for name in _POINT_ARRAYS})
        self._frames.set({name: arrays[name] for name in _FRAME_ARRAYS})
        self._index = LiveIndex(self.metric, self.index_config, index)
        self._index.extend(self.descriptors)   # a large map without a stored index starts its build now

    def __len__(self) -> int:
        return self._points.rows

    @property
    def num_frames(self) -> int:
        return self._frames.rows

    def __repr__(self) -> str:
        return (f"Repository({len(self)} points from {self.num_frames} frames, extractor={self.extractor!r}, "
                f"metric={self.metric}, dim={self.descriptor_dim})")

    # ------------------------------------------------------------------ building
    def add_points(self, points_world: np.ndarray, features: Features, frame_index: int, stamp_ns: int,
                   T_world_cam: np.ndarray, top_k: int | None = None) -> int:
        """Add one mapped frame: ``features`` (N) with world points (N, 3) (NaN rows are skipped).

        Keeps the ``top_k`` highest-scoring keypoints that have a finite 3D point (all if None).
        Returns the number of points added. Amortised O(added points); the descriptor index follows
        (see ``kp_vo.reloc.live_index``).
        """
        if features.metric != self.metric:
            raise InvalidInputError(f"features use metric {features.metric!r} but the map uses {self.metric!r}")
        if features.descriptors.shape[1:] != (self.descriptor_dim,):
            raise InvalidInputError(
                f"descriptor width {features.descriptors.shape[1:]} differs from the map's {self.descriptor_dim}")
        points_world = np.asarray(points_world, np.float64)
        if points_world.shape != (len(features), 3):
            raise InvalidInputError(f"points_world must be ({len(features)}, 3), got {points_world.shape}")
        T_world_cam = _check_pose(T_world_cam, "T_world_cam")
        valid = np.flatnonzero(np.all(np.isfinite(points_world), axis=1))
        valid = valid[np.argsort(-features.scores[valid], kind="stable")]
        if top_k is not None:
            valid = valid[: int(top_k)]
        plan = self._plan(len(valid), 1)
        if plan is None:
            raise ArchiveFullError(f"map at its memory bound: {self.nbytes} of {self.max_bytes} bytes, "
                                   f"{len(valid)} more points do not fit")
        frame_row = self.num_frames
        self._frames.append({"frame_indices": [frame_index], "frame_stamps_ns": [stamp_ns],
                             "frame_poses": T_world_cam[None]}, plan[1])
        self._points.append({"points_world": points_world[valid], "descriptors": features.descriptors[valid],
                             "scores": features.scores[valid], "keypoints": features.keypoints[valid],
                             "frame_ids": np.full(len(valid), frame_row, np.int64)}, plan[0])
        self._index.extend(self.descriptors)
        return len(valid)

    def add_frame(self, frame: Frame, features: Features, T_world_cam: np.ndarray | None = None,
                  top_k: int | None = None) -> int:
        """Add a frame with depth: lift ``features`` with ``frame.depth`` and place them with
        ``T_world_cam`` (default: the frame's ground truth). Returns the number of points added."""
        if frame.depth is None:
            raise InvalidInputError(f"frame {frame.index}: mapping needs a depth image")
        T = frame.T_world_cam_gt if T_world_cam is None else T_world_cam
        if T is None:
            raise InvalidInputError(f"frame {frame.index}: mapping needs a pose (no ground truth and none given)")
        T = _check_pose(T, f"frame {frame.index} pose")
        points_world = transform(T, lift_to_camera(features.keypoints, frame.depth, frame.camera))
        return self.add_points(points_world, features, frame.index, frame.stamp_ns, T, top_k)

    @classmethod
    def from_keyframes(cls, keyframes: Iterable, top_k: int | None = 300, extractor: str = "",
                       index_config: IndexConfig | None = None) -> "Repository":
        """A map from a VO run's keyframes (``kp_vo.odometry.types.Keyframe``: pose, features and
        ``points_world`` (N, 3) with NaN where unknown)."""
        repo: Repository | None = None
        for kf in keyframes:
            if repo is None:
                repo = cls(kf.features.metric, kf.features.descriptors.shape[1], extractor,
                           {"source": "keyframes", "top_k": top_k}, index_config)
            repo.add_points(kf.points_world, kf.features, kf.frame_index, kf.stamp_ns, kf.T_world_cam, top_k)
        if repo is None:
            raise InvalidInputError("cannot build a map from zero keyframes")
        return repo

    def merge(self, other: "Repository") -> "Repository":
        """A new repository holding this map's points then ``other``'s (same metric and width).

        Both maps must share one world frame; frame rows of ``other`` are renumbered.
        """
        if (other.metric, other.descriptor_dim) != (self.metric, self.descriptor_dim):
            raise InvalidInputError(
                f"cannot merge a {other.metric}/{other.descriptor_dim} map into a {self.metric}/{self.descriptor_dim} map")
        out = Repository(self.metric, self.descriptor_dim, self.extractor or other.extractor,
                         {**other.metadata, **self.metadata}, self.index_config)
        arrays = {}
        for name in _POINT_ARRAYS + _FRAME_ARRAYS:
            parts = [getattr(self, name), getattr(other, name)]
            if name == "frame_ids":
                parts[1] = parts[1] + self.num_frames
            arrays[name] = np.concatenate(parts)
        out._set_arrays(arrays)
        return out

    # ------------------------------------------------------------------ memory
    def _index_row_bytes(self, rows: int) -> int:
        """Estimated bytes per point of the descriptor index over ``rows`` points: its codes (the descriptor,
        or one byte per dimension for float IVF with sq8 codes), plus an 8-byte id in IVF lists, plus the
        2 * hnsw_m level-0 links of HNSW."""
        config, kind = self.index_config, choose_kind(rows, self.index_config)
        row = self._points["descriptors"].itemsize * self.descriptor_dim
        if kind == "ivf":
            codes = self.descriptor_dim if (self.metric == "l2" and config.ivf_codes == "sq8") else row
            return codes + 8
        if kind == "hnsw":
            return row + 2 * config.hnsw_m * 4
        return row

    def _bytes(self, point_capacity: int, frame_capacity: int, points: int) -> int:
        return (point_capacity * self._points.row_bytes + frame_capacity * self._frames.row_bytes
                + points * self._index_row_bytes(points))

    def _plan(self, points: int, frames: int) -> tuple[int, int, int] | None:
        """(point capacity, frame capacity, nbytes) after adding ``points`` points of ``frames`` frames; with
        ``max_bytes`` the buffers grow only as far as the bound allows, and None when even exact-fit buffers
        would pass it."""
        end_p, end_f = len(self) + int(points), self.num_frames + int(frames)
        cap_f = self._frames.capacity_after(end_f)
        cap_p = self._points.capacity_after(end_p)
        total = self._bytes(cap_p, cap_f, end_p)
        if self.max_bytes is None or total <= self.max_bytes:
            return cap_p, cap_f, total
        cap_f = end_f if cap_f > self._frames.capacity else cap_f   # no spare frame rows near the bound
        room = self.max_bytes - self._bytes(0, cap_f, 0)
        # point rows that fit with their index share once filled (the index kind may change on the way)
        limit = room // (self._points.row_bytes + self._index_row_bytes(end_p))
        limit = min(limit, room // (self._points.row_bytes + self._index_row_bytes(max(limit, end_p))))
        if limit < end_p:
            return None
        cap_p = self._points.capacity_after(end_p, limit)
        total = self._bytes(cap_p, cap_f, end_p)
        return (cap_p, cap_f, total) if total <= self.max_bytes else None

    @property
    def nbytes(self) -> int:
        """Bytes the map holds: the allocated point and frame buffers (spare capacity included; memory-mapped
        ones too, which the first append copies) plus the descriptor index over every point (estimated
        from its codes, see ``_index_row_bytes``: the index is built lazily). A background index build
        holds a second index while it runs; that transient copy is not counted."""
        return self._bytes(self._points.capacity, self._frames.capacity, len(self))

    def nbytes_after(self, points: int, frames: int = 1) -> int:
        """``nbytes`` once ``points`` more points of ``frames`` more frames are added (a buffer's growth
        included, clamped by ``max_bytes``)."""
        plan = self._plan(points, frames)
        return self._bytes(*self._plan_unbounded(points, frames)) if plan is None else plan[2]

    def _plan_unbounded(self, points: int, frames: int) -> tuple[int, int, int]:
        end_p = len(self) + int(points)
        return (self._points.capacity_after(end_p), self._frames.capacity_after(self.num_frames + int(frames)),
                end_p)

    def can_add(self, points: int, frames: int = 1) -> bool:
        """Whether ``points`` more points of ``frames`` frames fit under ``max_bytes`` (always, without one)."""
        return self._plan(points, frames) is not None

    # ------------------------------------------------------------------ search
    @property
    def index(self) -> DescriptorIndex:
        """The descriptor index over every point, built on first use (kind chosen by map size, see
        ``IndexConfig``); while a better one is built in the background, the previous one, kept up to date."""
        return self._index.current(self.descriptors)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path, include_index: bool | None = None) -> None:
        """Write the map atomically (see ``kp_vo.reloc.map_file``).

        include_index: also store the FAISS index (default: when the map is large enough for a
        trained IVF/HNSW index; a flat index rebuilds by copying); it is reused on load when it matches.
        """
        arrays = {name: np.asarray(getattr(self, name)) for name in _POINT_ARRAYS + _FRAME_ARRAYS}
        meta = {"kind": "kp_vo.keypoint_map", "metric": self.metric, "descriptor_dim": self.descriptor_dim,
                "extractor": self.extractor, "num_points": len(self), "num_frames": self.num_frames,
                "user": self.metadata}
        if include_index is None:
            include_index = choose_kind(len(self), self.index_config) != "flat"
        if include_index:
            index = self._index.finished(self.descriptors)
            arrays["faiss_index"] = index.serialize()
            meta["index"] = {"kind": index.kind, "ntotal": len(index)}
        write_map_file(path, arrays, meta)
        logger.info("saved %r to %s", self, path)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True, verify: bool = True,
             index_config: IndexConfig | None = None) -> "Repository":
        """Read a map written by ``save``; with ``mmap`` the point arrays stay memory-mapped (read-only
        until the first ``add``, which copies them). Raises MapFileError for a bad file."""
        arrays, meta = read_map_file(path, mmap=mmap, verify=verify)
        if meta.get("kind") != "kp_vo.keypoint_map":
            raise MapFileError(f"{path} is a kp_vo container but not a keypoint map (kind {meta.get('kind')!r})")
        missing = [n for n in _POINT_ARRAYS + _FRAME_ARRAYS if n not in arrays]
        if missing:
            raise MapFileError(f"{path} lacks arrays {missing}")
        try:
            repo = cls(meta["metric"], int(meta["descriptor_dim"]), meta.get("extractor", ""), meta.get("user", {}),
                       index_config)
        except (KeyError, InvalidInputError, TypeError, ValueError) as exc:
            raise MapFileError(f"{path} has bad map metadata: {exc}") from None
        n = len(arrays["points_world"])
        expected = {"points_world": (n, 3), "descriptors": (n, repo.descriptor_dim), "scores": (n,),
                    "keypoints": (n, 2), "frame_ids": (n,)}
        for name, shape in expected.items():
            if arrays[name].shape != shape or arrays[name].dtype != getattr(repo, name).dtype:
                raise MapFileError(f"{path}: array {name} is {arrays[name].dtype}{arrays[name].shape}, "
                                   f"expected {getattr(repo, name).dtype}{shape}")
        f = len(arrays["frame_indices"])
        if (arrays["frame_stamps_ns"].shape != (f,) or arrays["frame_poses"].shape != (f, 4, 4)
                or (n and (int(np.min(arrays["frame_ids"])) < 0 or int(np.max(arrays["frame_ids"])) >= f))):
            raise MapFileError(f"{path}: frame table is inconsistent with {f} frames")
        stored, index = meta.get("index"), None
        if "faiss_index" in arrays and isinstance(stored, dict) and stored.get("ntotal") == n:
            try:
                index = DescriptorIndex.deserialize(arrays["faiss_index"], repo.metric, str(stored.get("kind")),
                                                    repo.descriptor_dim, repo.index_config)
            except (RuntimeError, InvalidInputError) as exc:
                raise MapFileError(f"{path}: stored FAISS index does not load: {exc}") from None
        repo._set_arrays(arrays, index)
        logger.info("loaded %r from %s", repo, path)
        return repo


def build_repository(frames: Iterable[Frame], extractor: Extractor, top_k: int | None = 300, every: int = 1,
                     poses: dict[int, np.ndarray] | None = None, index_config: IndexConfig | None = None) -> Repository:
    """Map every ``every``-th frame (which must have depth) with its top-``top_k`` keypoints (extracted
    from the image, or from the depth for depth extractors such as ViewSynth).

    poses: optional {frame.index: T_world_cam} (e.g. from a VO run); otherwise each frame's
    ground-truth pose is used.
    """
    if every < 1:
        raise InvalidInputError(f"every must be >= 1, got {every}")
    if top_k is not None and top_k < 1:
        raise InvalidInputError(f"top_k must be >= 1 (or None for every keypoint), got {top_k}")
    repo: Repository | None = None
    for i, frame in enumerate(frames):
        if i % every:
            continue
        frame.validate()
        features = extract_frame(extractor, frame)
        if repo is None:
            repo = Repository(features.metric, features.descriptors.shape[1], extractor.name,
                              {"source": "frames", "top_k": top_k, "every": every}, index_config)
        pose = None if poses is None else poses.get(frame.index)
        repo.add_frame(frame, features, pose, top_k)
    if repo is None:
        raise InvalidInputError("cannot build a map from zero frames")
    logger.info("built %r", repo)
    return repo
