"""Trajectory files: KITTI pose lists and TUM trajectories, plus the quaternion conversions of the package.

Poses are ``T_world_cam`` arrays of shape (N, 4, 4) float64: each maps camera coordinates of
frame i into the world frame (the camera's pose). Time stamps are int64 nanoseconds.

KITTI format: one pose per line, the 12 values of the 3x4 matrix [R | t] in row-major order.
TUM format:   one pose per line, ``timestamp tx ty tz qx qy qz qw`` (timestamp in seconds,
              Hamilton unit quaternion with the scalar last); lines starting with ``#`` are comments.

Bad arrays raise ``InvalidInputError``; unreadable or malformed files raise ``DatasetError`` with
``file:line`` and the reason.
"""

from __future__ import annotations

import logging
import os
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.fileio import atomic_path

logger = logging.getLogger(__name__)

# Largest tolerated deviation of R^T R from the identity before a matrix is not called a rotation.
_ORTHO_TOL = 1e-3


# ----------------------------------------------------------------------------------------------
# Quaternions
# ----------------------------------------------------------------------------------------------
def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion of a rotation matrix (scipy's ``Rotation``).

    R: (3, 3) rotation matrix (orthonormal, det +1, within 1e-3).
    Returns (4,) float64 ``(qx, qy, qz, qw)`` with ``qw >= 0`` (the sign is canonicalised so that
    equal rotations give equal quaternions; for exactly 180 degrees the first non-zero of
    (qx, qy, qz) is made positive).
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape != (3, 3):
        raise InvalidInputError(f"rotation must have shape (3, 3), got {R.shape}")
    if not np.all(np.isfinite(R)):
        raise InvalidInputError("rotation contains NaN or inf")
    if np.abs(R.T @ R - np.eye(3)).max() > _ORTHO_TOL or np.linalg.det(R) <= 0:
        raise InvalidInputError("matrix is not a rotation (not orthonormal or det <= 0)")
    return Rotation.from_matrix(R).as_quat(canonical=True)


def quaternion_to_rotation(q) -> np.ndarray:
    """Rotation matrix of a quaternion ``(qx, qy, qz, qw)`` (normalised first; scipy's ``Rotation``).

    q: (4,) array-like, scalar last. Returns (3, 3) float64.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (4,):
        raise InvalidInputError(f"quaternion must have shape (4,) as (qx, qy, qz, qw), got {q.shape}")
    norm = np.linalg.norm(q)
    if not np.isfinite(norm) or norm < 1e-12:
        raise InvalidInputError(f"quaternion {q.tolist()} is not finite or has zero norm")
    return Rotation.from_quat(q / norm).as_matrix()


# ----------------------------------------------------------------------------------------------
# Shared checks and atomic writing
# ----------------------------------------------------------------------------------------------
def check_poses(T: np.ndarray, name: str = "poses") -> np.ndarray:
    """Validate a pose array and return it as float64.

    T: (N, 4, 4) homogeneous poses, finite, bottom row (0, 0, 0, 1). N may be 0.
    """
    T = np.asarray(T)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise InvalidInputError(f"{name} must have shape (N, 4, 4), got {T.shape}")
    T = T.astype(np.float64, copy=False)
    if not np.all(np.isfinite(T)):
        bad = int(np.flatnonzero(~np.isfinite(T).all(axis=(1, 2)))[0])
        raise InvalidInputError(f"{name}[{bad}] contains NaN or inf")
    bottom_ok = np.abs(T[:, 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=1) < 1e-9
    if not np.all(bottom_ok):
        bad = int(np.flatnonzero(~bottom_ok)[0])
        raise InvalidInputError(f"{name}[{bad}] bottom row is {T[bad, 3].tolist()}, expected [0, 0, 0, 1]")
    return T


def _write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text to path through a temporary file in the same folder, then rename."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="ascii")


def _read_lines(path: str | os.PathLike) -> list[str]:
    try:
        return Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: trajectory file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read trajectory file ({exc})") from None


# ----------------------------------------------------------------------------------------------
# KITTI
# ----------------------------------------------------------------------------------------------
def write_kitti_poses(path: str | os.PathLike, T_world_cam: np.ndarray) -> None:
    """Write poses in KITTI format: 12 values ("%.9e") of the row-major 3x4 [R | t] per line.

    T_world_cam: (N, 4, 4) camera poses in the world frame.
    """
    T = check_poses(T_world_cam, "T_world_cam")
    rows = T[:, :3, :].reshape(len(T), 12)
    text = "".join(" ".join(f"{v:.9e}" for v in row) + "\n" for row in rows)
    _write_atomic(path, text)
    logger.debug("wrote %d KITTI poses to %s", len(T), path)


def read_kitti_poses(path: str | os.PathLike) -> np.ndarray:
    """Read a KITTI pose file. Returns (N, 4, 4) float64 ``T_world_cam``; blank lines are skipped.

    Raises DatasetError (``file:line: why``) on a line that is not 12 finite numbers, or an empty file.
    """
    poses = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 12:
            raise DatasetError(f"{path}:{lineno}: expected 12 numbers of a 3x4 pose, got {len(fields)}")
        try:
            values = np.array([float(v) for v in fields])
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
        if not np.all(np.isfinite(values)):
            raise DatasetError(f"{path}:{lineno}: pose contains NaN or inf")
        T = np.eye(4)
        T[:3, :] = values.reshape(3, 4)
        poses.append(T)
    if not poses:
        raise DatasetError(f"{path}: no poses in file")
    return np.stack(poses)


# ----------------------------------------------------------------------------------------------
# TUM
# ----------------------------------------------------------------------------------------------
def _format_stamp(ns: int) -> str:
    """Nanoseconds -> seconds with exactly 9 decimals, formatted from integers (no float rounding)."""
    sign = "-" if ns < 0 else ""
    sec, frac = divmod(abs(ns), 1_000_000_000)
    return f"{sign}{sec}.{frac:09d}"


def parse_stamp(text: str) -> int:
    """Seconds (any decimal / scientific notation) -> nearest integer nanoseconds, exactly."""
    value = Decimal(text) * 1_000_000_000
    if not value.is_finite():
        raise InvalidOperation
    return int(value.to_integral_value())


def stamps_to_seconds(stamps_ns: np.ndarray) -> np.ndarray:
    """(N,) float64 seconds of (N,) integer nanoseconds, each the double nearest the exact value: the same
    float that ``float(text)`` gives for the stamp written with at most 9 decimals (so stamps read from
    two files of one dataset compare equal; ``ns / 1e9`` can be one ulp off past 2**53 ns)."""
    return np.array([float(Fraction(int(ns), 1_000_000_000)) for ns in stamps_ns], np.float64)


def _check_stamps(stamps_ns: np.ndarray, n: int) -> np.ndarray:
    stamps = np.asarray(stamps_ns)
    if stamps.shape != (n,):
        raise InvalidInputError(f"stamps_ns must have shape ({n},) to match the poses, got {stamps.shape}")
    if n and not np.issubdtype(stamps.dtype, np.integer):
        raise InvalidInputError(f"stamps_ns must be integer nanoseconds, got dtype {stamps.dtype}")
    stamps = stamps.astype(np.int64)
    if n > 1 and np.any(np.diff(stamps) <= 0):
        bad = int(np.flatnonzero(np.diff(stamps) <= 0)[0]) + 1
        raise InvalidInputError(f"stamps_ns not strictly increasing at index {bad} ({stamps[bad - 1]} -> {stamps[bad]})")
    return stamps


def write_tum_trajectory(path: str | os.PathLike, stamps_ns: np.ndarray, T_world_cam: np.ndarray) -> None:
    """Write a TUM trajectory: ``timestamp tx ty tz qx qy qz qw`` per line.

    stamps_ns: (N,) integer nanoseconds, strictly increasing; written as seconds with 9 decimals.
    T_world_cam: (N, 4, 4) camera poses in the world frame; rotations must be orthonormal.
    """
    T = check_poses(T_world_cam, "T_world_cam")
    stamps = _check_stamps(stamps_ns, len(T))
    lines = ["# timestamp tx ty tz qx qy qz qw\n"]
    for i, (ns, pose) in enumerate(zip(stamps, T)):
        try:
            q = rotation_to_quaternion(pose[:3, :3])
        except InvalidInputError as exc:
            raise InvalidInputError(f"T_world_cam[{i}]: {exc}") from None
        values = " ".join(f"{v:.9f}" for v in (*pose[:3, 3], *q))
        lines.append(f"{_format_stamp(int(ns))} {values}\n")
    _write_atomic(path, "".join(lines))
    logger.debug("wrote %d TUM poses to %s", len(T), path)


def read_tum_trajectory(path: str | os.PathLike, increasing: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read a TUM trajectory. Returns ``(stamps_ns (N,) int64, T_world_cam (N, 4, 4) float64)``.

    Blank lines and lines starting with ``#`` are skipped; quaternions are normalised. Raises
    DatasetError (``file:line: why``) on a malformed line, a zero quaternion, time stamps that do
    not strictly increase (unless ``increasing`` is False: a dataset's ground truth, sorted by the
    caller), or a file without poses.
    """
    stamps, poses = [], []
    for lineno, line in enumerate(_read_lines(path), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 8:
            raise DatasetError(f"{path}:{lineno}: expected 8 values 'timestamp tx ty tz qx qy qz qw', got {len(fields)}")
        try:
            ns = parse_stamp(fields[0])
            values = np.array([float(v) for v in fields[1:]])
        except (ValueError, InvalidOperation):
            raise DatasetError(f"{path}:{lineno}: not a number in {line.strip()!r}") from None
        if not np.all(np.isfinite(values)):
            raise DatasetError(f"{path}:{lineno}: pose contains NaN or inf")
        if increasing and stamps and ns <= stamps[-1]:
            raise DatasetError(f"{path}:{lineno}: time stamp {fields[0]} does not increase")
        try:
            R = quaternion_to_rotation(values[3:])
        except InvalidInputError as exc:
            raise DatasetError(f"{path}:{lineno}: {exc}") from None
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = values[:3]
        stamps.append(ns)
        poses.append(T)
    if not poses:
        raise DatasetError(f"{path}: no poses in file")
    return np.array(stamps, dtype=np.int64), np.stack(poses)
