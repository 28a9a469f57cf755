"""Two-view linear (DLT) triangulation, vectorised over points, with validity checks."""

from __future__ import annotations

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import MIN_DEPTH, check_K, check_points, project
from kp_vo.geometry.se3 import check_pose, invert, transform


def parallax_deg(T_c1_w: np.ndarray, T_c2_w: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """Angle (N,) in degrees between the rays from the two camera centres to each world point (N, 3)."""
    T1 = check_pose(T_c1_w, "T_c1_w")
    T2 = check_pose(T_c2_w, "T_c2_w")
    X = check_points(points_world, 3, "points_world")
    r1 = X - invert(T1)[:3, 3]
    r2 = X - invert(T2)[:3, 3]
    cross = np.linalg.norm(np.cross(r1, r2), axis=1)
    dot = np.einsum("ij,ij->i", r1, r2)
    return np.degrees(np.arctan2(cross, dot))


def triangulate(T_c1_w: np.ndarray, T_c2_w: np.ndarray, uv1: np.ndarray, uv2: np.ndarray, K: np.ndarray,
                max_reprojection_px: float = 2.0,
                min_parallax_deg: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate N pixel pairs seen by cameras with poses T_c1_w, T_c2_w (world -> camera, 4x4).

    uv1, uv2: (N, 2) pixels in camera 1 and 2; K: (3, 3) shared intrinsics.
    DLT on normalised image coordinates (batched 4x4 eigen-decomposition). Returns ``points_world`` (N, 3) float64
    and ``valid`` (N,) bool: finite, depth > 0 in both cameras, reprojection error below
    ``max_reprojection_px`` in both images and parallax at least ``min_parallax_deg``.
    Invalid rows may hold NaN.
    """
    T1 = check_pose(T_c1_w, "T_c1_w")
    T2 = check_pose(T_c2_w, "T_c2_w")
    uv1 = check_points(uv1, 2, "uv1")
    uv2 = check_points(uv2, 2, "uv2")
    if uv1.shape != uv2.shape:
        raise InvalidInputError(f"uv1 and uv2 differ in shape: {uv1.shape} vs {uv2.shape}")
    K = check_K(K)
    n = len(uv1)
    if n == 0:
        return np.zeros((0, 3)), np.zeros(0, dtype=bool)

    finite = np.isfinite(uv1).all(axis=1) & np.isfinite(uv2).all(axis=1)
    Kinv = np.linalg.inv(K)
    x1 = np.where(finite[:, None], uv1, 0.0) @ Kinv[:2, :2].T + Kinv[:2, 2]
    x2 = np.where(finite[:, None], uv2, 0.0) @ Kinv[:2, :2].T + Kinv[:2, 2]
    P1, P2 = T1[:3], T2[:3]
    # Each view gives two rows: x * P[2] - P[0] and y * P[2] - P[1].
    A = np.stack([
        x1[:, 0:1] * P1[2] - P1[0],
        x1[:, 1:2] * P1[2] - P1[1],
        x2[:, 0:1] * P2[2] - P2[0],
        x2[:, 1:2] * P2[2] - P2[1],
    ], axis=1)  # (N, 4, 4)
    A /= np.maximum(np.linalg.norm(A, axis=2, keepdims=True), 1e-300)
    # Least-squares null vector: the eigenvector of A^T A with the smallest eigenvalue (the last right
    # singular vector of A; batched 4x4 eigh is ~2x faster than batched SVD).
    Xh = np.linalg.eigh(A.transpose(0, 2, 1) @ A)[1][:, :, 0]  # (N, 4)
    w = Xh[:, 3]
    at_finite = finite & (np.abs(w) > 1e-12)
    X = np.full((n, 3), np.nan)
    X[at_finite] = Xh[at_finite, :3] / w[at_finite, None]

    valid = at_finite.copy()
    for T, uv in ((T1, uv1), (T2, uv2)):
        Pc = transform(T, np.where(valid[:, None], X, 0.0))
        proj, front = project(Pc, K)
        err = np.linalg.norm(proj - uv, axis=1)
        valid &= front & (Pc[:, 2] > MIN_DEPTH) & (np.nan_to_num(err, nan=np.inf) <= max_reprojection_px)
    par = parallax_deg(T1, T2, np.where(valid[:, None], X, 0.0))
    valid &= par >= min_parallax_deg
    return X, valid
