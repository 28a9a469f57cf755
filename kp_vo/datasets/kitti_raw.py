"""KITTI raw drive loader ("synced + rectified" data): images, stereo pairs, oxts ground truth, LiDAR depth.

Layout (as distributed by KITTI)::

    DATE/calib_cam_to_cam.txt, calib_imu_to_velo.txt, calib_velo_to_cam.txt  (kitti_raw_calib)
    DATE/DATE_drive_NNNN_sync/image_0K/data/IIIIIIIIII.png    K = 0 / 1 grey left / right, 2 / 3 colour
    DATE/DATE_drive_NNNN_sync/image_0K/timestamps.txt         "YYYY-MM-DD hh:mm:ss.fffffffff", line i = frame i
    DATE/DATE_drive_NNNN_sync/oxts/data/IIIIIIIIII.txt        one GPS/IMU packet per frame (oxts)
    DATE/DATE_drive_NNNN_sync/velodyne_points/data/IIIIIIIIII.bin   LiDAR scans (optional, any subset of frames)

Frames are the PNGs of the chosen camera; a frame's files share its number IIIIIIIIII.

Ground truth (``T_world_cam``, metric): world = the chosen rectified camera of the first frame
(x right, y down, z forward), as in the KITTI odometry benchmark. From the oxts pose T_enu_imu(i)
(``oxts.oxts_poses``) and the calibration chain T_rect0_imu = R_rect_00 T_cam0_velo T_velo_imu:

    T_enu_camk(i) = T_enu_imu(i) T_rect0_imu^-1 T_rect0_camk,    T_world_camk(i) = T_enu_camk(0)^-1 T_enu_camk(i)

LiDAR depth (option ``lidar_depth``): frames that have a velodyne scan carry its points projected
into the chosen rectified camera as a sparse (H, W) float32 depth map (metres along the optical
axis, 0 where no point landed); other frames carry none. Off by default, because a frame with
depth switches the odometry's ``auto`` depth source to "sensor".
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kp_vo.datasets.base import IndexedSequence, read_image_u8
from kp_vo.datasets.kitti import intrinsics_from_projection
from kp_vo.datasets.kitti_raw_calib import (
    CALIB_FILES,
    load_raw_calibration,
    project_to_depth,
    read_velodyne,
)
from kp_vo.datasets.oxts import VF, oxts_poses, read_oxts
from kp_vo.errors import CalibrationError, DatasetError

logger = logging.getLogger(__name__)

CAMERAS = ("image_00", "image_01", "image_02", "image_03")
STEREO_RIGHT = {"image_00": "image_01", "image_02": "image_03"}


def is_day_folder(path: Path) -> bool:
    """A KITTI raw day folder: it holds ``calib_cam_to_cam.txt`` (beside its drive folders)."""
    return (path / CALIB_FILES[0]).is_file()


def is_drive_folder(path: Path) -> bool:
    """A KITTI raw drive folder: ``image_0K/data`` in a day folder, or beside ``oxts`` or ``velodyne_points``."""
    return (any((path / camera / "data").is_dir() for camera in CAMERAS)
            and (is_day_folder(path.parent) or (path / "oxts").is_dir() or (path / "velodyne_points").is_dir()))


def is_kitti_raw(path: str | Path) -> bool:
    """A KITTI raw day or drive folder (what ``open_sequence`` opens as KittiRaw)."""
    path = Path(path).expanduser()
    return path.is_dir() and (is_day_folder(path) or is_drive_folder(path))


def drive_names(drive: Path) -> tuple[str, str]:
    """The names a drive folder answers to: its own and its NNNN part (DATE_drive_NNNN_sync)."""
    return drive.name, drive.name.split("_drive_")[-1].removesuffix("_sync")


def find_drive(day: Path, drive: str | None) -> Path:
    """The drive folder of ``day`` named ``drive`` (either of its ``drive_names``)."""
    drives = sorted(p for p in day.iterdir() if is_drive_folder(p))
    available = ", ".join(drive_names(p)[1] for p in drives) or "none"
    if drive is None:
        raise DatasetError(f"{day}: a KITTI raw day folder needs a drive as sequence (available: {available})")
    for path in drives:
        if str(drive) in drive_names(path):
            return path
    raise DatasetError(f"{day}: no drive {drive!r} (available: {available})")


def read_raw_timestamps(path: Path) -> np.ndarray:
    """(N,) int64 nanoseconds of a raw ``timestamps.txt`` (one date-time per line)."""
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return np.array([np.datetime64(line.replace(" ", "T"), "ns") for line in lines]).astype(np.int64)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read timestamps ({e.strerror or e})") from None
    except ValueError as e:
        raise DatasetError(f"{path}: not a list of date-times ({e})") from None


class KittiRaw(IndexedSequence):
    """One KITTI raw drive; frames carry (H, W) uint8 grey (image_00/01) or (H, W, 3) RGB (image_02/03).

    drive: the ``DATE_drive_NNNN_sync`` folder (its parent holds the calibration).
    camera: image_00 (default) .. image_03. lidar_depth: attach projected LiDAR depth (module docstring).
    Ground truth needs ``oxts/data``: a drive without it is refused.
    """

    def __init__(self, drive: str | Path, camera: str = "image_00", lidar_depth: bool = False,
                 start: int = 0, stride: int = 1, max_frames: int | None = None):
        drive = Path(drive)
        if camera not in CAMERAS:
            raise DatasetError(f"unknown KITTI raw camera {camera!r}, expected one of {CAMERAS}")
        self.drive, self.camera_name, self.lidar_depth_enabled = drive, camera, bool(lidar_depth)
        self.name = f"kitti_raw_{drive.name.removesuffix('_sync')}"
        self.calib = load_raw_calibration(drive.parent)
        self._k = CAMERAS.index(camera)
        self._image_paths = sorted((drive / camera / "data").glob("*.png"))
        if not self._image_paths:
            raise DatasetError(f"{drive / camera / 'data'}: no PNG images")
        numbers = [p.stem for p in self._image_paths]
        if not all(n.isdigit() for n in numbers):
            raise DatasetError(f"{drive / camera / 'data'}: image names must be frame numbers, e.g. 0000000000.png")
        self._numbers = np.array([int(n) for n in numbers])

        width, height = (int(v) for v in self.calib.image_sizes[self._k])
        first = read_image_u8(self._image_paths[0])
        if first.shape[:2] != (height, width):
            raise CalibrationError(f"{self._image_paths[0]}: image is {first.shape[1]}x{first.shape[0]} but "
                                   f"S_rect_0{self._k} says {width}x{height}")
        self.camera = intrinsics_from_projection(self.calib.P_rect[self._k], width, height)

        self._oxts = read_oxts(self._files("oxts", ".txt", required=True))
        self._scans = {int(n): p for n, p in zip(self._numbers, self._files("velodyne_points", ".bin")) if p}
        self.has_depth = self.lidar_depth_enabled and bool(self._scans)
        self._set_frames(self._stamps(), self._camera_poses(), start, stride, max_frames)
        logger.info("KITTI raw %s %s: %d frames %dx%d, %d LiDAR scans", drive.name, camera, len(self),
                    width, height, len(self._scans))

    def _files(self, stream: str, suffix: str, required: bool = False) -> list[Path | None]:
        """Per frame the file of ``stream`` with the frame's number (None where absent, unless required)."""
        folder = self.drive / stream / "data"
        if required and not folder.is_dir():
            raise DatasetError(f"{folder}: missing ({stream} is needed for the ground truth)")
        paths = [folder / f"{n:010d}{suffix}" for n in self._numbers]
        if required:
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise DatasetError(f"{missing[0]}: missing ({len(missing)} of {len(paths)} frames lack {stream})")
            return paths
        return [p if p.is_file() else None for p in paths]

    def _stamps(self) -> np.ndarray:
        path = self.drive / self.camera_name / "timestamps.txt"
        stamps = read_raw_timestamps(path)
        if self._numbers.max() >= len(stamps):
            raise DatasetError(f"{path}: {len(stamps)} timestamps, but frame {self._numbers.max()} exists")
        return stamps[self._numbers]

    def _camera_poses(self) -> np.ndarray:
        """(N, 4, 4) T_world_cam of every frame (module docstring)."""
        T_imu_cam = np.linalg.inv(self.calib.T_rect0_imu) @ self.calib.T_rect0_camk(self._k)
        T_enu_cam = oxts_poses(self._oxts) @ T_imu_cam
        return np.linalg.inv(T_enu_cam[0]) @ T_enu_cam

    def forward_speed(self) -> np.ndarray:
        """(N,) oxts forward speed vf (m/s) of the selected frames."""
        return self._oxts[self._raw, VF].copy()

    def has_scan(self, i: int) -> bool:
        """Whether selected frame ``i`` has a velodyne scan."""
        return int(self._numbers[self._raw[i]]) in self._scans

    def lidar_depth(self, i: int) -> np.ndarray:
        """(H, W) float32 sparse LiDAR depth of selected frame ``i`` in this camera; DatasetError without a scan."""
        number = int(self._numbers[self._raw[i]])
        if number not in self._scans:
            raise DatasetError(f"{self.name}: frame {number} has no velodyne scan")
        return self._scan_depth(number)

    def _scan_depth(self, number: int) -> np.ndarray:
        return project_to_depth(read_velodyne(self._scans[number]), self.calib.T_rect0_velo,
                                self.calib.P_rect[self._k], self.camera.width, self.camera.height)

    @property
    def stereo_baseline_m(self) -> float:
        """Baseline (m) between this (left) camera and its right partner."""
        return self.calib.baseline_m(self._k, CAMERAS.index(self._right_camera()))

    def right_image(self, i: int) -> np.ndarray:
        """The rectified right image paired with selected frame ``i`` (left camera only)."""
        return read_image_u8(self.drive / self._right_camera() / "data" / self._image_paths[self._raw[i]].name)

    def _right_camera(self) -> str:
        if self.camera_name not in STEREO_RIGHT:
            raise DatasetError(f"{self.camera_name} is a right camera: stereo pairs start at image_00 or image_02")
        return STEREO_RIGHT[self.camera_name]

    def _load(self, raw_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        image, number = read_image_u8(self._image_paths[raw_index]), int(self._numbers[raw_index])
        with_depth = self.lidar_depth_enabled and number in self._scans
        return image, (self._scan_depth(number) if with_depth else None)

    def _frame_meta(self, raw_index: int) -> dict:
        return {"raw_index": int(raw_index), "path": str(self._image_paths[raw_index])}
