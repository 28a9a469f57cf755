"""KITTI odometry benchmark loader.

Layout (as distributed by KITTI)::

    ROOT/sequences/SS/image_0/NNNNNN.png   left grayscale camera (image_1 right, image_2/3 colour)
    ROOT/sequences/SS/calib.txt            P0..P3 (3x4 projection rows), "P0:" labels optional
    ROOT/sequences/SS/times.txt            one timestamp (seconds) per frame
    ROOT/poses/SS.txt                      optional ground truth, 12 values per line

Ground truth line i is the 3x4 [R|t] mapping camera-0 coordinates of frame i into those of
frame 0, i.e. T_world_cam with world = camera 0 of frame 0 (x right, y down, z forward).
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from kp_vo.datasets.base import IndexedSequence, read_image_u8
from kp_vo.errors import CalibrationError, DatasetError
from kp_vo.trajio import read_kitti_poses
from kp_vo.types import CameraIntrinsics

logger = logging.getLogger(__name__)

_CAMERAS = ("image_0", "image_1", "image_2", "image_3")


def parse_kitti_calib(path: str | Path) -> dict[str, np.ndarray]:
    """Read a KITTI ``calib.txt``: {"P0": (3, 4) float64, ..., "Tr": (3, 4)} when present.

    Lines may carry labels ("P0: 707.09 0 ...") or not (then rows are named P0, P1, ... in
    order). Blank lines are skipped. Raises CalibrationError naming the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CalibrationError(f"cannot read calibration file {path}: {e.strerror or e}") from None
    calib: dict[str, np.ndarray] = {}
    unlabelled = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        label, sep, rest = line.partition(":")
        if sep:
            key, values = label.strip(), rest.split()
        else:
            key, values = f"P{unlabelled}", line.split()
            unlabelled += 1
        try:
            numbers = np.array([float(v) for v in values], dtype=np.float64)
        except ValueError:
            raise CalibrationError(f"{path}:{lineno}: not a list of numbers: {line[:60]!r}") from None
        if numbers.size != 12:
            raise CalibrationError(f"{path}:{lineno}: {key} has {numbers.size} values, expected 12 (a 3x4 matrix)")
        if not np.all(np.isfinite(numbers)):
            raise CalibrationError(f"{path}:{lineno}: {key} contains non-finite values")
        calib[key] = numbers.reshape(3, 4)
    if "P0" not in calib:
        raise CalibrationError(f"{path}: no P0 projection matrix found")
    return calib


def intrinsics_from_projection(P: np.ndarray, width: int, height: int) -> CameraIntrinsics:
    """Pinhole intrinsics of a rectified KITTI projection matrix P = K [I | t]."""
    try:
        return CameraIntrinsics(float(P[0, 0]), float(P[1, 1]), float(P[0, 2]), float(P[1, 2]), width, height)
    except Exception as e:  # InvalidInputError from a non-physical P
        raise CalibrationError(f"projection matrix is not a valid camera: {e}") from None


class KittiOdometry(IndexedSequence):
    """One KITTI odometry sequence; frames carry (H, W) uint8 gray (image_0/1) or (H, W, 3) RGB (image_2/3).

    root: the odometry root (holding ``sequences/``) or the sequence folder itself
    (``.../sequences/07``; then ``sequence`` may be omitted and ground truth is looked up in
    ``../../poses``). No depth.
    """

    has_depth = False

    def __init__(self, root: str | Path, sequence: str | int | None = None, camera: str = "image_0",
                 start: int = 0, stride: int = 1, max_frames: int | None = None):
        root = Path(root)
        if sequence is None:
            if (root / "calib.txt").is_file() and root.parent.name == "sequences":
                seq_dir, sequence = root, root.name
            else:
                raise DatasetError(f"{root}: a KITTI odometry root needs a sequence name (e.g. '07')")
        else:
            sequence = f"{int(sequence):02d}" if str(sequence).isdigit() else str(sequence)
            if not sequence or any(c in sequence for c in "/\\") or sequence in (".", ".."):
                raise DatasetError(f"KITTI sequence must be a name such as '07', got {sequence!r}")
            seq_dir = root / "sequences" / sequence
            if not seq_dir.is_dir() and root.name == sequence and (root / "calib.txt").is_file():
                seq_dir = root
        if camera not in _CAMERAS:
            raise DatasetError(f"unknown KITTI camera {camera!r}, expected one of {_CAMERAS}")
        if not seq_dir.is_dir():
            raise DatasetError(f"{seq_dir}: KITTI sequence folder not found")
        self.sequence = sequence
        self.name = f"kitti_{sequence}"
        self.camera_name = camera
        self._image_paths = sorted((seq_dir / camera).glob("*.png"))
        if not self._image_paths:
            raise DatasetError(f"{seq_dir / camera}: no PNG images")

        calib = parse_kitti_calib(seq_dir / "calib.txt")
        key = f"P{_CAMERAS.index(camera)}"
        if key not in calib:
            raise CalibrationError(f"{seq_dir / 'calib.txt'}: no {key} for camera {camera}")
        first = cv2.imread(str(self._image_paths[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise DatasetError(f"{self._image_paths[0]}: cannot read image")
        height, width = first.shape[:2]
        self.camera = intrinsics_from_projection(calib[key], width, height)
        self.calib = calib

        n = len(self._image_paths)
        stamps = self._read_times(seq_dir / "times.txt", n)
        poses = None
        poses_path = seq_dir.parent.parent / "poses" / f"{sequence}.txt"
        if poses_path.is_file():
            poses = read_kitti_poses(poses_path)
            if len(poses) != n:
                raise DatasetError(f"{poses_path}: {len(poses)} poses for {n} images")
            if key != "P0":
                # Poses are of camera 0; camera k sits at x = -P_k[0,3] / fx in camera-0 coordinates.
                T_cam0_camk = np.eye(4)
                T_cam0_camk[0, 3] = -calib[key][0, 3] / calib[key][0, 0]
                poses = poses @ T_cam0_camk
        self._set_frames(stamps, poses, start, stride, max_frames)
        logger.info("KITTI %s %s: %d frames %dx%d fx=%.4f gt=%s", sequence, camera, len(self), width, height,
                    self.camera.fx, poses is not None)

    @staticmethod
    def _read_times(path: Path, n: int) -> np.ndarray:
        if not path.is_file():
            logger.warning("%s missing: assuming 10 Hz", path)
            return np.arange(n, dtype=np.int64) * 100_000_000
        try:
            seconds = np.loadtxt(path, dtype=np.float64, ndmin=1)
        except ValueError as e:
            raise DatasetError(f"{path}: not a list of timestamps ({e})") from None
        if len(seconds) != n:
            raise DatasetError(f"{path}: {len(seconds)} timestamps for {n} images")
        return np.round(seconds * 1e9).astype(np.int64)

    def _load(self, raw_index: int) -> tuple[np.ndarray, None]:
        path = self._image_paths[raw_index]
        return read_image_u8(path), None

    def _frame_meta(self, raw_index: int) -> dict:
        return {"raw_index": int(raw_index), "path": str(self._image_paths[raw_index])}
