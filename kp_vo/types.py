"""Typed containers shared by every layer: camera intrinsics and one input frame.

Conventions (see docs/architecture.md "Conventions"):
- pixel (u, v): u right, v down, pixel centres at integer coordinates;
- camera optical frame: x right, y down, z forward;
- depth: float32 metres, 0 or NaN = invalid;
- poses: ``T_a_b`` is a 4x4 matrix mapping coordinates in frame b to frame a;
- time: integer nanoseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from kp_vo.errors import InvalidInputError


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of an undistorted image of ``width`` x ``height`` pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise InvalidInputError(f"camera intrinsics must be finite, got fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if self.fx <= 0 or self.fy <= 0:
            raise InvalidInputError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.width <= 0 or self.height <= 0:
            raise InvalidInputError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:
        """(3, 3) float64 calibration matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K: np.ndarray, width: int, height: int) -> "CameraIntrinsics":
        K = np.asarray(K, dtype=np.float64)
        if K.shape != (3, 3):
            raise InvalidInputError(f"K must be 3x3, got shape {K.shape}")
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    def scaled(self, sx: float, sy: float) -> "CameraIntrinsics":
        """Intrinsics of the same camera after resizing the image by (sx, sy).

        With pixel centres at integer coordinates, u' = sx * (u + 0.5) - 0.5.
        """
        return CameraIntrinsics(
            self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5,
            int(round(self.width * sx)), int(round(self.height * sy)),
        )


@dataclass
class Frame:
    """One camera frame as every dataset, bag reader and ROS adapter delivers it.

    image: (H, W) uint8 grayscale or (H, W, 3) uint8 RGB.
    depth: optional (H, W) float32 metres aligned with ``image`` (0 or NaN = invalid).
    T_world_cam_gt: optional (4, 4) ground-truth pose, used for evaluation only.
    """

    index: int
    stamp_ns: int
    image: np.ndarray
    camera: CameraIntrinsics
    depth: np.ndarray | None = None
    T_world_cam_gt: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def validate(self) -> None:
        """Raise InvalidInputError with one line saying what is wrong with this frame."""
        img = self.image
        if not isinstance(img, np.ndarray):
            raise InvalidInputError(f"frame {self.index}: image is not an array")
        if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3):
            raise InvalidInputError(f"frame {self.index}: image must be HxW or HxWx3, got shape {img.shape}")
        if img.shape[0] == 0 or img.shape[1] == 0:
            raise InvalidInputError(f"frame {self.index}: empty image {img.shape}")
        if img.dtype != np.uint8:
            raise InvalidInputError(f"frame {self.index}: image must be uint8, got {img.dtype}")
        h, w = img.shape[:2]
        if (w, h) != (self.camera.width, self.camera.height):
            raise InvalidInputError(
                f"frame {self.index}: image is {w}x{h} but camera_info says {self.camera.width}x{self.camera.height}")
        if self.depth is not None:
            d = self.depth
            if d.shape != (h, w):
                raise InvalidInputError(f"frame {self.index}: depth shape {d.shape} differs from image {(h, w)}")
            if d.dtype != np.float32:
                raise InvalidInputError(f"frame {self.index}: depth must be float32 metres, got {d.dtype}")



def sanitize_depth(depth: np.ndarray) -> np.ndarray:
    """Return a float32 copy of ``depth`` with NaN, inf and non-positive values set to 0 (invalid)."""
    d = np.asarray(depth, dtype=np.float32).copy()
    d[~np.isfinite(d) | (d <= 0)] = 0.0
    return d
