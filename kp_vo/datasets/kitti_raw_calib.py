"""Calibration of a KITTI raw recording day, and LiDAR scans projected into its rectified cameras.

Files of a day folder (``DATE/``)::

    calib_cam_to_cam.txt   per camera k = 00..03: K, D, R, T (unrectified), S_rect (W H of the
                           rectified images), R_rect (3x3), P_rect (3x4)
    calib_imu_to_velo.txt  R (3x3), T (3): IMU coordinates -> velodyne coordinates
    calib_velo_to_cam.txt  R (3x3), T (3): velodyne coordinates -> unrectified camera 00 coordinates

Frames: IMU and velodyne x forward, y left, z up; cameras x right, y down, z forward. The
rectified camera 00 ("rect0") is camera 00 turned by R_rect_00; every rectified camera k is
rect0 shifted along its axes: P_rect_0k = K [I | t_k] with t_k the rect0 origin in camera k,
and a point X in velodyne coordinates lands on pixel ~ P_rect_0k R_rect_00 T_cam0_velo X.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp_vo.errors import CalibrationError, DatasetError

CALIB_FILES = ("calib_cam_to_cam.txt", "calib_imu_to_velo.txt", "calib_velo_to_cam.txt")


def parse_raw_calib(path: str | Path) -> dict[str, np.ndarray]:
    """``KEY: v1 v2 ...`` lines of a raw calibration file -> {KEY: (n,) float64}; entries that are
    not numbers (``calib_time: 09-Jan-2012 ...``) are skipped. CalibrationError if unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise CalibrationError(f"cannot read calibration file {path}: {e.strerror or e}") from None
    entries = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            entries[key.strip()] = np.array([float(v) for v in rest.split()], np.float64)
        except ValueError:
            continue
    return entries


def _matrix(entries: dict, key: str, shape: tuple[int, int], path: Path) -> np.ndarray:
    values = entries.get(key)
    if values is None:
        raise CalibrationError(f"{path}: no {key}")
    if values.size != shape[0] * shape[1] or not np.all(np.isfinite(values)):
        raise CalibrationError(f"{path}: {key} must be {shape[0] * shape[1]} finite numbers, got {values.size}")
    return values.reshape(shape)


def _rigid(entries: dict, path: Path) -> np.ndarray:
    """(4, 4) [R | T] of a calib_*_to_*.txt file."""
    T = np.eye(4)
    T[:3, :3] = _matrix(entries, "R", (3, 3), path)
    T[:3, 3] = _matrix(entries, "T", (3, 1), path)[:, 0]
    if np.abs(T[:3, :3] @ T[:3, :3].T - np.eye(3)).max() > 1e-3:
        raise CalibrationError(f"{path}: R is not a rotation")
    return T


@dataclass(frozen=True)
class RawCalibration:
    """The calibration of one recording day.

    P_rect: (4, 3, 4) rectified projection matrices of cameras 00..03.
    image_sizes: (4, 2) int (width, height) of the rectified images (S_rect).
    R_rect_00: (3, 3) unrectified camera 00 -> rect0.
    T_cam0_velo: (4, 4) velodyne -> unrectified camera 00.
    T_velo_imu: (4, 4) IMU -> velodyne.
    """

    P_rect: np.ndarray
    image_sizes: np.ndarray
    R_rect_00: np.ndarray
    T_cam0_velo: np.ndarray
    T_velo_imu: np.ndarray

    @property
    def T_rect0_velo(self) -> np.ndarray:
        """(4, 4) velodyne -> rect0."""
        R = np.eye(4)
        R[:3, :3] = self.R_rect_00
        return R @ self.T_cam0_velo

    @property
    def T_rect0_imu(self) -> np.ndarray:
        """(4, 4) IMU -> rect0."""
        return self.T_rect0_velo @ self.T_velo_imu

    def T_rect0_camk(self, k: int) -> np.ndarray:
        """(4, 4) pose of rectified camera k in rect0 (a pure translation, -K^-1 P_rect_0k[:, 3])."""
        P = self.P_rect[k]
        T = np.eye(4)
        T[:3, 3] = -np.linalg.solve(P[:, :3], P[:, 3])
        return T

    def baseline_m(self, left: int, right: int) -> float:
        """Distance (m) along x from rectified camera ``left`` to ``right`` (0.54 m for 00 -> 01)."""
        return float(self.T_rect0_camk(right)[0, 3] - self.T_rect0_camk(left)[0, 3])


def load_raw_calibration(day: str | Path) -> RawCalibration:
    """The three calibration files of a day folder; CalibrationError naming a missing file or key."""
    day = Path(day)
    for name in CALIB_FILES:
        if not (day / name).is_file():
            raise CalibrationError(f"{day / name}: KITTI raw calibration file missing")
    cam_path, imu_path, velo_path = (day / name for name in CALIB_FILES)
    cam = parse_raw_calib(cam_path)
    P_rect = np.stack([_matrix(cam, f"P_rect_0{k}", (3, 4), cam_path) for k in range(4)])
    sizes = np.stack([_matrix(cam, f"S_rect_0{k}", (1, 2), cam_path)[0] for k in range(4)]).round().astype(int)
    R_rect = _matrix(cam, "R_rect_00", (3, 3), cam_path)
    if np.any(P_rect[:, 0, 0] <= 0) or np.any(P_rect[:, 1, 1] <= 0) or np.any(sizes <= 0):
        raise CalibrationError(f"{cam_path}: non-positive focal length or image size")
    return RawCalibration(P_rect=P_rect, image_sizes=sizes, R_rect_00=R_rect,
                          T_cam0_velo=_rigid(parse_raw_calib(velo_path), velo_path),
                          T_velo_imu=_rigid(parse_raw_calib(imu_path), imu_path))


def read_velodyne(path: str | Path) -> np.ndarray:
    """(N, 4) float32 (x, y, z, reflectance) rows of a velodyne ``.bin`` scan (velodyne frame)."""
    try:
        raw = np.fromfile(path, dtype=np.float32)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read velodyne scan ({e.strerror or e})") from None
    if raw.size % 4:
        raise DatasetError(f"{path}: velodyne scan size is not a multiple of 4 float32 values")
    return raw.reshape(-1, 4)


def project_to_depth(points: np.ndarray, T_rect0_points: np.ndarray, P_rect: np.ndarray,
                     width: int, height: int) -> np.ndarray:
    """Sparse (height, width) float32 depth map (metres, 0 = no point) of (N, >=3) points.

    T_rect0_points (4, 4) maps the points' frame into rect0, P_rect (3, 4) projects rect0 into
    the image (its third row [0 0 1 t] makes the homogeneous w the depth along that camera's
    axis). Each point goes to its nearest pixel (pixel centres at integer coordinates); where
    several land on one pixel the nearest is kept; points behind the camera or outside the
    image are dropped.
    """
    xyz = np.asarray(points, np.float64)[:, :3]
    M = P_rect @ T_rect0_points                                   # (3, 4): points -> image
    uvw = xyz @ M[:, :3].T + M[:, 3]
    front = uvw[:, 2] > 0
    uvw = uvw[front]
    u = np.round(uvw[:, 0] / uvw[:, 2]).astype(np.int64)
    v = np.round(uvw[:, 1] / uvw[:, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    depth = np.full(height * width, np.inf)
    np.minimum.at(depth, v[inside] * width + u[inside], uvw[inside, 2])
    depth[~np.isfinite(depth)] = 0.0
    return depth.reshape(height, width).astype(np.float32)
