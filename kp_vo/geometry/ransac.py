"""RANSAC bookkeeping shared by the PnP and 3D-3D solvers."""

from __future__ import annotations

import math


def needed_iterations(inlier_ratio: float, sample_size: int, confidence: float, max_iterations: int) -> int:
    """RANSAC iterations so that an all-inlier sample is drawn with probability ``confidence``."""
    p_good = inlier_ratio**sample_size
    if p_good >= 1.0:
        return 0
    denom = math.log1p(-p_good)
    if denom == 0.0:
        return max_iterations
    return min(max_iterations, int(math.ceil(math.log(max(1.0 - confidence, 1e-300)) / denom)))
