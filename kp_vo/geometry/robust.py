"""The Huber loss of reprojection errors, shared by the pose refinement and the bundle adjustment."""

from __future__ import annotations

import numpy as np


def huber_weights(error_px: np.ndarray, huber_px: float | None) -> np.ndarray:
    """Iteratively-reweighted least-squares weights (N,) for residual norms ``error_px`` (N,) in pixels:
    1 within ``huber_px``, ``huber_px / error`` beyond it; all 1 when ``huber_px`` is None (plain squares)."""
    if huber_px is None:
        return np.ones_like(error_px, dtype=np.float64)
    return np.where(error_px <= huber_px, 1.0, huber_px / np.maximum(error_px, 1e-12))


def huber_cost(error_px: np.ndarray, huber_px: float | None) -> float:
    """Sum of the Huber loss of the residual norms (N,): e^2 / 2 within ``huber_px``, h (e - h / 2) beyond
    (plain e^2 / 2 when ``huber_px`` is None)."""
    if huber_px is None:
        return float(0.5 * np.sum(error_px**2))
    return float(np.sum(np.where(error_px <= huber_px, 0.5 * error_px**2, huber_px * (error_px - 0.5 * huber_px))))
