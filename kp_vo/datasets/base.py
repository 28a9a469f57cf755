"""The ``Sequence`` contract every dataset loader fulfils, and a base class that implements it.

A sequence is an ordered, indexable collection of ``kp_vo.types.Frame``s that loads images
lazily (only in ``__getitem__`` / iteration). Loaders list their files up front (cheap) and
read pixels on demand.

Frame selection options shared by every loader:
    start       first raw frame to use (default 0)
    stride      keep every ``stride``-th raw frame (default 1)
    max_frames  keep at most this many frames after start/stride (default: all)
Frame indices (``Frame.index``) are the positions in the selected sequence (0..N-1); the raw
dataset index is kept in ``Frame.meta["raw_index"]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator, Protocol, runtime_checkable

import cv2
import numpy as np

from kp_vo.errors import DatasetError
from kp_vo.types import CameraIntrinsics, Frame

logger = logging.getLogger(__name__)


@runtime_checkable
class Sequence(Protocol):
    """What every loader offers (see module docstring)."""

    name: str
    camera: CameraIntrinsics
    has_depth: bool

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Frame]: ...

    def __getitem__(self, i: int) -> Frame: ...

    def ground_truth(self) -> np.ndarray | None:
        """(N, 4, 4) float64 T_world_cam of every frame, or None when the dataset has none."""
        ...

    def stamps_ns(self) -> np.ndarray:
        """(N,) int64 timestamps in nanoseconds."""
        ...


def read_image_u8(path: str | Path) -> np.ndarray:
    """(H, W) grey or (H, W, 3) RGB uint8 from an image file (colour files are BGR(A) on disk; alpha is
    dropped). DatasetError when the file cannot be read or is not 8-bit."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(f"{path}: cannot read image")
    if image.dtype != np.uint8:
        raise DatasetError(f"{path}: expected an 8-bit image, got {image.dtype}")
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
    return image


def read_depth_png(path: str | Path, image_hw: tuple[int, int], depth_scale: float,
                   invalid_raw: int | None = None) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit single-channel depth PNG of raw units ``depth_scale`` per metre
    (TUM: 5000, 7-Scenes: 1000); raw 0 (and ``invalid_raw`` if given) -> 0 = no depth. DatasetError when
    the file cannot be read, is not 16-bit single-channel, or its size differs from ``image_hw``."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DatasetError(f"{path}: cannot read depth image")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise DatasetError(f"{path}: expected a 16-bit single-channel depth PNG, got {raw.dtype} {raw.shape}")
    if raw.shape != tuple(image_hw):
        raise DatasetError(f"{path}: depth {raw.shape} differs from image {tuple(image_hw)}")
    depth = raw.astype(np.float32) / np.float32(depth_scale)
    if invalid_raw is not None:
        depth[raw == invalid_raw] = 0.0
    return depth


def select_indices(num_raw: int, start: int | None = 0, stride: int | None = 1,
                   max_frames: int | None = None) -> np.ndarray:
    """(M,) int64 raw indices kept by the ``start`` / ``stride`` / ``max_frames`` options (None = default)."""
    start = 0 if start is None else int(start)
    stride = 1 if stride is None else int(stride)
    if start < 0:
        raise DatasetError(f"start must be >= 0, got {start}")
    if stride < 1:
        raise DatasetError(f"stride must be >= 1, got {stride}")
    if max_frames is not None and int(max_frames) < 0:
        raise DatasetError(f"max_frames must be >= 0, got {max_frames}")
    idx = np.arange(start, num_raw, stride, dtype=np.int64)
    if max_frames is not None:
        idx = idx[: int(max_frames)]
    return idx


class IndexedSequence:
    """Base class of the loaders: frame selection, indexing, iteration, stamps and ground truth.

    Subclasses set ``name``, ``camera``, ``has_depth`` and call ``_set_frames(raw_stamps_ns,
    raw_poses, start, stride, max_frames)``, then implement ``_load(raw_index) -> (image,
    depth | None)``.
    """

    name: str
    camera: CameraIntrinsics
    has_depth: bool = False

    def _set_frames(self, raw_stamps_ns: np.ndarray, raw_poses: np.ndarray | None,
                    start: int = 0, stride: int = 1, max_frames: int | None = None) -> None:
        raw_stamps_ns = np.asarray(raw_stamps_ns, dtype=np.int64)
        self._raw = select_indices(len(raw_stamps_ns), start, stride, max_frames)
        self._stamps = raw_stamps_ns[self._raw]
        if len(self._stamps) > 1 and np.any(np.diff(self._stamps) <= 0):
            bad = int(np.argmax(np.diff(self._stamps) <= 0))
            raise DatasetError(f"{self.name}: timestamps are not strictly increasing at frame {bad + 1}")
        self._poses = None if raw_poses is None else np.asarray(raw_poses, np.float64)[self._raw]

    def _load(self, raw_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _frame_meta(self, raw_index: int) -> dict:
        return {"raw_index": int(raw_index)}

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, i: int) -> Frame:
        n = len(self)
        i = int(i)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"{self.name}: frame {i} out of range (sequence has {n} frames)")
        raw = int(self._raw[i])
        image, depth = self._load(raw)
        pose = None if self._poses is None else self._poses[i].copy()
        return Frame(index=i, stamp_ns=int(self._stamps[i]), image=image, camera=self.camera,
                     depth=depth, T_world_cam_gt=pose, meta=self._frame_meta(raw))

    def __iter__(self) -> Iterator[Frame]:
        """Every readable frame in order; a frame whose files cannot be read is skipped with one
        logged line (the run goes on, as for a frame the odometry refuses)."""
        for i in range(len(self)):
            try:
                frame = self[i]
            except DatasetError as exc:
                logger.error("skipping frame %d: %s", i, exc)
                continue
            yield frame

    def ground_truth(self) -> np.ndarray | None:
        return None if self._poses is None else self._poses.copy()

    def stamps_ns(self) -> np.ndarray:
        return self._stamps.copy()

    def __repr__(self) -> str:
        c = self.camera
        return (f"{type(self).__name__}(name={self.name!r}, frames={len(self)}, {c.width}x{c.height}, "
                f"depth={self.has_depth}, gt={self._poses is not None})")
