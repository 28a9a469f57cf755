"""Descriptor distances, reciprocal matching and projection-guided matching."""

import time

import numpy as np
import pytest

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.matching import descriptor_distances, match_by_projection, match_descriptors


def unit_rows(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_l2_distances_match_brute_force():
    rng = np.random.default_rng(0)
    a, b = unit_rows(rng.normal(size=(20, 32))), unit_rows(rng.normal(size=(15, 32)))
    d = descriptor_distances(a, b, "l2")
    assert d.dtype == np.float32 and d.shape == (20, 15)
    ref = np.linalg.norm(a[:, None, :].astype(np.float64) - b[None, :, :], axis=2)
    np.testing.assert_allclose(d, ref, atol=1e-5)
    assert (descriptor_distances(a, a, "l2").diagonal() >= 0).all()


def test_hamming_distances_match_brute_force_popcount():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (30, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (25, 32), dtype=np.uint8)
    d = descriptor_distances(a, b, "hamming")
    ref = np.array([[sum(bin(int(x)).count("1") for x in (ra ^ rb)) for rb in b] for ra in a])
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, ref)


def test_hamming_2000x2000_is_fast():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (2000, 32), dtype=np.uint8)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        descriptor_distances(a, b, "hamming")
        times.append(time.perf_counter() - t0)
    # ~50 ms on one loaded core here; the loose bound only catches a non-vectorised regression.
    assert min(times) < 0.3


@pytest.mark.parametrize("metric", ["l2", "hamming"])
def test_mutual_matching_recovers_a_permutation(metric):
    rng = np.random.default_rng(3)
    n = 50
    if metric == "l2":
        a = unit_rows(rng.normal(size=(n, 64)))
        perm = rng.permutation(n)
        b = unit_rows(a[perm] + 0.01 * rng.normal(size=(n, 64)))
    else:
        a = rng.integers(0, 256, (n, 32), dtype=np.uint8)
        perm = rng.permutation(n)
        b = a[perm].copy()
        b[:, 0] ^= 0b101  # flip two bits of every descriptor
    matches, dist = match_descriptors(a, b, metric)
    assert matches.dtype == np.int64 and dist.dtype == np.float32
    assert len(matches) == n
    np.testing.assert_array_equal(matches[:, 0], np.arange(n))  # sorted by index_a
    np.testing.assert_array_equal(perm[matches[:, 1]], matches[:, 0])


def test_mutual_and_ratio_and_max_distance():
    # a0 and a1 both have b0 as nearest neighbour; only a0 is mutual. a2 is ambiguous between b1 and b2.
    a = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    b = np.array([[0.995, 0.0998], [0.1, 0.995], [-0.1, 0.995]], dtype=np.float32)
    b = unit_rows(b)
    m, _ = match_descriptors(a, b, "l2", mutual=False)
    assert m[:, 0].tolist() == [0, 1, 2] and m[0, 1] == 0 and m[1, 1] == 0
    m, _ = match_descriptors(a, b, "l2", mutual=True)
    assert [tuple(r) for r in m] == [(0, 0), (2, int(m[1, 1]))] and len(m) == 2
    m, _ = match_descriptors(a, b, "l2", mutual=True, ratio=0.8)
    assert [tuple(r) for r in m] == [(0, 0)]
    m, d = match_descriptors(a, b, "l2", mutual=False, max_distance=0.15)
    assert [tuple(r) for r in m] == [(0, 0), (2, int(m[1, 1]))]
    assert (d <= 0.15).all()


def test_empty_inputs_and_bad_inputs():
    e = np.zeros((0, 8), dtype=np.float32)
    x = unit_rows(np.ones((3, 8)))
    for a, b in ((e, x), (x, e), (e, e)):
        m, d = match_descriptors(a, b, "l2")
        assert m.shape == (0, 2) and m.dtype == np.int64 and d.shape == (0,) and d.dtype == np.float32
    m, d = match_by_projection(e, np.zeros((0, 2)), x, np.zeros((3, 2)), "l2", 5.0)
    assert m.shape == (0, 2) and d.shape == (0,)
    with pytest.raises(InvalidInputError):
        match_descriptors(x, x, "cosine")
    with pytest.raises(InvalidInputError):
        match_descriptors(x, unit_rows(np.ones((3, 4))), "l2")
    with pytest.raises(InvalidInputError):
        descriptor_distances(x, x, "hamming")  # float descriptors with a bit metric
    with pytest.raises(InvalidInputError):
        match_by_projection(x, np.zeros((2, 2)), x, np.zeros((3, 2)), "l2", 5.0)


