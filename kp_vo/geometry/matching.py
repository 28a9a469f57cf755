"""Descriptor matching: brute-force reciprocal matching (KP3D eq. 1) and projection-guided matching.

Descriptors are either float (N, D) (metric "l2") or packed-bit uint8 (N, B) (metric "hamming",
B bytes = 8 B bits). Matches are (K, 2) int64 ``[index_a, index_b]`` with (K,) float32 distances.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.spatial import cKDTree

from kp_vo.errors import InvalidInputError

log = logging.getLogger(__name__)

METRICS = ("l2", "hamming")


def check_descriptors(desc_a: np.ndarray, desc_b: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors a (N, D) and b (M, D) of ``metric`` as arrays ready for distances (l2: float32 and
    finite; hamming: packed uint8); InvalidInputError otherwise."""
    if metric not in METRICS:
        raise InvalidInputError(f"unknown descriptor metric {metric!r} (use 'l2' or 'hamming')")
    a, b = np.asarray(desc_a), np.asarray(desc_b)
    if a.ndim != 2 or b.ndim != 2:
        raise InvalidInputError(f"descriptors must be 2-D (N, D), got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[1]:
        raise InvalidInputError(f"descriptor lengths differ: {a.shape[1]} vs {b.shape[1]}")
    if metric == "hamming":
        if a.dtype != np.uint8 or b.dtype != np.uint8:
            raise InvalidInputError(f"hamming descriptors must be packed uint8, got {a.dtype} and {b.dtype}")
    else:
        if not (np.issubdtype(a.dtype, np.floating) and np.issubdtype(b.dtype, np.floating)):
            raise InvalidInputError(f"l2 descriptors must be floating point, got {a.dtype} and {b.dtype}")
        a = a.astype(np.float32, copy=False)
        b = b.astype(np.float32, copy=False)
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise InvalidInputError("l2 descriptors contain NaN or inf")
    return a, b


def descriptor_distances(desc_a: np.ndarray, desc_b: np.ndarray, metric: str) -> np.ndarray:
    """All pairwise distances (N, M) float32 between descriptors a (N, D) and b (M, D).

    "l2": Euclidean distance via |a|^2 + |b|^2 - 2 a.b (clipped at 0).
    "hamming": number of differing bits of packed uint8 descriptors, via one float32 matrix
    product of the unpacked 0/1 bits (exact for descriptors up to 2^24 bits).
    """
    a, b = check_descriptors(desc_a, desc_b, metric)
    if metric == "hamming":
        a = np.unpackbits(a, axis=1).astype(np.float32)
        b = np.unpackbits(b, axis=1).astype(np.float32)
        # Sums of 0/1 products are exact integers in float32; in-place ops keep this fast.
        d = a @ b.T
        d *= -2.0
        d += a.sum(axis=1)[:, None]
        d += b.sum(axis=1)[None, :]
        return d
    d2 = a @ b.T
    d2 *= -2.0
    d2 += (a * a).sum(axis=1)[:, None]
    d2 += (b * b).sum(axis=1)[None, :]
    np.maximum(d2, 0.0, out=d2)
    return np.sqrt(d2, out=d2)


def pair_distances(a: np.ndarray, b: np.ndarray, ia: np.ndarray, ib: np.ndarray, metric: str) -> np.ndarray:
    """Distances (K,) float32 between rows a[ia] and b[ib] of descriptors a (N, D), b (M, D) checked by
    :func:`check_descriptors`."""
    if metric == "hamming":
        if a.shape[1] % 8 == 0:  # popcount on 64-bit words: 8x fewer elements than on bytes
            a, b = a.view(np.uint64), b.view(np.uint64)
        counts = np.bitwise_count(a[ia] ^ b[ib])
        total = counts[:, 0].astype(np.int32)
        for column in counts.T[1:]:  # a few columns: added one by one (a row-wise sum is slower)
            total += column
        return total.astype(np.float32)
    diff = a[ia] - b[ib]
    return np.sqrt(np.einsum("ij,ij->i", diff, diff)).astype(np.float32)


def _best_per_group(group: np.ndarray, d: np.ndarray, tie: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best pair of every group: the smallest d, on equal d the smallest tie; pairs (P,) are unique.

    Returns (index (G,) of each group's best pair, in increasing group order; the group's second-smallest
    d (G,) float32, inf for a group of one). One stable sort by group, then O(P) segment minima.
    """
    order = np.argsort(_narrow(group), kind="stable")
    g, dd, tt = group[order], d[order].astype(np.float32), tie[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    sizes = np.diff(np.r_[starts, len(g)])
    is_min = dd == np.repeat(np.minimum.reduceat(dd, starts), sizes)
    lowest_tie = np.minimum.reduceat(np.where(is_min, tt, np.iinfo(np.int64).max), starts)
    chosen = is_min & (tt == np.repeat(lowest_tie, sizes))       # exactly one pair per group
    second = np.minimum.reduceat(np.where(chosen, np.float32(np.inf), dd), starts)
    return order[chosen], second


def _narrow(index: np.ndarray) -> np.ndarray:
    """Non-negative indices (P,) as uint16 when they fit: numpy's stable sort of 16-bit integers is a radix
    sort, 4x faster than its merge sort of int64 (same order)."""
    if len(index) and index.max() < 2**16 and index.min() >= 0:
        return index.astype(np.uint16)
    return index


def _empty() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)


def match_descriptors(desc_a: np.ndarray, desc_b: np.ndarray, metric: str, mutual: bool = True,
                      ratio: float | None = None,
                      max_distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-neighbour matching of each a (N, D) in b (M, D).

    mutual: keep only pairs that are each other's nearest neighbour (KP3D eq. 1): j = argmin of row i
        and d[i, j] is the minimum of column j; on exact ties b_j goes to the lowest such index_a.
    ratio: Lowe test, keep a only if best < ratio * second-best distance of its row.
    max_distance: keep only pairs with distance <= max_distance.
    Returns ``matches`` (K, 2) int64 [index_a, index_b] sorted by index_a and ``distances`` (K,) float32.
    """
    a, b = check_descriptors(desc_a, desc_b, metric)
    if len(a) == 0 or len(b) == 0:
        return _empty()
    ia = np.arange(len(a))
    nn_ab, best, second, column_minima = _nearest_neighbours(a, b, metric, need_second=ratio is not None)
    passes = np.ones(len(a), dtype=bool)          # the tests of each a on its own
    if ratio is not None and len(b) >= 2:
        passes &= best < ratio * second
    if max_distance is not None:
        passes &= best <= max_distance
    keep = passes.copy()
    if mutual:
        # a_i is b_j's nearest neighbour iff it reaches the column minimum; on exact ties the lowest
        # such index_a keeps b_j (whether or not that a passes its own tests). Only the b_j that an a
        # passing its tests would take can end in a match: the column minima are computed there alone.
        column_min = np.full(len(b), np.inf, np.float32)
        targets = np.unique(nn_ab[passes])
        column_min[targets] = column_minima(targets)
        cand = np.flatnonzero(best <= column_min[nn_ab])
        _, first = np.unique(nn_ab[cand], return_index=True)
        wins = np.zeros(len(a), dtype=bool)
        wins[cand[first]] = True
        keep &= wins
    matches = np.stack([ia[keep], nn_ab[keep]], axis=1).astype(np.int64)
    return matches, best[keep].astype(np.float32)


def _nearest_neighbours(a: np.ndarray, b: np.ndarray, metric: str, need_second: bool):
    """For checked descriptors a (N, D), b (M, D): nearest b of each a (N,) int64, its distance (N,) and
    the second-best distance of each a (N,) (inf when M < 2 or not needed), float32; and a function
    that gives, for b indices ``targets`` (T,), the distance (T,) float32 from each of those b to its
    nearest a.

    Hamming: exact k-NN searches with FAISS binary flat indexes (popcount kernels, 3x faster than the
    float matrix product of :func:`descriptor_distances` for 2000 x 2000 ORB descriptors; FAISS then
    runs on one OpenMP thread, process-wide); the reverse search runs only from the targets. L2: the
    full distance matrix.
    """
    if metric == "hamming":
        import faiss  # imported when first used: the light runtime path does not load it otherwise

        if faiss.omp_get_max_threads() != 1:
            faiss.omp_set_num_threads(1)  # per-frame batches: OpenMP spin-waits cost more than they save
        bits = 8 * a.shape[1]
        index_b = faiss.IndexBinaryFlat(bits)
        index_b.add(np.ascontiguousarray(b))
        k = 2 if need_second and len(b) >= 2 else 1
        d_ab, nn = index_b.search(np.ascontiguousarray(a), k)
        second = d_ab[:, 1].astype(np.float32) if k == 2 else np.full(len(a), np.inf, np.float32)

        def column_minima(targets: np.ndarray) -> np.ndarray:
            if len(targets) == 0:
                return np.zeros(0, np.float32)
            index_a = faiss.IndexBinaryFlat(bits)
            index_a.add(np.ascontiguousarray(a))
            return index_a.search(np.ascontiguousarray(b[targets]), 1)[0][:, 0].astype(np.float32)

        return nn[:, 0].astype(np.int64), d_ab[:, 0].astype(np.float32), second, column_minima
    dist = descriptor_distances(a, b, metric)
    ia = np.arange(len(a))
    nn_ab = np.argmin(dist, axis=1)
    best = dist[ia, nn_ab]
    column_min = dist.min(axis=0)
    second = np.full(len(a), np.inf, np.float32)
    if need_second and dist.shape[1] >= 2:
        # Second-best of each row: mask the best entry, take the row minimum.
        dist[ia, nn_ab] = np.inf
        second = dist.min(axis=1)
    return nn_ab.astype(np.int64), best, second, lambda targets: column_min[targets]


def match_by_projection(desc_a: np.ndarray, uv_a_pred: np.ndarray, desc_b: np.ndarray, uv_b: np.ndarray,
                        metric: str, radius_px: float, ratio: float | None = None,
                        max_distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Guided matching: each a is compared only with the b within ``radius_px`` of its predicted pixel.

    desc_a (N, D) with predicted pixels uv_a_pred (N, 2) (NaN rows are skipped); desc_b (M, D) at
    uv_b (M, 2). Each a takes its best candidate (optionally passing the ratio test among its own
    candidates and ``max_distance``); then each b keeps only its best a (one-to-one).
    Returns ``matches`` (K, 2) int64 [index_a, index_b] sorted by index_a and ``distances`` (K,) float32.
    """
    a, b = check_descriptors(desc_a, desc_b, metric)
    uv_a_pred = np.asarray(uv_a_pred, dtype=np.float64)
    uv_b = np.asarray(uv_b, dtype=np.float64)
    if uv_a_pred.shape != (len(a), 2) or uv_b.shape != (len(b), 2):
        raise InvalidInputError(f"pixel arrays must be (N, 2) matching the descriptors, got {uv_a_pred.shape} "
                                f"for {len(a)} and {uv_b.shape} for {len(b)}")
    if not np.isfinite(radius_px) or radius_px <= 0:
        raise InvalidInputError(f"radius_px must be positive, got {radius_px}")
    rows_a = np.flatnonzero(np.isfinite(uv_a_pred).all(axis=1))
    rows_b = np.flatnonzero(np.isfinite(uv_b).all(axis=1))
    if len(rows_a) == 0 or len(rows_b) == 0:
        return _empty()

    ia, ib, _ = pairs_within_radius(uv_a_pred[rows_a], cKDTree(uv_b[rows_b]), radius_px)
    ia, ib = rows_a[ia], rows_b[ib]
    return select_guided_matches(ia, ib, pair_distances(a, b, ia, ib, metric), ratio, max_distance)


def pairs_within_radius(uv_a: np.ndarray, tree_b: cKDTree,
                        radius_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of guided matching: every (i, j) with |uv_a[i] - b_j| <= radius_px, for finite
    pixels uv_a (N, 2) and the k-d tree of the finite pixels b (M, 2). Returns (ia (P,), ib (P,)) int64 and
    the pixel distances (P,) float64, in no particular order."""
    pairs = cKDTree(uv_a).sparse_distance_matrix(tree_b, float(radius_px), output_type="ndarray")
    return pairs["i"].astype(np.int64), pairs["j"].astype(np.int64), pairs["v"]


def select_guided_matches(ia: np.ndarray, ib: np.ndarray, d: np.ndarray, ratio: float | None = None,
                          max_distance: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Guided matches from unique candidate pairs (ia (P,), ib (P,)) at descriptor distances d (P,): each a
    takes its nearest candidate (ties: the lowest index_b), kept when it passes the ratio test against its
    own second-nearest candidate and ``max_distance``; then each b keeps its nearest a (ties: the lowest
    index_a). The result does not depend on the order of the pairs.
    Returns ``matches`` (K, 2) int64 [index_a, index_b] sorted by index_a and ``distances`` (K,) float32.
    """
    if len(ia) == 0:
        return _empty()
    best, second = _best_per_group(ia, d, ib)
    keep = np.ones(len(best), dtype=bool)
    if ratio is not None:
        keep &= d[best] < ratio * second
    if max_distance is not None:
        keep &= d[best] <= max_distance
    ia, ib, d = ia[best[keep]], ib[best[keep]], d[best[keep]]
    best, _ = _best_per_group(ib, d, ia)
    ia, ib, d = ia[best], ib[best], d[best]
    order = np.argsort(ia, kind="stable")
    matches = np.stack([ia[order], ib[order]], axis=1).astype(np.int64)
    return matches, d[order].astype(np.float32)
