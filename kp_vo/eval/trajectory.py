"""Trajectory metrics: Sim(3)/SE(3) alignment, ATE, RPE, path length and KITTI-style drift (numpy).

Every trajectory is an (N, 4, 4) float64 array of camera poses ``T_world_cam`` (pose i maps
camera-i coordinates into that trajectory's own world frame); ``est`` and ``gt`` have one pose per
frame, in the same order. Positions and errors are in metres (of the GT), angles in degrees.

Definitions
-----------
- Alignment (Umeyama, via ``kp_vo.geometry.procrustes.weighted_procrustes``): one similarity
  ``T_gt_est`` (rotation R, translation t, scale s) minimising sum |s R p_est + t - p_gt|^2 over the
  camera positions; it is applied to full poses: ``R_i' = R R_i``, ``t_i' = s R t_i + t``.
- ATE: statistics of |t_i' - t_gt_i| after alignment.
- RPE (delta d): error pose ``E_i = inv(inv(gt_i) gt_{i+d}) @ inv(est_i) est_{i+d}``; RMSE over i of
  |translation(E_i)| and of angle(E_i).
- KITTI drift (the devkit's ``calcSequenceErrors`` re-derived): for every ``step``-th first frame
  i and every length L, j is the first frame whose GT travelled distance from i exceeds L (strictly,
  as in the devkit); ``E = inv(inv(est_i) est_j) @ (inv(gt_i) gt_j)``; t_err = |t(E)| / L,
  r_err = angle(E) / L; the reported numbers are the means over all (i, L) segments, t_err in
  percent and r_err in degrees per 100 m. The official lengths are 100..800 m; sequences shorter
  than 100 m (like the 90 m KITTI 07 snippet in ../shared/data) use 10..80 m with the same formula,
  which is NOT comparable to the official leaderboard numbers.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.procrustes import weighted_procrustes
from kp_vo.geometry.se3 import invert, rotation_angle_deg
from kp_vo.trajio import check_poses

logger = logging.getLogger(__name__)

OFFICIAL_KITTI_LENGTHS = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)
SHORT_LENGTHS = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
def _check_pair(est: np.ndarray, gt: np.ndarray, min_frames: int = 1) -> tuple[np.ndarray, np.ndarray]:
    est = check_poses(est, "est")
    gt = check_poses(gt, "gt")
    if len(est) != len(gt):
        raise InvalidInputError(f"est has {len(est)} poses but gt has {len(gt)}; they must correspond frame by frame")
    if len(est) < min_frames:
        raise InvalidInputError(f"need at least {min_frames} poses, got {len(est)}")
    return est, gt


def _invert_all(T: np.ndarray) -> np.ndarray:
    """(N, 4, 4) rigid poses -> (N, 4, 4) inverses."""
    return np.stack([invert(t) for t in T]) if len(T) else T.copy()


def _angles_deg(T: np.ndarray) -> np.ndarray:
    """(N, 4, 4) poses -> (N,) rotation angles in degrees."""
    return np.array([rotation_angle_deg(t[:3, :3]) for t in T], dtype=np.float64)


def _relative(T: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """inv(T[first]) @ T[second] for index arrays of equal length -> (M, 4, 4)."""
    return _invert_all(T[first]) @ T[second]


# ----------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------
def _align(est: np.ndarray, gt: np.ndarray, with_scale: bool) -> tuple[np.ndarray, float, np.ndarray]:
    est, gt = _check_pair(est, gt, min_frames=3)
    p_est, p_gt = est[:, :3, 3], gt[:, :3, 3]
    if with_scale and np.allclose(p_est, p_est.mean(axis=0), atol=1e-12, rtol=0.0):
        raise InvalidInputError("estimated positions do not move; the Sim(3) scale is undefined")
    T_gt_est, scale = weighted_procrustes(p_est, p_gt, weights=None, with_scale=with_scale)
    T_gt_est = np.asarray(T_gt_est, dtype=np.float64)
    scale = float(scale) if with_scale else 1.0
    R, t = T_gt_est[:3, :3], T_gt_est[:3, 3]
    aligned = est.copy()
    aligned[:, :3, :3] = R @ est[:, :3, :3]
    aligned[:, :3, 3] = scale * p_est @ R.T + t
    return aligned, scale, T_gt_est


def align_sim3(est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Similarity alignment of the whole estimated trajectory onto the GT (monocular VO).

    est, gt: (N, 4, 4) poses, N >= 3, the est positions not all equal.
    Returns ``(aligned_est (N, 4, 4), scale, T_gt_est (4, 4))``: ``scale`` multiplies est lengths
    (a trajectory estimated 3x too large gives scale 1/3); ``T_gt_est`` holds the rotation and
    translation of the similarity (p_gt ~ scale * R @ p_est + t).
    """
    return _align(est, gt, with_scale=True)


