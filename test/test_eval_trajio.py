"""Trajectory file formats (KITTI, TUM) and quaternion helpers."""

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.trajio import (
    quaternion_to_rotation,
    read_kitti_poses,
    read_tum_trajectory,
    rotation_to_quaternion,
    write_kitti_poses,
    write_tum_trajectory,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def random_rotation(rng):
    q = rng.normal(size=4)
    return quaternion_to_rotation(q)


def random_poses(rng, n):
    T = np.tile(np.eye(4), (n, 1, 1))
    for i in range(n):
        T[i, :3, :3] = random_rotation(rng)
        T[i, :3, 3] = rng.normal(scale=20.0, size=3)
    return T


def axis_angle(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


# ---------------------------------------------------------------------------------- quaternions
def test_quaternion_known_answers():
    np.testing.assert_allclose(rotation_to_quaternion(np.eye(3)), [0, 0, 0, 1])
    # 90 deg about z: q = (0, 0, sin 45, cos 45)
    s = np.sqrt(0.5)
    np.testing.assert_allclose(rotation_to_quaternion(axis_angle([0, 0, 1], np.pi / 2)), [0, 0, s, s], atol=1e-12)
    np.testing.assert_allclose(quaternion_to_rotation([0, 0, s, s]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    # the quaternion need not be normalised
    np.testing.assert_allclose(quaternion_to_rotation([0, 0, 2, 2]), axis_angle([0, 0, 1], np.pi / 2), atol=1e-12)


@pytest.mark.parametrize("axis", [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -2, 3], [-1, -1, -1]])
def test_quaternion_round_trip_at_180_degrees(axis):
    R = axis_angle(axis, np.pi)
    q = rotation_to_quaternion(R)
    assert abs(q[3]) < 1e-12                           # 180 deg: qw = 0
    n = np.asarray(axis, float) / np.linalg.norm(axis)
    assert min(np.abs(q[:3] - n).max(), np.abs(q[:3] + n).max()) < 1e-12
    np.testing.assert_allclose(quaternion_to_rotation(q), R, atol=1e-12)


def test_quaternion_round_trip_random_and_near_180():
    rng = np.random.default_rng(0)
    for _ in range(200):
        R = random_rotation(rng)
        q = rotation_to_quaternion(R)
        assert q[3] >= 0 and abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quaternion_to_rotation(q), R, atol=1e-12)
    for eps in (1e-3, 1e-6, 1e-9):
        R = axis_angle(rng.normal(size=3), np.pi - eps)
        np.testing.assert_allclose(quaternion_to_rotation(rotation_to_quaternion(R)), R, atol=1e-12)


def test_quaternion_bad_input():
    with pytest.raises(InvalidInputError, match="zero norm"):
        quaternion_to_rotation([0, 0, 0, 0])
    with pytest.raises(InvalidInputError, match="shape"):
        quaternion_to_rotation([0, 0, 1])
    with pytest.raises(InvalidInputError, match="not a rotation"):
        rotation_to_quaternion(np.diag([1.0, 1.0, -1.0]))
    with pytest.raises(InvalidInputError, match="not a rotation"):
        rotation_to_quaternion(2 * np.eye(3))


# ---------------------------------------------------------------------------------- KITTI
def test_kitti_round_trip(tmp_path):
    T = random_poses(np.random.default_rng(1), 25)
    path = tmp_path / "sub" / "poses.txt"
    write_kitti_poses(path, T)
    lines = path.read_text().splitlines()
    assert len(lines) == 25 and all(len(line.split()) == 12 for line in lines)
    assert "e" in lines[0].split()[0]                  # "%.9e"
    back = read_kitti_poses(path)
    assert back.shape == (25, 4, 4)
    np.testing.assert_allclose(back, T, rtol=1e-9, atol=1e-9)
    assert not list(path.parent.glob(".*.tmp"))        # the atomic write left no temporary file


def test_kitti_bad_files(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: expected 12 numbers"):
        read_kitti_poses(path)
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 zero\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: not a number"):
        read_kitti_poses(path)
    path.write_text("1 0 0 nan 0 1 0 0 0 0 1 0\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: .*NaN"):
        read_kitti_poses(path)
    path.write_text("\n\n")
    with pytest.raises(DatasetError, match="no poses"):
        read_kitti_poses(path)
    with pytest.raises(DatasetError, match="not found"):
        read_kitti_poses(tmp_path / "missing.txt")
    with pytest.raises(InvalidInputError, match=r"shape \(N, 4, 4\)"):
        write_kitti_poses(path, np.eye(4))
    bad = np.tile(np.eye(4), (3, 1, 1))
    bad[1, 0, 3] = np.inf
    with pytest.raises(InvalidInputError, match=r"T_world_cam\[1\]"):
        write_kitti_poses(path, bad)


# ---------------------------------------------------------------------------------- TUM
def test_tum_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    T = random_poses(rng, 30)
    T[3, :3, :3] = axis_angle([0, 1, 0], np.pi)        # a 180 deg rotation in the file
    stamps = 1_317_384_506_000_000_000 + np.cumsum(rng.integers(1, 10**8, size=30))
    path = tmp_path / "traj.tum"
    write_tum_trajectory(path, stamps, T)
    first = [line for line in path.read_text().splitlines() if not line.startswith("#")][0].split()
    assert len(first) == 8 and len(first[0].split(".")[1]) == 9
    stamps_back, T_back = read_tum_trajectory(path)
    assert stamps_back.dtype == np.int64
    np.testing.assert_array_equal(stamps_back, stamps)  # nanoseconds survive exactly
    np.testing.assert_allclose(T_back, T, atol=1e-8)


def test_tum_reads_foreign_files(tmp_path):
    path = tmp_path / "foreign.txt"
    path.write_text("# comment\n1305031102.175304 1 2 3 0 0 0 2\n\n1.3050311022e9 1 2 3 0 0 1 0\n")
    stamps, T = read_tum_trajectory(path)
    np.testing.assert_array_equal(stamps, [1305031102175304000, 1305031102200000000])
    np.testing.assert_allclose(T[0], np.array([[1, 0, 0, 1], [0, 1, 0, 2], [0, 0, 1, 3], [0, 0, 0, 1.0]]))
    np.testing.assert_allclose(T[1, :3, :3], np.diag([-1.0, -1.0, 1.0]), atol=1e-15)


def test_tum_bad_input(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1.0 0 0 0 0 0 0 1\n1.0 0 0 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"bad.txt:2: time stamp .* does not increase"):
        read_tum_trajectory(path)
    path.write_text("1.0 0 0 0 0 0 0 0\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: .*zero norm"):
        read_tum_trajectory(path)
    path.write_text("1.0 0 0 0 0 0 1\n")
    with pytest.raises(DatasetError, match=r"bad.txt:1: expected 8 values"):
        read_tum_trajectory(path)
    T = np.tile(np.eye(4), (2, 1, 1))
    with pytest.raises(InvalidInputError, match="strictly increasing"):
        write_tum_trajectory(path, np.array([5, 5]), T)
    with pytest.raises(InvalidInputError, match="integer nanoseconds"):
        write_tum_trajectory(path, np.array([0.5, 1.5]), T)
    with pytest.raises(InvalidInputError, match="shape"):
        write_tum_trajectory(path, np.array([1, 2, 3]), T)


def test_read_real_kitti_poses():
    path = DATA / "kitti" / "poses" / "07.txt"
    if not path.exists():
        pytest.skip(f"real KITTI data not found at {path}")
    T = read_kitti_poses(path)
    assert T.shape == (160, 4, 4)
    np.testing.assert_allclose(T[0], np.eye(4), atol=1e-9)
    # rotations stored with ~7 significant digits are still rotations
    err = np.abs(np.einsum("nji,njk->nik", T[:, :3, :3], T[:, :3, :3]) - np.eye(3)).max()
    assert err < 1e-5


def test_stamps_to_seconds_is_the_float_of_the_text():
    """Nanosecond stamps past 2**53 come back as the very float the decimal text parses to."""
    from kp_vo.trajio import stamps_to_seconds
    texts = ["1341841278.8427", "1341841279.510700001", "0.5", "1305031102.175304"]
    ns = np.array([int(Decimal(t) * 10**9) for t in texts], np.int64)
    np.testing.assert_array_equal(stamps_to_seconds(ns), [float(t) for t in texts])
