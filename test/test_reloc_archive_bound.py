"""The repository's memory: ``nbytes`` is what its arrays hold, and ``max_bytes`` is a bound appends keep."""

import tracemalloc

import numpy as np
import pytest

from kp_vo.features.base import Features
from kp_vo.reloc.index import IndexConfig
from kp_vo.reloc.repository import ArchiveFullError, Repository


def _keyframe(rng, n, dim=32, metric="hamming"):
    if metric == "hamming":
        desc = rng.integers(0, 256, (n, dim), dtype=np.uint8)
    else:
        desc = rng.normal(size=(n, dim)).astype(np.float32)
    return rng.normal(size=(n, 3)), Features(rng.uniform(0, 100, (n, 2)).astype(np.float32),
                                              rng.uniform(0, 1, n).astype(np.float32), desc, metric)


@pytest.mark.parametrize("metric", ["hamming", "l2"])
def test_nbytes_is_the_allocated_arrays_plus_the_index_codes(metric):
    rng = np.random.default_rng(0)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        repo = Repository(metric, 32, "t")
        for k in range(180):
            repo.add_points(*_keyframe(rng, 50, metric=metric), k, k, np.eye(4))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    buffers = [*repo._points._buffers.values(), *repo._frames._buffers.values()]
    arrays = sum(b.nbytes for b in buffers)
    index = len(repo) * repo.descriptors[0].nbytes        # 9 000 points: an exact (flat) index of the codes
    assert repo.nbytes == arrays + index
    assert abs(arrays - held) < 0.1 * arrays               # what the process really allocated for them
    assert repo.nbytes_after(50) == repo.nbytes + 50 * repo.descriptors[0].nbytes   # room left: no growth


def test_nbytes_after_predicts_every_append():
    rng = np.random.default_rng(1)
    repo = Repository("l2", 64, "t", index_config=IndexConfig(exact_max=3000))   # flat, then IVF sq8
    for k in range(120):
        xyz, feats = _keyframe(rng, 40, dim=64, metric="l2")
        predicted = repo.nbytes_after(40)
        repo.add_points(xyz, feats, k, k, np.eye(4))
        assert repo.nbytes == predicted


@pytest.mark.parametrize("metric,dim", [("hamming", 32), ("l2", 64)])
@pytest.mark.parametrize("max_mb", [0.5, 2.0, 8.0])   # 8 MB: past exact_max, the index turns IVF on the way
def test_appends_stay_under_max_bytes_and_fill_it(max_mb, metric, dim):
    rng = np.random.default_rng(2)
    max_bytes = int(max_mb * 2 ** 20)
    repo = Repository(metric, dim, "t", max_bytes=max_bytes)
    added = 0
    while repo.can_add(300):
        repo.add_points(*_keyframe(rng, 300, dim, metric), added, added, np.eye(4))
        added += 1
        assert repo.nbytes <= max_bytes
    assert repo.nbytes > 0.95 * max_bytes          # the buffers grew up to the bound, not to half of it
    assert repo.nbytes_after(300) > max_bytes
    points, frames, nbytes = len(repo), repo.num_frames, repo.nbytes
    with pytest.raises(ArchiveFullError, match="memory bound"):
        repo.add_points(*_keyframe(rng, 300, dim, metric), added, added, np.eye(4))
    assert (len(repo), repo.num_frames, repo.nbytes) == (points, frames, nbytes)
    assert repo.can_add(0, 0)


def test_max_bytes_must_be_positive():
    with pytest.raises(Exception, match="max_bytes"):
        Repository("l2", 8, max_bytes=0)
