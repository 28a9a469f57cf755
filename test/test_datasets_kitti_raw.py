"""KITTI raw loader: Mercator and oxts known answers, LiDAR projection, and the real drive in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from kp_vo.datasets import KittiRaw, open_sequence
from kp_vo.datasets.kitti_raw_calib import CALIB_FILES, project_to_depth
from kp_vo.datasets.oxts import (
    EARTH_RADIUS_M,
    latlon_to_mercator,
    mercator_scale,
    oxts_poses,
)
from kp_vo.errors import CalibrationError, DatasetError, KpVoError
from kp_vo.eval.depth_stereo import stereo_depth

DAY = SHARED_DATA / "kitti_raw" / "2011_09_26"
DRIVE = DAY / "2011_09_26_drive_x130432_sync"
needs_drive = pytest.mark.skipif(not DRIVE.is_dir(), reason=f"KITTI raw drive not found at {DRIVE}")


def test_mercator_known_answers():
    assert mercator_scale(0.0) == 1.0 and mercator_scale(60.0) == pytest.approx(0.5)
    mx, my = latlon_to_mercator(0.0, 1.0, 1.0)
    assert mx == pytest.approx(111319.4908, abs=1e-3) and my == pytest.approx(0.0, abs=1e-6)
    # Web Mercator northing of 45 deg: R ln(tan(67.5 deg)).
    assert latlon_to_mercator(45.0, 0.0, 1.0)[1] == pytest.approx(5621521.486, abs=1e-2)


def test_mercator_with_the_first_latitude_scale_is_metric_near_it():
    lat0, lon0 = 49.011212804408, 8.4228850417969      # the drive's first packet
    s = mercator_scale(lat0)
    one_m_deg = np.degrees(1.0 / EARTH_RADIUS_M)        # 1 m of arc on the devkit's sphere
    x0, y0 = latlon_to_mercator(lat0, lon0, s)
    x1, y1 = latlon_to_mercator(lat0 + 10 * one_m_deg, lon0 + 5 * one_m_deg / np.cos(np.radians(lat0)), s)
    assert x1 - x0 == pytest.approx(5.0, abs=1e-3) and y1 - y0 == pytest.approx(10.0, abs=1e-3)


def _packet(lat=49.0, lon=8.4, alt=100.0, roll=0.0, pitch=0.0, yaw=0.0) -> np.ndarray:
    p = np.zeros(30)
    p[:6] = lat, lon, alt, roll, pitch, yaw
    return p


def test_oxts_poses_known_answers():
    one_m_deg = np.degrees(1.0 / EARTH_RADIUS_M)
    north = _packet(lat=49.0 + 10 * one_m_deg, alt=102.0, yaw=np.pi / 2)        # 10 m north, 2 m up, facing north
    T = oxts_poses(np.stack([_packet(), north]))
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(T[1][:3, 3], [0.0, 10.0, 2.0], atol=1e-3)
    np.testing.assert_allclose(T[1][:3, 0], [0.0, 1.0, 0.0], atol=1e-12)          # IMU x (forward) -> north
    np.testing.assert_allclose(T[1][:3, 1], [-1.0, 0.0, 0.0], atol=1e-12)         # IMU y (left) -> west
    pitched, rolled = oxts_poses(np.stack([_packet(pitch=0.1), _packet(roll=0.1)]))
    assert pitched[2, 0] == pytest.approx(-np.sin(0.1))                            # positive pitch: front down
    assert rolled[2, 1] == pytest.approx(np.sin(0.1))                              # positive roll: left side up


def test_project_to_depth_keeps_the_nearest_point_and_drops_the_rest():
    T_rect0_velo = np.array([[0, -1, 0, 0], [0, 0, -1, 0], [1, 0, 0, 0], [0, 0, 0, 1]], float)   # x fwd, y left, z up
    P = np.array([[100.0, 0, 20, 0], [0, 100, 10, 0], [0, 0, 1, 0]])
    points = np.array([[10.0, -1.0, 0.5, 0],      # camera (1, -0.5, 10) -> u = 30, v = 5, depth 10
                       [20.0, -2.0, 1.0, 0],      # same pixel, farther: hidden
                       [-10.0, 1.0, 0.0, 0],      # behind the camera
                       [1.0, -5.0, 0.0, 0]])      # right of the image
    depth = project_to_depth(points, T_rect0_velo, P, width=40, height=20)
    assert depth.dtype == np.float32 and depth.shape == (20, 40)
    assert depth[5, 30] == pytest.approx(10.0) and np.count_nonzero(depth) == 1


@pytest.fixture(scope="module")
def drive() -> KittiRaw:
    if not DRIVE.is_dir():
        pytest.skip(f"KITTI raw drive not found at {DRIVE}")
    return KittiRaw(DRIVE, lidar_depth=True)


def test_frames_stamps_calibration_and_stereo_pair(drive):
    assert len(drive) == 91 and drive.camera.fx == pytest.approx(721.5377) and drive.camera.width == 1242
    stamps = drive.stamps_ns()
    assert stamps[0] == np.datetime64("2011-09-26T13:04:32.351950336", "ns").astype(np.int64)
    assert np.all(np.diff(stamps) > 0)
    assert drive.stereo_baseline_m == pytest.approx(387.5744 / 721.5377)              # -P_rect_01[0, 3] / fx
    frame = drive[0]
    assert frame.image.shape == (375, 1242) and drive.right_image(0).shape == (375, 1242)
    assert frame.depth is not None and drive[5].depth is None                           # scans: frames 0-4
    assert KittiRaw(DRIVE, max_frames=1)[0].depth is None                               # LiDAR depth is opt-in


def test_ground_truth_path_agrees_with_the_forward_speed_integral(drive):
    poses = drive.ground_truth()
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    path = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1).sum()
    seconds = drive.stamps_ns() * 1e-9
    speed = drive.forward_speed()
    integral = np.sum(0.5 * (speed[1:] + speed[:-1]) * np.diff(seconds))
    assert path == pytest.approx(integral, rel=0.05), (path, integral)                # 33.6 m vs 34.9 m


def test_camera_moves_along_its_optical_axis(drive):
    """Direction of the motion over +-5 frames in the middle frame's camera: +z within a few degrees
    (the drive curves and the oxts heading and ground track differ by up to 3 deg here)."""
    poses = drive.ground_truth()
    angles = []
    for i in range(5, len(poses) - 5):
        d = poses[i][:3, :3].T @ (poses[i + 5][:3, 3] - poses[i - 5][:3, 3])
        angles.append(np.degrees(np.arccos(d[2] / np.linalg.norm(d))))
    assert max(angles) < 7.0 and np.median(angles) < 3.0, (max(angles), np.median(angles))


def test_projected_lidar_has_plausible_depths_in_the_lower_image(drive):
    depth = drive.lidar_depth(0)
    rows, _ = np.nonzero(depth)
    values = depth[depth > 0]
    assert values.size > 10000 and 2.0 < values.min() and values.max() < 80.0
    assert np.mean(rows >= depth.shape[0] / 2) > 0.7 and rows.min() > 100               # nothing above the horizon


def test_projected_lidar_agrees_with_stereo(drive):
    """Real-data check of the whole LiDAR chain (R_rect_00 included): stereo depth at the LiDAR
    pixels is within 2.5 % of the LiDAR depth for the median pixel (measured 1.6-1.8 %; without
    R_rect_00 2.9-3.4 %)."""
    for i in (0, 4):
        lidar = drive.lidar_depth(i)
        stereo = stereo_depth(drive[i].image, drive.right_image(i), drive.camera.fx, drive.stereo_baseline_m)
        both = (lidar > 0) & (stereo > 0)
        assert np.median(np.abs(stereo[both] - lidar[both]) / lidar[both]) < 0.025


@needs_drive
def test_open_sequence_finds_the_drive_from_either_folder():
    assert isinstance(open_sequence(str(DRIVE), max_frames=2), KittiRaw)
    assert len(open_sequence(str(DAY), "x130432", max_frames=2)) == 2
    with pytest.raises(DatasetError, match="needs a drive as sequence .*x130432"):
        open_sequence(str(DAY))
    with pytest.raises(DatasetError, match="no drive '0001'"):
        open_sequence(str(DAY), "0001")


def _copy_drive(tmp_path: Path, skip: str) -> Path:
    """A day folder of links to the real one's files, without ``skip`` (a calibration file or stream)."""
    day = tmp_path / DAY.name
    drive = day / DRIVE.name
    drive.mkdir(parents=True)
    for name in CALIB_FILES:
        if name != skip:
            (day / name).symlink_to(DAY / name)
    for stream in ("image_00", "oxts"):
        if stream != skip:
            (drive / stream).symlink_to(DRIVE / stream)
    return drive


@needs_drive
@pytest.mark.parametrize("skip,error,match", [
    ("calib_velo_to_cam.txt", CalibrationError, "calib_velo_to_cam.txt: KITTI raw calibration file missing"),
    ("oxts", DatasetError, "oxts/data: missing"),
])
def test_missing_calibration_or_oxts_is_one_clear_line(tmp_path, skip, error, match):
    with pytest.raises(error, match=match) as info:
        open_sequence(str(_copy_drive(tmp_path, skip)))
    assert isinstance(info.value, KpVoError) and "\n" not in str(info.value)
