"""Pinhole camera model: projection, back-projection and depth lookup at keypoints.

Pixels (u right, v down) with pixel centres at integer coordinates; camera optical frame
x right, y down, z forward; depth in metres, 0 / NaN / inf / negative = invalid.
"""

from __future__ import annotations

import numpy as np

from kp_vo.errors import InvalidInputError

MIN_DEPTH = 1e-6  # points with z <= MIN_DEPTH (metres) count as behind the camera


def check_K(K: np.ndarray) -> np.ndarray:
    """Return K as a float64 (3, 3) array or raise InvalidInputError (finite, fx, fy > 0, last row 0 0 1)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise InvalidInputError(f"K must be 3x3, got shape {K.shape}")
    if not np.all(np.isfinite(K)):
        raise InvalidInputError("K contains NaN or inf")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InvalidInputError(f"K focal lengths must be positive, got fx={K[0, 0]} fy={K[1, 1]}")
    if np.any(K[2] != [0.0, 0.0, 1.0]) or K[1, 0] != 0.0:
        raise InvalidInputError(f"K must be upper triangular with last row [0, 0, 1], got {K.tolist()}")
    return K


def check_points(points: np.ndarray, dim: int, name: str) -> np.ndarray:
    """Return ``points`` as a float64 (N, dim) array or raise InvalidInputError on a wrong shape."""
    try:
        P = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} is not a numeric array: {exc}") from None
    if P.ndim != 2 or P.shape[1] != dim:
        raise InvalidInputError(f"{name} must have shape (N, {dim}), got {P.shape}")
    return P


def project(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project (N, 3) camera-frame points to pixels.

    Returns ``uv`` (N, 2) float64 and ``in_front`` (N,) bool (z > 1e-6). Rows not in front
    (or with non-finite coordinates) get NaN pixels.
    """
    P = check_points(points_cam, 3, "points_cam")
    finite = np.isfinite(P).all(axis=1)
    uv, in_front = project_unchecked(np.where(finite[:, None], P, 0.0), check_K(K))   # z = 0: not in front
    uv[~in_front] = np.nan
    return uv, in_front


def project_unchecked(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``project`` without the input checks, for inner loops (PnP refinement): (N, 3) float64 points and a
    valid (3, 3) K in; ``uv`` (N, 2) and ``in_front`` (N,) out. Rows not in front keep finite pixels
    (those of the point moved to z = 1): mask them with ``in_front``."""
    z = points_cam[:, 2]
    in_front = z > MIN_DEPTH
    zs = np.where(in_front, z, 1.0)
    x, y = points_cam[:, 0] / zs, points_cam[:, 1] / zs
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=1)
    return uv, in_front


def backproject(uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Lift (N, 2) pixels with (N,) depths (z, metres) to (N, 3) camera-frame points."""
    uv = check_points(uv, 2, "uv")
    d = np.asarray(depth, dtype=np.float64).reshape(-1)
    if d.shape[0] != uv.shape[0]:
        raise InvalidInputError(f"depth has {d.shape[0]} values for {uv.shape[0]} pixels")
    K = check_K(K)
    y = (uv[:, 1] - K[1, 2]) / K[1, 1]
    x = (uv[:, 0] - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x * d, y * d, d], axis=1)


def _valid_depth(values: np.ndarray) -> np.ndarray:
    return np.isfinite(values) & (values > 0)


def sample_depth(depth_map: np.ndarray, uv: np.ndarray, mode: str = "nearest") -> np.ndarray:
    """Depth (N,) float64 at (N, 2) pixels of an (H, W) depth map; 0 where outside or invalid.

    ``mode="nearest"`` reads the pixel whose centre is closest. ``mode="bilinear"`` interpolates
    only when all four neighbouring pixels hold valid depth, otherwise it falls back to nearest.
    """
    D = np.asarray(depth_map)
    if D.ndim != 2 or D.size == 0:
        raise InvalidInputError(f"depth map must be a non-empty (H, W) array, got shape {D.shape}")
    if not np.issubdtype(D.dtype, np.number):
        raise InvalidInputError(f"depth map must be numeric, got dtype {D.dtype}")
    if mode not in ("nearest", "bilinear"):
        raise InvalidInputError(f"unknown depth sampling mode {mode!r} (use 'nearest' or 'bilinear')")
    uv = check_points(uv, 2, "uv")
    H, W = D.shape
    out = np.zeros(len(uv))
    finite = np.isfinite(uv).all(axis=1)

    # Nearest: round to the closest pixel centre.
    ui = np.zeros(len(uv), dtype=np.int64)
    vi = np.zeros(len(uv), dtype=np.int64)
    ui[finite] = np.rint(uv[finite, 0]).astype(np.int64)
    vi[finite] = np.rint(uv[finite, 1]).astype(np.int64)
    inside = finite & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    vals = D[vi[inside], ui[inside]].astype(np.float64)
    out[inside] = np.where(_valid_depth(vals), vals, 0.0)
    if mode == "nearest":
        return out

    # Bilinear where all four neighbours exist and are valid.
    u0 = np.zeros(len(uv), dtype=np.int64)
    v0 = np.zeros(len(uv), dtype=np.int64)
    u0[finite] = np.floor(uv[finite, 0]).astype(np.int64)
    v0[finite] = np.floor(uv[finite, 1]).astype(np.int64)
    box = finite & (u0 >= 0) & (u0 + 1 < W) & (v0 >= 0) & (v0 + 1 < H)
    idx = np.flatnonzero(box)
    a, b = u0[idx], v0[idx]
    d00 = D[b, a].astype(np.float64)
    d01 = D[b, a + 1].astype(np.float64)
    d10 = D[b + 1, a].astype(np.float64)
    d11 = D[b + 1, a + 1].astype(np.float64)
    ok = _valid_depth(d00) & _valid_depth(d01) & _valid_depth(d10) & _valid_depth(d11)
    idx, a, b = idx[ok], a[ok], b[ok]
    fu = uv[idx, 0] - a
    fv = uv[idx, 1] - b
    out[idx] = ((1 - fv) * ((1 - fu) * d00[ok] + fu * d01[ok])
                + fv * ((1 - fu) * d10[ok] + fu * d11[ok]))
    return out


def lift_keypoints(uv: np.ndarray, depth_map: np.ndarray, K: np.ndarray,
                   mode: str = "nearest") -> tuple[np.ndarray, np.ndarray]:
    """Lift (N, 2) keypoints to camera-frame 3D with a depth map.

    Returns ``points_cam`` (N, 3) float64 (NaN rows where the depth is invalid) and ``valid`` (N,) bool.
    """
    d = sample_depth(depth_map, uv, mode)
    valid = d > 0
    points = backproject(uv, d, K)
    points[~valid] = np.nan
    return points, valid
