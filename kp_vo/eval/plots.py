"""Trajectory plots written straight to PNG files (matplotlib's Agg canvas, never a display).

matplotlib is imported inside the function so that importing ``kp_vo.eval`` stays light.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.trajio import check_poses

logger = logging.getLogger(__name__)


def _is_lost(state) -> bool:
    """True for TrackingState.LOST or the string "lost" (any case)."""
    value = getattr(state, "value", state)
    return isinstance(value, str) and value.lower() == "lost"


def plot_trajectory_top_view(path_png: str | os.PathLike, est: np.ndarray, gt: np.ndarray | None = None,
                             title: str = "", states=None, est_label: str = "estimate") -> Path:
    """Top view (x right vs z forward of the camera optical frame, equal axes) of est and gt.

    path_png: output file (folders are created).
    est: (N, 4, 4) estimated poses ``T_world_cam``, already aligned to gt when gt is given.
    gt: (M, 4, 4) ground-truth poses, or None.
    states: None or N tracking states (TrackingState or str); frames whose state is "lost" are
        marked in red on the estimate.
    est_label: legend of the estimate (say how it was aligned, e.g. "estimate (Sim(3)-aligned, scale 2.4)").
    Returns the path written. Start is marked with a black circle.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    est = check_poses(est, "est")
    if len(est) == 0:
        raise InvalidInputError("est has no poses to plot")
    if gt is not None:
        gt = check_poses(gt, "gt")
    if states is not None and len(states) != len(est):
        raise InvalidInputError(f"states has {len(states)} entries but est has {len(est)} poses")

    fig = Figure(figsize=(7, 7), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if gt is not None and len(gt):
        ax.plot(gt[:, 0, 3], gt[:, 2, 3], "-", color="0.6", lw=4, label="ground truth")
    ax.plot(est[:, 0, 3], est[:, 2, 3], "-", color="tab:blue", lw=1.5, label=est_label)
    ax.plot(est[0, 0, 3], est[0, 2, 3], "o", color="black", ms=8, label="start")
    if states is not None:
        lost = np.array([_is_lost(s) for s in states], dtype=bool)
        if lost.any():
            ax.plot(est[lost, 0, 3], est[lost, 2, 3], "x", color="red", ms=6, label=f"lost ({lost.sum()})")
    ax.set_xlabel("x [m] (right)")
    ax.set_ylabel("z [m] (forward)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best")
    if title:
        ax.set_title(title)
    fig.tight_layout()

    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    logger.debug("wrote trajectory plot %s", path)
    return path
