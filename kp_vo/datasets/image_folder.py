"""A folder of images (png/jpg, sorted by file name) with known intrinsics and a fixed frame rate."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kp_vo.datasets.base import IndexedSequence, read_image_u8
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.types import CameraIntrinsics

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_images(root: Path) -> list[Path]:
    """Image files directly in ``root``, sorted by name."""
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


class ImageFolder(IndexedSequence):
    """Frames carry (H, W) uint8 gray or (H, W, 3) uint8 RGB images; stamps are i / fps; no depth, no ground truth.

    Every image must be ``camera.width`` x ``camera.height``.
    """

    has_depth = False

    def __init__(self, root: str | Path, camera: CameraIntrinsics, fps: float = 10.0,
                 start: int = 0, stride: int = 1, max_frames: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: image folder not found")
        if not isinstance(camera, CameraIntrinsics):
            raise InvalidInputError(f"camera must be CameraIntrinsics, got {type(camera).__name__}")
        if not fps > 0:
            raise DatasetError(f"fps must be positive, got {fps}")
        self.root = root
        self.name = f"images_{root.name}"
        self.camera = camera
        self._paths = list_images(root)
        if not self._paths:
            raise DatasetError(f"{root}: no png/jpg images")
        stamps = np.round(np.arange(len(self._paths)) * (1e9 / fps)).astype(np.int64)
        self._set_frames(stamps, None, start, stride, max_frames)

    def _load(self, raw_index: int) -> tuple[np.ndarray, None]:
        path = self._paths[raw_index]
        image = read_image_u8(path)
        h, w = image.shape[:2]
        if (w, h) != (self.camera.width, self.camera.height):
            raise DatasetError(f"{path}: image is {w}x{h} but the camera is {self.camera.width}x{self.camera.height}")
        return image, None

    def _frame_meta(self, raw_index: int) -> dict:
        return {"raw_index": int(raw_index), "path": str(self._paths[raw_index])}
