"""OXTS GPS/IMU packets of the KITTI raw data as metric poses (the raw devkit's Mercator convention).

A packet is one line of ``oxts/data/NNNNNNNNNN.txt``: 30 numbers, of which these are used
(``oxts/dataformat.txt``)::

    0 lat (deg)   1 lon (deg)   2 alt (m)
    3 roll (rad, 0 = level, positive = left side up)
    4 pitch (rad, 0 = level, positive = front down)
    5 yaw (rad, 0 = east, positive = counter-clockwise)
    8 vf (m/s, forward speed parallel to the earth's surface)

IMU frame: x forward, y left, z up. World frame of ``oxts_poses``: a local east-north-up frame
(x east, y north, z up) whose origin is the first packet's position. Horizontal coordinates
are spherical Mercator coordinates on a sphere of the WGS84 equatorial radius, shrunk by the
Mercator scale cos(latitude of the first packet) so that they are metres near the drive:

    mx = s * R * lon * pi / 180        my = s * R * ln(tan((90 + lat) * pi / 360))

The orientation is R = Rz(yaw) Ry(pitch) Rx(roll) (IMU -> world).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kp_vo.errors import DatasetError

EARTH_RADIUS_M = 6378137.0          # WGS84 equatorial radius, the devkit's sphere
PACKET_VALUES = 30
LAT, LON, ALT, ROLL, PITCH, YAW, VF = 0, 1, 2, 3, 4, 5, 8


def mercator_scale(lat_deg: float) -> float:
    """Mercator scale s = cos(lat) of a reference latitude (degrees)."""
    return float(np.cos(np.deg2rad(lat_deg)))


def latlon_to_mercator(lat_deg, lon_deg, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(mx, my) metres of latitudes / longitudes (degrees, scalars or arrays of one shape)."""
    lat, lon = np.asarray(lat_deg, np.float64), np.asarray(lon_deg, np.float64)
    mx = scale * EARTH_RADIUS_M * np.deg2rad(lon)
    my = scale * EARTH_RADIUS_M * np.log(np.tan(np.deg2rad(90.0 + lat) / 2.0))
    return mx, my


def read_oxts(paths: list[Path]) -> np.ndarray:
    """(N, 30) float64 packets of N oxts files; DatasetError naming the first bad file."""
    packets = np.empty((len(paths), PACKET_VALUES), np.float64)
    for i, path in enumerate(paths):
        try:
            values = np.array(Path(path).read_text().split(), dtype=np.float64)
        except OSError as e:
            raise DatasetError(f"{path}: cannot read oxts packet ({e.strerror or e})") from None
        except ValueError:
            raise DatasetError(f"{path}: oxts packet is not a list of numbers") from None
        if values.size != PACKET_VALUES:
            raise DatasetError(f"{path}: oxts packet has {values.size} values, expected {PACKET_VALUES}")
        if not np.all(np.isfinite(values[:VF + 1])):
            raise DatasetError(f"{path}: oxts position, orientation or speed is not finite")
        packets[i] = values
    return packets


def _rotation(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """(3, 3) R = Rz(yaw) Ry(pitch) Rx(roll), IMU -> world."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def oxts_poses(packets: np.ndarray) -> np.ndarray:
    """(N, 30) packets -> (N, 4, 4) T_world_imu (world: see module docstring; origin at packet 0)."""
    packets = np.asarray(packets, np.float64)
    if packets.ndim != 2 or packets.shape[1] != PACKET_VALUES or len(packets) == 0:
        raise DatasetError(f"oxts packets must be (N>0, {PACKET_VALUES}), got {packets.shape}")
    scale = mercator_scale(packets[0, LAT])
    mx, my = latlon_to_mercator(packets[:, LAT], packets[:, LON], scale)
    poses = np.tile(np.eye(4), (len(packets), 1, 1))
    poses[:, :3, 3] = np.stack([mx - mx[0], my - my[0], packets[:, ALT] - packets[0, ALT]], axis=1)
    for pose, p in zip(poses, packets):
        pose[:3, :3] = _rotation(p[ROLL], p[PITCH], p[YAW])
    return poses
