"""Evaluation: trajectory metrics (ATE, RPE, KITTI drift) and trajectory plots.

Importing this package pulls numpy only; matplotlib is imported when a plot is drawn.
"""

from kp_vo.eval.plots import plot_trajectory_top_view
from kp_vo.eval.trajectory import (
    align_se3,
    align_sim3,
    ate_rmse,
    cumulative_distances,
    default_segment_lengths,
    evaluate_trajectory,
    kitti_drift,
    path_length,
    rpe,
)

__all__ = [
    "align_se3",
    "align_sim3",
    "ate_rmse",
    "cumulative_distances",
    "default_segment_lengths",
    "evaluate_trajectory",
    "kitti_drift",
    "path_length",
    "plot_trajectory_top_view",
    "rpe",
]
