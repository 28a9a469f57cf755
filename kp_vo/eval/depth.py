"""Monocular depth metrics (the standard protocol of the self-supervised depth papers KP3D builds on).

Per image, over the pixels whose ground-truth depth lies in (min_depth, max_depth): the prediction is
multiplied by median(gt) / median(pred) (``median_scaling``: a monocular network has no scale), clipped
to [min_depth, max_depth], and

    abs_rel  = mean |d - d*| / d*          sq_rel = mean (d - d*)^2 / d*
    rmse     = sqrt(mean (d - d*)^2)       rmse_log = sqrt(mean (log d - log d*)^2)
    a1/a2/a3 = share of pixels with max(d / d*, d* / d) < 1.25, 1.25^2, 1.25^3

(d prediction, d* ground truth, metres). A sequence's figures are the means over its images.
``coverage`` is the share of the ground-truth pixels that have a prediction (1 for a dense network,
less for stereo, which is scored only where it answers). ``mask`` restricts the scored pixels, e.g.
to ``eigen_crop``, the region of the KITTI LiDAR protocol (Garg et al.'s crop of Eigen et al.'s
split, used with the 80 m cap by the self-supervised depth papers).
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from kp_vo.errors import InvalidInputError

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")


def eigen_crop(height: int, width: int) -> np.ndarray:
    """(H, W) bool: rows 40.8-99.2 % and columns 3.6-96.4 % of the image (the KITTI LiDAR protocol's crop)."""
    mask = np.zeros((height, width), bool)
    mask[int(0.40810811 * height):int(0.99189189 * height), int(0.03594771 * width):int(0.96405229 * width)] = True
    return mask


def depth_errors(pred: np.ndarray, gt: np.ndarray, min_depth: float = 1e-3, max_depth: float = 80.0,
                 median_scaling: bool = True, mask: np.ndarray | None = None) -> dict[str, float]:
    """Metrics of one (H, W) predicted depth against (H, W) ground truth (0 or out of range = no truth)
    over the pixels of the optional (H, W) bool ``mask``; also "scale", the median ratio applied (1
    without median scaling), and "coverage"."""
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape or pred.ndim != 2:
        raise InvalidInputError(f"depth_errors needs two (H, W) maps of one size, got {pred.shape} and {gt.shape}")
    truth = (gt > min_depth) & (gt < max_depth)
    if mask is not None:
        if mask.shape != gt.shape:
            raise InvalidInputError(f"depth_errors: mask {mask.shape} differs from the depth maps {gt.shape}")
        truth &= mask
    valid = truth & np.isfinite(pred) & (pred > 0)
    if not valid.any():
        raise InvalidInputError("depth_errors: no pixel has both a valid prediction and ground truth in range")
    p, g = pred[valid], gt[valid]
    scale = float(np.median(g) / np.median(p)) if median_scaling else 1.0
    p = np.clip(p * scale, min_depth, max_depth)
    ratio = np.maximum(p / g, g / p)
    return {"abs_rel": float(np.mean(np.abs(p - g) / g)), "sq_rel": float(np.mean((p - g) ** 2 / g)),
            "rmse": float(np.sqrt(np.mean((p - g) ** 2))), "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
            "a1": float(np.mean(ratio < 1.25)), "a2": float(np.mean(ratio < 1.25 ** 2)),
            "a3": float(np.mean(ratio < 1.25 ** 3)), "scale": scale, "coverage": float(valid.sum() / truth.sum())}


def summarize(rows: list[dict]) -> dict:
    """Means of per-image ``depth_errors`` rows: the METRICS, "coverage", "scale_mean" / "scale_std"
    (spread of the per-image median scales: a small spread means the network's scale is consistent)
    and "images"."""
    if not rows:
        raise InvalidInputError("evaluate_depth: no frames")
    out = {k: float(np.mean([r[k] for r in rows])) for k in METRICS + ("coverage",)}
    scales = np.array([r["scale"] for r in rows])
    out.update(scale_mean=float(scales.mean()), scale_std=float(scales.std()), images=len(rows))
    return out


def evaluate_depth(predict: Callable[[np.ndarray], np.ndarray], frames: Iterable, min_depth: float = 1e-3,
                   max_depth: float = 80.0, median_scaling: bool = True, mask: np.ndarray | None = None) -> dict:
    """``summarize`` of ``predict(image) -> (H, W) depth`` over ``frames`` (objects with .image and
    .depth, the ground truth), scored inside ``mask`` when given."""
    return summarize([depth_errors(predict(f.image), f.depth, min_depth, max_depth, median_scaling, mask)
                      for f in frames])


def constant_depth(image: np.ndarray) -> np.ndarray:
    """The no-information baseline: the same depth at every pixel (after median scaling, the image's
    median ground-truth depth)."""
    return np.ones(image.shape[:2], np.float32)
