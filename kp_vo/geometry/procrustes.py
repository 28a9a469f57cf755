"""Closed-form 3D-3D alignment: weighted Procrustes / Umeyama, KP3D residual pose correction, RANSAC.

Weighted Procrustes (Choy et al., used in "robust correspondences" eq. 4-5): minimise
sum_i w_i |dst_i - (s R src_i + t)|^2 with weighted centroids, a weighted cross-covariance,
its SVD and a determinant fix so that det(R) = +1 even for planar or mirrored data.
"""

from __future__ import annotations

import logging

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.camera import backproject, check_K, check_points
from kp_vo.geometry.ransac import needed_iterations
from kp_vo.geometry.se3 import check_pose, make_pose, transform

log = logging.getLogger(__name__)


def weighted_procrustes(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
                        with_scale: bool = False) -> tuple[np.ndarray, float]:
    """Best rigid (or similarity) transform with dst ~= s R src + t.

    src, dst: (N, 3) float64 corresponding points, N >= 3. weights: (N,) >= 0, not all zero.
    Returns ``T_dst_src`` (4, 4) holding R and t, and the scale s (1.0 when ``with_scale`` is False).
    """
    src = check_points(src, 3, "src")
    dst = check_points(dst, 3, "dst")
    if src.shape != dst.shape:
        raise InvalidInputError(f"src and dst differ in shape: {src.shape} vs {dst.shape}")
    if len(src) < 3:
        raise InvalidInputError(f"procrustes needs at least 3 points, got {len(src)}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InvalidInputError("procrustes points contain NaN or inf")
    if weights is None:
        w = np.ones(len(src))
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape != (len(src),):
            raise InvalidInputError(f"weights must have shape ({len(src)},), got {w.shape}")
        if not np.isfinite(w).all() or np.any(w < 0):
            raise InvalidInputError("weights must be finite and non-negative")
        if w.sum() <= 0:
            raise InvalidInputError("weights are all zero")
    w = w / w.sum()

    # Weighted centroids and centred points (eq. 4).
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    # Weighted cross-covariance dst <- src and its SVD (eq. 5), with the reflection fix.
    S = (xd * w[:, None]).T @ xs
    U, sig, Vt = np.linalg.svd(S)
    d = 1.0 if np.linalg.det(U) * np.linalg.det(Vt) >= 0 else -1.0
    D = np.array([1.0, 1.0, d])
    R = (U * D) @ Vt
    scale = 1.0
    if with_scale:
        var_s = float(w @ (xs * xs).sum(axis=1))
        if var_s <= 1e-300:
            raise InvalidInputError("source points have zero spread; scale is undefined")
        scale = float((sig * D).sum() / var_s)
    t = mu_d - scale * (R @ mu_s)
    return make_pose(R, t), scale


def procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Unweighted rigid alignment without scale: ``T_dst_src`` (4, 4) with dst ~= R src + t."""
    return weighted_procrustes(src, dst)[0]


def refine_pose_procrustes(T_c_t: np.ndarray, points_t: np.ndarray, uv_c: np.ndarray,
                           K: np.ndarray) -> np.ndarray:
    """KP3D sec. 3.2 (eq. 3-5) residual pose correction.

    T_c_t: (4, 4) initial pose (target -> context), points_t: (N, 3) lifted target keypoints in the
    target camera frame, uv_c: (N, 2) matched context keypoints. The context keypoints are lifted with
    the depth d_c = z of T_c_t @ P_t, then Procrustes from P_t to P_c gives the refined ``T_c_t``.
    Points with d_c <= 0 (or non-finite) are dropped; with fewer than 3 left the input pose is returned.
    """
    T_c_t = check_pose(T_c_t, "T_c_t")
    P_t = check_points(points_t, 3, "points_t")
    uv_c = check_points(uv_c, 2, "uv_c")
    if len(P_t) != len(uv_c):
        raise InvalidInputError(f"{len(P_t)} points_t but {len(uv_c)} uv_c")
    K = check_K(K)
    d_c = transform(T_c_t, P_t)[:, 2]
    ok = np.isfinite(d_c) & (d_c > 0) & np.isfinite(uv_c).all(axis=1) & np.isfinite(P_t).all(axis=1)
    if ok.sum() < 3:
        log.debug("refine_pose_procrustes: only %d usable points, pose unchanged", int(ok.sum()))
        return T_c_t.copy()
    P_c = backproject(uv_c[ok], d_c[ok], K)
    return procrustes(P_t[ok], P_c)


# Minimal samples drawn, solved and scored together per round of the RANSAC loop (adaptive stopping is
# checked between rounds).
_BATCH = 64


def _nondegenerate(P: np.ndarray) -> np.ndarray:
    """(K,) bool: which triangles P (K, 3, 3) are not degenerate (area not negligible against their sides)."""
    e1, e2 = P[:, 1] - P[:, 0], P[:, 2] - P[:, 0]
    area2 = np.linalg.norm(np.cross(e1, e2), axis=1)
    scale2 = np.maximum(np.maximum((e1 * e1).sum(axis=1), (e2 * e2).sum(axis=1)), 1e-300)
    return area2 > 1e-6 * scale2


def _procrustes_many(src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rigid fits dst ~= R src + t of K point sets src, dst (K, M, 3), equally weighted: R (K, 3, 3) with
    det +1 and t (K, 3) (the batched form of :func:`weighted_procrustes`)."""
    mu_s, mu_d = src.mean(axis=1), dst.mean(axis=1)
    S = np.einsum("kmi,kmj->kij", dst - mu_d[:, None], src - mu_s[:, None])
    U, _, Vt = np.linalg.svd(S)
    d = np.where(np.linalg.det(U) * np.linalg.det(Vt) >= 0, 1.0, -1.0)
    R = (U * np.stack([np.ones_like(d), np.ones_like(d), d], axis=1)[:, None, :]) @ Vt
    return R, mu_d - np.einsum("kij,kj->ki", R, mu_s)


def _distinct_triples(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """(k, 3) int: k samples of 3 distinct indices below n (n >= 3), each uniform over the 3-subsets."""
    first = rng.integers(0, n, k)
    second = rng.integers(0, n - 1, k)
    second += second >= first
    third = rng.integers(0, n - 2, k)
    low, high = np.minimum(first, second), np.maximum(first, second)
    third += third >= low
    third += third >= high
    return np.stack([first, second, third], axis=1)


def ransac_procrustes(src: np.ndarray, dst: np.ndarray, threshold_m: float | np.ndarray, iterations: int = 200,
                      confidence: float = 0.999, min_inliers: int = 6,
                      rng: np.random.Generator | None = None,
                      weights: np.ndarray | None = None) -> tuple[bool, np.ndarray, np.ndarray]:
    """Robust rigid alignment dst ~= R src + t with 3-point RANSAC and a (weighted) refit on the inliers.

    src, dst: (N, 3); rows with non-finite values are never inliers. An inlier has
    |dst - T src| < threshold_m (metres; one value, or (N,) per point, e.g. from a depth noise model).
    weights: optional (N,) > 0 weights of the refits (e.g. inverse depth variances); None = equal.
    Returns (success, ``T_dst_src`` (4, 4), inliers (N,) bool); on failure (too few points or inliers)
    success is False, T is identity and no row is an inlier.
    """
    src = check_points(src, 3, "src")
    dst = check_points(dst, 3, "dst")
    if src.shape != dst.shape:
        raise InvalidInputError(f"src and dst differ in shape: {src.shape} vs {dst.shape}")
    threshold = np.broadcast_to(np.asarray(threshold_m, dtype=np.float64), (len(src),)) \
        if np.ndim(threshold_m) == 0 or np.shape(threshold_m) == (len(src),) else None
    if threshold is None or not (np.isfinite(threshold).all() and (threshold > 0).all()):
        raise InvalidInputError(f"threshold_m must be positive: one value or one per point ({len(src)})")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (len(src),) or not (np.isfinite(w).all() and (w > 0).all()):
        raise InvalidInputError(f"weights must be ({len(src)},) positive values")
    rng = np.random.default_rng(0) if rng is None else rng
    n = len(src)
    fail = (False, np.eye(4), np.zeros(n, dtype=bool))
    finite = np.flatnonzero(np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1))
    if len(finite) < max(3, min_inliers):
        return fail
    S, D, W = src[finite], dst[finite], w[finite]
    th2 = threshold[finite] ** 2

    def inliers_of(R: np.ndarray, t: np.ndarray) -> np.ndarray:
        """(K, N) inlier masks of K rigid transforms R (K, 3, 3), t (K, 3)."""
        return (((S @ R.transpose(0, 2, 1)) + t[:, None, :] - D) ** 2).sum(axis=2) < th2

    def refit(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The weighted fit on ``mask`` and its inlier mask (N,)."""
        T = weighted_procrustes(S[mask], D[mask], W[mask])[0]
        return T, inliers_of(T[None, :3, :3], T[None, :3, 3])[0]

    best_mask = np.zeros(len(S), dtype=bool)
    best_count = 0
    needed = iterations
    drawn = 0
    while drawn < min(iterations, needed):
        k = min(_BATCH, min(iterations, needed) - drawn)
        drawn += k
        idx = _distinct_triples(rng, len(S), k)
        ok = _nondegenerate(S[idx]) & _nondegenerate(D[idx])
        if not ok.any():
            continue
        R, t = _procrustes_many(S[idx[ok]], D[idx[ok]])
        masks = inliers_of(R, t)
        counts = masks.sum(axis=1)
        top = int(np.argmax(counts))                       # the first of the best, as drawn
        if counts[top] > best_count:
            best_count, best_mask = int(counts[top]), masks[top]
            needed = needed_iterations(best_count / len(S), 3, confidence, iterations)
    if best_count < max(3, min_inliers):
        return fail
    # Refit on the inliers, re-classify, refit once more.
    T, mask = refit(best_mask)
    if mask.sum() >= 3:
        T, mask = refit(mask)
    if mask.sum() < max(3, min_inliers):
        return fail
    inliers = np.zeros(n, dtype=bool)
    inliers[finite[mask]] = True
    return True, T, inliers
