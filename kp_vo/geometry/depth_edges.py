"""Depth-sensor checks at keypoints: depth discontinuities and a Kinect-like depth noise model.

A keypoint on a depth edge (an object boundary, or next to a hole) gets the depth of whichever side its
pixel falls on, and a one-pixel error in the keypoint moves its 3D point by the whole step; such keypoints are
better left out of 3D-3D and PnP correspondences. Depth maps are (H, W) metres with 0 / NaN / inf / negative
= invalid; keypoints are (N, 2) pixels (u right, v down, pixel centres at integers) as in ``camera``.
"""

from __future__ import annotations

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import check_points

# Relative depth range that marks an edge. A window of w pixels spans (w - 1) pixels, so a plane seen at angle
# a from its normal changes depth by about (w - 1) / f * tan(a) of its depth across it: with w = 5 and
# f ~ 525 px (Kinect) only planes beyond ~80 deg of slant exceed 5 %. Kinect v1 noise is 1.425e-3 z metres
# relative (``kinect_depth_sigma``): 0.6 % at 4 m, so the range of 25 samples (about 4 sigma) stays under 5 %
# to ~4-5 m, the useful range of the sensor. Object boundaries indoors are steps of tens of percent.
DEFAULT_REL_THRESHOLD = 0.05
DEFAULT_WINDOW = 5

# Khoshelham & Elberink, "Accuracy and Resolution of Kinect Depth Data for Indoor Mapping Applications",
# Sensors 12(2):1437-1454, 2012: sigma_Z = (m / (f b)) Z^2 sigma_d (their eq. 17), with the calibrated
# m / (f b) = 2.85e-3 per metre and disparity unit and sigma_d = 1/2 disparity unit, gives 1.425e-3 Z^2
# (3.6 cm at 5 m; they measure "about 4 cm at the maximum range").
KINECT_V1_SIGMA_COEFF = 1.425e-3


def _check_depth_map(depth_map: np.ndarray) -> np.ndarray:
    """Return ``depth_map`` as float64 (H, W) or raise InvalidInputError."""
    D = np.asarray(depth_map)
    if D.ndim != 2 or D.size == 0:
        raise InvalidInputError(f"depth map must be a non-empty (H, W) array, got shape {D.shape}")
    if not np.issubdtype(D.dtype, np.number):
        raise InvalidInputError(f"depth map must be numeric, got dtype {D.dtype}")
    return D.astype(np.float64, copy=False)


def _pixel_indices(uv: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest pixel (column, row) (N,) int64 of each keypoint and ``inside`` (N,) bool (finite and in the image)."""
    H, W = shape
    finite = np.isfinite(uv).all(axis=1)
    safe = np.where(finite[:, None], uv, -1.0)
    ui = np.rint(safe[:, 0]).astype(np.int64)
    vi = np.rint(safe[:, 1]).astype(np.int64)
    inside = finite & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    return ui, vi, inside


def _windows(D: np.ndarray, ui: np.ndarray, vi: np.ndarray, window: int) -> np.ndarray:
    """(N, window * window) depths around each (ui, vi); rows and columns past the border repeat the edge."""
    H, W = D.shape
    r = np.arange(window) - window // 2
    rows = np.clip(vi[:, None, None] + r[None, :, None], 0, H - 1)
    cols = np.clip(ui[:, None, None] + r[None, None, :], 0, W - 1)
    return D[rows, cols].reshape(len(ui), window * window)


def depth_edge_mask(depth_map: np.ndarray, uv: np.ndarray, window: int = DEFAULT_WINDOW,
                    rel_threshold: float = DEFAULT_REL_THRESHOLD, holes_are_edges: bool = True) -> np.ndarray:
    """Which keypoints lie on a depth discontinuity: (N,) bool.

    depth_map: (H, W) metres, 0 / NaN / inf / negative = invalid. uv: (N, 2) pixels, read at the nearest
    pixel. A keypoint is flagged when, in the ``window`` x ``window`` pixels around it (odd, >= 3; the image
    border repeats its edge pixels), (max - min) / centre depth of the valid depths exceeds ``rel_threshold``
    (a relative test, as Kinect noise grows with depth), or, with ``holes_are_edges``, any pixel is invalid.
    Keypoints with an invalid centre depth, outside the image or non-finite are flagged too: they have no
    usable depth. Vectorised: one gather of N x window^2 depths, no loop over keypoints.
    """
    D = _check_depth_map(depth_map)
    uv = check_points(uv, 2, "uv")
    if isinstance(window, bool) or int(window) != window or window < 3 or window % 2 == 0:
        raise InvalidInputError(f"window must be an odd integer >= 3, got {window}")
    if not np.isfinite(rel_threshold) or rel_threshold <= 0:
        raise InvalidInputError(f"rel_threshold must be positive, got {rel_threshold}")
    ui, vi, inside = _pixel_indices(uv, D.shape)
    patches = _windows(D, ui, vi, int(window))
    valid = np.isfinite(patches) & (patches > 0)
    centre = patches[:, patches.shape[1] // 2]
    centre_ok = valid[:, patches.shape[1] // 2]
    hi = np.where(valid, patches, -np.inf).max(axis=1)
    lo = np.where(valid, patches, np.inf).min(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        step = np.where(centre_ok, (hi - lo) / np.where(centre_ok, centre, 1.0), np.inf)
    edge = step > rel_threshold
    if holes_are_edges:
        edge |= ~valid.all(axis=1)
    return edge | ~centre_ok | ~inside


def kinect_depth_sigma(depth: np.ndarray, coeff: float = KINECT_V1_SIGMA_COEFF) -> np.ndarray:
    """Standard deviation (metres) of a Kinect-like depth measurement: sigma_z = coeff * z^2.

    depth: any shape, metres. Returns float64 of the same shape; invalid depths (0, negative, NaN, inf) get
    inf, so that a weight 1 / sigma^2 is 0. ``coeff`` (per metre) defaults to 1.425e-3 for the Kinect v1
    (Khoshelham & Elberink 2012, eq. 17; see ``KINECT_V1_SIGMA_COEFF``).
    """
    if not np.isfinite(coeff) or coeff <= 0:
        raise InvalidInputError(f"coeff must be positive, got {coeff}")
    z = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(z) & (z > 0)
    return np.where(ok, coeff * np.where(ok, z, 0.0) ** 2, np.inf)


def sample_depth_sigma(depth_map: np.ndarray, uv: np.ndarray,
                       coeff: float = KINECT_V1_SIGMA_COEFF) -> np.ndarray:
    """Kinect-like depth sigma (N,) metres at (N, 2) keypoints (nearest pixel); inf where the depth is invalid."""
    D = _check_depth_map(depth_map)
    uv = check_points(uv, 2, "uv")
    ui, vi, inside = _pixel_indices(uv, D.shape)
    z = np.where(inside, D[np.clip(vi, 0, D.shape[0] - 1), np.clip(ui, 0, D.shape[1] - 1)], 0.0)
    return kinect_depth_sigma(z, coeff)
