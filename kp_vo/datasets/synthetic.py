"""Synthetic RGB-D sequences rendered from the procedural scenes: the package's embedded dataset.

``SyntheticSequence("street")`` is KITTI-like (fx = fy = 0.58 * width, 640x192, 10 Hz, 1 m per
frame, camera 1.65 m above the road, a 40 deg left turn); ``SyntheticSequence("room")`` is
Kinect-like (fx = fy = 525 * width / 640, 640x480, 30 Hz, hand-held);
``SyntheticSequence("random_room", seed=k)`` is the same camera in room k of random size and
furnishing (``kp_vo.datasets.random_room``), the hand-held ellipse scaled to its free floor. Frames carry
(H, W, 3) uint8 RGB with Gaussian pixel noise, (H, W) float32 exact depth in metres (0 = sky)
and the exact render pose as ``T_world_cam_gt``. Frames render lazily and are kept in a small
LRU cache.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Callable

import numpy as np

from kp_vo.datasets.base import IndexedSequence
from kp_vo.datasets.render import raycast, render
from kp_vo.datasets.scene import Scene, road_centerline
from kp_vo.datasets.scenes import SCENE_KINDS, make_scene
from kp_vo.datasets.trajectories import camera_pose, room_trajectory, street_trajectory
from kp_vo.errors import InvalidInputError
from kp_vo.types import CameraIntrinsics

__all__ = ["Scene", "SyntheticSequence", "camera_pose", "make_scene", "raycast", "render", "road_centerline",
           "room_trajectory", "street_trajectory", "synthetic_camera"]

logger = logging.getLogger(__name__)

DEFAULTS = {  # kind: (num_frames, width, height, fps)
    "street": (100, 640, 192, 10.0),
    "room": (300, 640, 480, 30.0),
    "random_room": (300, 640, 480, 30.0),
}
BLANK_GREY = 128
CACHE_FRAMES = 32


def synthetic_camera(kind: str, width: int, height: int) -> CameraIntrinsics:
    """Intrinsics of the synthetic cameras; principal point at the image centre ((W-1)/2, (H-1)/2)."""
    f = 0.58 * width if kind == "street" else 525.0 * width / 640.0
    return CameraIntrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))


def split_seeds(split: str, train: int, val: int, val_first: int, what: str) -> range:
    """Scene seeds of a training ``split`` drawn from random scenes: 0..train-1 for "train",
    val_first..val_first+val-1 for "val" (never trained on); InvalidInputError naming ``what``
    (e.g. "street") when the split would be empty."""
    count = train if split == "train" else val
    if count < 1:
        raise InvalidInputError(f"need at least one {split} {what}, got {count}")
    first = 0 if split == "train" else val_first
    return range(first, first + count)


def _default_trajectory(kind: str, num_frames: int, seed: int) -> np.ndarray:
    """(N, 4, 4) T_world_cam: the street drive, or the hand-held ellipse inside the room's free floor."""
    if kind == "street":
        return street_trajectory(num_frames, seed=seed)
    if kind == "room":
        return room_trajectory(num_frames, seed=seed)
    from kp_vo.datasets.random_room import free_ellipse, room_size
    size = room_size(seed)
    (cx, cy), radius = free_ellipse(size)
    return room_trajectory(num_frames, seed=seed, center=(cx, cy, 1.45), radius=radius)


class SyntheticSequence(IndexedSequence):
    """Rendered RGB-D sequence of scene ``kind`` ("street" | "room" | "random_room"); see the module docstring.

    trajectory: None (the kind's default trajectory from ``seed``), an (N, 4, 4) array of
        T_world_cam, or a callable ``f(num_frames) -> (N, 4, 4)``.
    blank_frames: raw frame indices (before ``start`` / ``stride``) rendered as uniform grey
        images with all-zero depth (textureless: for tracking loss / recovery tests); their
        ground truth stays the trajectory pose.
    noise_std: standard deviation of the per-frame Gaussian pixel noise (grey levels),
        deterministic from (seed, frame index).
    """

    has_depth = True

    def __init__(self, kind: str = "street", num_frames: int | None = None, width: int | None = None,
                 height: int | None = None, seed: int = 0, texture_dir: str | None = None,
                 noise_std: float = 2.0, blank_frames=(), trajectory: np.ndarray | Callable | None = None,
                 start: int = 0, stride: int = 1, max_frames: int | None = None):
        if kind not in SCENE_KINDS:
            raise InvalidInputError(f"unknown synthetic scene {kind!r}, expected one of {SCENE_KINDS}")
        d_frames, d_w, d_h, fps = DEFAULTS[kind]
        width, height = int(width or d_w), int(height or d_h)
        if width < 16 or height < 16:
            raise InvalidInputError(f"synthetic image size too small: {width}x{height}")
        if not noise_std >= 0:
            raise InvalidInputError(f"noise_std must be >= 0, got {noise_std}")
        self.kind, self.seed, self.noise_std = kind, int(seed), float(noise_std)
        self.name = f"synthetic_{kind}_{seed}"
        self.camera = synthetic_camera(kind, width, height)
        self.scene = make_scene(kind, seed, texture_dir)

        n = int(num_frames) if num_frames is not None else None
        if trajectory is None:
            n = d_frames if n is None else n
            poses = _default_trajectory(kind, n, seed)
        elif callable(trajectory):
            poses = np.asarray(trajectory(d_frames if n is None else n), np.float64)
        else:
            poses = np.asarray(trajectory, np.float64)
        if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) == 0 or not np.all(np.isfinite(poses)):
            raise InvalidInputError(f"trajectory must be a finite (N, 4, 4) array of T_world_cam, got shape {poses.shape}")
        R = poses[:, :3, :3]
        if not np.allclose(R @ R.transpose(0, 2, 1), np.eye(3), atol=1e-6) or np.any(np.linalg.det(R) < 0) \
                or not np.allclose(poses[:, 3], [0, 0, 0, 1]):
            raise InvalidInputError("trajectory poses must be rigid transforms (rotation block orthonormal, last row 0 0 0 1)")
        if n is not None and trajectory is not None and len(poses) != n:
            logger.info("trajectory has %d poses; num_frames=%d ignored", len(poses), n)
        self.blank_frames = frozenset(int(b) for b in blank_frames)
        stamps = np.round(np.arange(len(poses)) * (1e9 / fps)).astype(np.int64)
        self._set_frames(stamps, poses, start, stride, max_frames)
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _load(self, raw_index: int) -> tuple[np.ndarray, np.ndarray]:
        if raw_index in self._cache:
            self._cache.move_to_end(raw_index)
            image, depth = self._cache[raw_index]
            return image.copy(), depth.copy()
        h, w = self.camera.height, self.camera.width
        if raw_index in self.blank_frames:
            image = np.full((h, w, 3), BLANK_GREY, np.uint8)
            depth = np.zeros((h, w), np.float32)
        else:
            pose = self._poses[int(np.searchsorted(self._raw, raw_index))]
            image, depth = render(self.scene, pose, self.camera)
            if self.noise_std > 0:
                rng = np.random.default_rng([self.seed, raw_index, 7])
                noise = rng.standard_normal((h, w, 3), dtype=np.float32) * np.float32(self.noise_std)
                image = np.clip(image + noise + 0.5, 0, 255).astype(np.uint8)
        self._cache[raw_index] = (image, depth)
        if len(self._cache) > CACHE_FRAMES:
            self._cache.popitem(last=False)
        return image.copy(), depth.copy()

    def _frame_meta(self, raw_index: int) -> dict:
        return {"raw_index": int(raw_index), "blank": raw_index in self.blank_frames, "scene": self.kind}