def test_match_by_projection_uses_radius_and_is_one_to_one():
    rng = np.random.default_rng(4)
    n = 40
    a = unit_rows(rng.normal(size=(n, 32)))
    perm = rng.permutation(n)
    b = unit_rows(a[perm] + 0.05 * rng.normal(size=(n, 32)))
    uv_b = rng.uniform(0, 600, (n, 2))
    uv_a_pred = uv_b[np.argsort(perm)] + rng.normal(0, 1.0, (n, 2))  # a_i predicted near its true b
    uv_a_pred[5] = np.nan  # skipped
    m, d = match_by_projection(a, uv_a_pred, b, uv_b, "l2", radius_px=5.0)
    assert 5 not in m[:, 0]
    assert len(m) == n - 1
    np.testing.assert_array_equal(perm[m[:, 1]], m[:, 0])
    assert np.all(np.diff(m[:, 0]) > 0)
    # Predictions far from every b give nothing; the one-to-one rule lets only one a take a b.
    m, _ = match_by_projection(a, uv_a_pred + 1000.0, b, uv_b, "l2", radius_px=5.0)
    assert len(m) == 0
    same = np.repeat(uv_b[:1], n, axis=0)
    m, _ = match_by_projection(a, same, b, uv_b, "l2", radius_px=1.0)
    assert len(m) == 1 and m[0, 1] == 0 and len(np.unique(m[:, 1])) == len(m)


def test_match_by_projection_ratio_and_hamming():
    a = np.array([[0b00000000], [0b11110000]], dtype=np.uint8)
    b = np.array([[0b00000001], [0b00000011], [0b11110001]], dtype=np.uint8)
    uv = np.array([[10.0, 10.0], [10.0, 11.0], [50.0, 50.0]])
    uv_a = np.array([[10.0, 10.0], [50.0, 50.0]])
    m, d = match_by_projection(a, uv_a, b, uv, "hamming", radius_px=3.0)
    assert [tuple(r) for r in m] == [(0, 0), (1, 2)] and d.tolist() == [1.0, 1.0]
    m, _ = match_by_projection(a, uv_a, b, uv, "hamming", radius_px=3.0, ratio=0.4)
    assert [tuple(r) for r in m] == [(1, 2)]  # a0: 1 / 2 fails the ratio; a1 has a single candidate
    m, _ = match_by_projection(a, uv_a, b, uv, "hamming", radius_px=3.0, ratio=0.6)
    assert [tuple(r) for r in m] == [(0, 0), (1, 2)]


@pytest.mark.parametrize("seed", range(5))
def test_match_descriptors_agrees_with_a_loop_reference(seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(40, 8)).astype(np.float32)
    b = rng.normal(size=(30, 8)).astype(np.float32)
    d = np.linalg.norm(a[:, None].astype(np.float64) - b[None], axis=2)
    ref_mutual, ref_ratio = [], []
    for i in range(len(a)):
        j = int(np.argmin(d[i]))
        if int(np.argmin(d[:, j])) == i:
            ref_mutual.append((i, j))
        best, second = np.sort(d[i])[:2]
        if best < 0.8 * second:
            ref_ratio.append((i, j))
    m, dist = match_descriptors(a, b, "l2")
    assert [tuple(r) for r in m] == ref_mutual
    np.testing.assert_allclose(dist, d[m[:, 0], m[:, 1]], atol=1e-5)
    m, _ = match_descriptors(a, b, "l2", mutual=False, ratio=0.8)
    assert [tuple(r) for r in m] == ref_ratio


def _reference_matches(a, b, metric, ratio):
    """Mutual nearest neighbours with a ratio test, written out from the full distance matrix: a_i's
    nearest b_j (lowest j on ties) is kept when no a is closer to b_j and no lower-index a with the same
    nearest b_j is as close."""
    d = descriptor_distances(a, b, metric).astype(np.float64)
    nn = d.argmin(axis=1)
    pairs = []
    for i, j in enumerate(nn):
        rivals = np.flatnonzero((nn == j) & (d[:, j] == d[i, j]))
        if d[i, j] > d[:, j].min() or rivals[0] != i:
            continue
        if ratio is not None and not d[i, j] < ratio * np.sort(d[i])[1]:
            continue
        pairs.append((i, j))
    return np.array(pairs, np.int64).reshape(-1, 2)


@pytest.mark.parametrize("ratio", [None, 0.8])
def test_hamming_matching_equals_the_full_matrix_reference_with_ties(ratio):
    # 8-bit descriptors: many exactly equal distances, so the tie rules (lowest index) are exercised.
    rng = np.random.default_rng(11)
    for _ in range(20):
        a = rng.integers(0, 256, (40, 1), dtype=np.uint8)
        b = rng.integers(0, 256, (55, 1), dtype=np.uint8)
        matches, dist = match_descriptors(a, b, "hamming", mutual=True, ratio=ratio)
        np.testing.assert_array_equal(matches, _reference_matches(a, b, "hamming", ratio))
        full = descriptor_distances(a, b, "hamming")
        np.testing.assert_array_equal(dist, full[matches[:, 0], matches[:, 1]])