def align_se3(est: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Rigid alignment (no scale) of the estimated trajectory onto the GT (metric RGB-D / stereo VO).

    Same arguments and return values as :func:`align_sim3`, with scale always 1.0.
    """
    return _align(est, gt, with_scale=False)


# ----------------------------------------------------------------------------------------------
# ATE / RPE / distances
# ----------------------------------------------------------------------------------------------
def ate_rmse(est: np.ndarray, gt: np.ndarray, align: str = "sim3") -> dict:
    """Absolute trajectory error of the positions after alignment.

    est, gt: (N, 4, 4) poses. align: "sim3" | "se3" | "none" (est used as is).
    Returns ``{"rmse", "mean", "median", "max", "scale"}`` (metres; scale from the alignment, 1.0
    for "se3"/"none").
    """
    if align == "sim3":
        est, scale, _ = align_sim3(est, gt)
    elif align == "se3":
        est, scale, _ = align_se3(est, gt)
    elif align == "none":
        est, gt = _check_pair(est, gt, min_frames=1)
        scale = 1.0
    else:
        raise InvalidInputError(f"unknown alignment {align!r}, expected 'sim3', 'se3' or 'none'")
    errors = np.linalg.norm(est[:, :3, 3] - np.asarray(gt)[:, :3, 3], axis=1)
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mean": float(np.mean(errors)),
        "median": float(np.median(errors)),
        "max": float(np.max(errors)),
        "scale": float(scale),
    }


def rpe(est: np.ndarray, gt: np.ndarray, delta: int = 1) -> dict:
    """Relative pose error between frames i and i + delta (no alignment needed for rotations;
    translations are compared in the units of each trajectory, so pass a Sim(3)-aligned est for
    monocular VO).

    est, gt: (N, 4, 4) poses, N > delta >= 1.
    Returns ``{"trans_rmse": metres, "rot_rmse": degrees, "num_pairs": int}``.
    """
    est, gt = _check_pair(est, gt)
    if int(delta) != delta or delta < 1:
        raise InvalidInputError(f"RPE delta must be a positive integer, got {delta!r}")
    delta = int(delta)
    if len(est) <= delta:
        raise InvalidInputError(f"RPE with delta {delta} needs more than {delta} poses, got {len(est)}")
    first = np.arange(len(est) - delta)
    second = first + delta
    error = _invert_all(_relative(gt, first, second)) @ _relative(est, first, second)
    trans = np.linalg.norm(error[:, :3, 3], axis=1)
    rot = _angles_deg(error)
    return {
        "trans_rmse": float(np.sqrt(np.mean(trans**2))),
        "rot_rmse": float(np.sqrt(np.mean(rot**2))),
        "num_pairs": int(len(first)),
    }


def cumulative_distances(T: np.ndarray) -> np.ndarray:
    """Travelled distance along the camera positions: (N, 4, 4) -> (N,) float64, starting at 0."""
    T = check_poses(T)
    if len(T) == 0:
        return np.zeros(0)
    steps = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def path_length(T: np.ndarray) -> float:
    """Total travelled distance of the camera positions of (N, 4, 4) poses (metres)."""
    d = cumulative_distances(T)
    return float(d[-1]) if len(d) else 0.0


# ----------------------------------------------------------------------------------------------
# KITTI drift
# ----------------------------------------------------------------------------------------------
def default_segment_lengths(gt: np.ndarray) -> tuple[float, ...]:
    """Segment lengths for :func:`kitti_drift`: the official 100..800 m that are shorter than the
    GT path; if none is (path under 100 m), the 10..80 m that are; possibly empty."""
    total = path_length(gt)
    for candidates in (OFFICIAL_KITTI_LENGTHS, SHORT_LENGTHS):
        fitting = tuple(L for L in candidates if L < total)
        if fitting:
            return fitting
    return ()


def kitti_drift(est: np.ndarray, gt: np.ndarray, lengths=None, step: int = 10) -> dict:
    """KITTI odometry drift (devkit definition, see the module docstring) of an (already aligned) est.

    est, gt: (N, 4, 4) poses; lengths: segment lengths in metres (default
    :func:`default_segment_lengths`); step: first frames are 0, step, 2*step, ...
    Returns ``{"t_rel_percent", "r_rel_deg_per_100m", "lengths" (list), "num_segments",
    "per_length": {L: (t_rel_percent, r_rel_deg_per_100m)}}``; the means are NaN and per_length
    lacks L when no segment of that length fits.
    """
    est, gt = _check_pair(est, gt)
    if int(step) != step or step < 1:
        raise InvalidInputError(f"step must be a positive integer, got {step!r}")
    step = int(step)
    lengths = default_segment_lengths(gt) if lengths is None else tuple(float(L) for L in lengths)
    if any(not (L > 0 and math.isfinite(L)) for L in lengths):
        raise InvalidInputError(f"segment lengths must be positive, got {list(lengths)}")

    dist = cumulative_distances(gt)
    firsts, lasts, seg_lengths = [], [], []
    for i in range(0, len(gt), step):
        for L in lengths:
            # first frame whose travelled GT distance from frame i exceeds L (devkit: dist[j] > dist[i] + L);
            # dist never decreases, so a right-sided binary search finds it
            j = int(np.searchsorted(dist, dist[i] + L, side="right"))
            if j < len(dist):
                firsts.append(i)
                lasts.append(j)
                seg_lengths.append(L)

    result = {
        "t_rel_percent": float("nan"),
        "r_rel_deg_per_100m": float("nan"),
        "lengths": list(lengths),
        "num_segments": len(firsts),
        "per_length": {},
    }
    if not firsts:
        logger.warning("no KITTI drift segment fits: GT path %.1f m, lengths %s", dist[-1], list(lengths))
        return result

    firsts, lasts, seg_lengths = np.array(firsts), np.array(lasts), np.array(seg_lengths)
    error = _invert_all(_relative(est, firsts, lasts)) @ _relative(gt, firsts, lasts)
    t_err = np.linalg.norm(error[:, :3, 3], axis=1) / seg_lengths * 100.0   # percent
    r_err = _angles_deg(error) / seg_lengths * 100.0                         # deg per 100 m
    result["t_rel_percent"] = float(t_err.mean())
    result["r_rel_deg_per_100m"] = float(r_err.mean())
    for L in lengths:
        sel = seg_lengths == L
        if np.any(sel):
            result["per_length"][L] = (float(t_err[sel].mean()), float(r_err[sel].mean()))
    return result


# ----------------------------------------------------------------------------------------------
# Bundle
# ----------------------------------------------------------------------------------------------
def _json_float(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def evaluate_trajectory(est: np.ndarray, gt: np.ndarray, monocular: bool) -> dict:
    """All trajectory metrics of one run as a flat JSON-friendly dict (``metrics.json``).

    est, gt: (N, 4, 4) poses, N >= 3. monocular: True -> Sim(3) alignment, False -> SE(3).
    Keys: alignment, scale, ate_{rmse,mean,median,max}_m, rpe_delta, rpe_trans_rmse_m,
    rpe_rot_rmse_deg (on the aligned est), drift_lengths_m, drift_num_segments,
    drift_t_rel_percent, drift_r_rel_deg_per_100m, drift_per_length_t_rel_percent,
    drift_per_length_r_rel_deg_per_100m (lists matching drift_lengths_m), drift_kind ("official"
    for 100..800 m, "short" otherwise), path_length_gt_m, path_length_est_m (aligned est),
    num_frames. Values that cannot be computed (no drift segment) are None.
    """
    est, gt = _check_pair(est, gt, min_frames=3)
    aligned, scale, _ = align_sim3(est, gt) if monocular else align_se3(est, gt)
    ate = ate_rmse(aligned, gt, align="none")
    rel = rpe(aligned, gt, delta=1)
    drift = kitti_drift(aligned, gt)
    per_length = [drift["per_length"].get(L, (float("nan"), float("nan"))) for L in drift["lengths"]]
    official = bool(drift["lengths"]) and min(drift["lengths"]) >= OFFICIAL_KITTI_LENGTHS[0]
    return {
        "alignment": "sim3" if monocular else "se3",
        "scale": float(scale),
        "ate_rmse_m": ate["rmse"],
        "ate_mean_m": ate["mean"],
        "ate_median_m": ate["median"],
        "ate_max_m": ate["max"],
        "rpe_delta": 1,
        "rpe_trans_rmse_m": rel["trans_rmse"],
        "rpe_rot_rmse_deg": rel["rot_rmse"],
        "drift_kind": "official" if official else "short",
        "drift_lengths_m": [float(L) for L in drift["lengths"]],
        "drift_num_segments": int(drift["num_segments"]),
        "drift_t_rel_percent": _json_float(drift["t_rel_percent"]),
        "drift_r_rel_deg_per_100m": _json_float(drift["r_rel_deg_per_100m"]),
        "drift_per_length_t_rel_percent": [_json_float(t) for t, _ in per_length],
        "drift_per_length_r_rel_deg_per_100m": [_json_float(r) for _, r in per_length],
        "path_length_gt_m": path_length(gt),
        "path_length_est_m": path_length(aligned),
        "num_frames": int(len(est)),
    }
