"""The keyframe archive stays cheap as it grows: appends reallocate O(log N) times, and no append or
query waits for an IVF index to be trained (that happens in a background thread)."""

import threading

import numpy as np

import kp_vo.reloc.live_index
from kp_vo.features.base import Features
from kp_vo.reloc.index import DescriptorIndex, IndexConfig
from kp_vo.reloc.repository import Repository


def _keyframe(rng, n, dim=16):
    desc = rng.normal(size=(n, dim)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return rng.normal(size=(n, 3)), Features(rng.uniform(0, 100, (n, 2)).astype(np.float32),
                                              rng.uniform(0, 1, n).astype(np.float32), desc, "l2")


def test_appends_reallocate_logarithmically_and_keep_every_row():
    rng = np.random.default_rng(0)
    repo = Repository("l2", 16, "t")
    buffers, added = set(), []
    for k in range(1000):
        xyz, feats = _keyframe(rng, 10)
        repo.add_points(xyz, feats, k, k, np.eye(4))
        buffers.add(id(repo._points._buffers["descriptors"]))
        added.append(feats.descriptors[np.argsort(-feats.scores, kind="stable")])   # kept best first
    assert len(repo) == 10_000 and repo.num_frames == 1000
    assert len(buffers) <= 10          # 64 -> 128 -> ... -> 16384 rows: a copy per doubling, not per append
    np.testing.assert_array_equal(repo.descriptors, np.concatenate(added))
    np.testing.assert_array_equal(repo.frame_ids, np.repeat(np.arange(1000), 10))
    np.testing.assert_array_equal(repo.frame_indices, np.arange(1000))


def test_a_view_taken_before_appends_is_not_changed_by_them():
    rng = np.random.default_rng(1)
    repo = Repository("l2", 16, "t")
    xyz, feats = _keyframe(rng, 30)
    repo.add_points(xyz, feats, 0, 0, np.eye(4))
    before = repo.points_world
    copy = before.copy()
    for k in range(1, 20):
        repo.add_points(*_keyframe(rng, 30), k, k, np.eye(4))
    np.testing.assert_array_equal(before, copy)
    np.testing.assert_array_equal(repo.points_world[:30], copy)


def test_appends_and_queries_never_wait_for_the_ivf_training(monkeypatch):
    """The IVF build is held until released: meanwhile appends return and queries are answered exactly by
    the flat index kept up to date; once released, the IVF index is adopted with every row."""
    release, started = threading.Event(), threading.Event()
    build = DescriptorIndex.build

    def slow_build(descriptors, metric, config=None, rng=None):
        if len(descriptors) > config.exact_max:
            started.set()
            assert release.wait(30)
        return build(descriptors, metric, config, rng)

    monkeypatch.setattr(kp_vo.reloc.live_index.DescriptorIndex, "build", staticmethod(slow_build))
    rng = np.random.default_rng(2)
    repo = Repository("l2", 16, "t", index_config=IndexConfig(exact_max=500))
    repo.add_points(*_keyframe(rng, 400), 0, 0, np.eye(4))
    assert repo.index.kind == "flat"
    for k in range(1, 6):                          # crosses exact_max at the second keyframe
        xyz, feats = _keyframe(rng, 400)
        repo.add_points(xyz, feats, k, k, np.eye(4))
        _, ids = repo.index.search(feats.descriptors, 1)
        assert repo.index.kind == "flat" and len(repo.index) == len(repo)
        assert ids[:, 0].min() >= len(repo) - 400                       # the exact index finds the new rows
        np.testing.assert_array_equal(repo.descriptors[ids[:, 0]], feats.descriptors)
    assert started.is_set()
    release.set()
    index = repo._index.finished(repo.descriptors)
    assert index.kind == "ivf" and len(index) == len(repo) == 2400


def test_an_ivf_index_is_retrained_in_the_background_as_the_map_grows():
    growth = kp_vo.reloc.live_index.REBUILD_GROWTH
    rng = np.random.default_rng(3)
    repo = Repository("l2", 16, "t", index_config=IndexConfig(exact_max=200))
    repo.add_points(*_keyframe(rng, 300), 0, 0, np.eye(4))
    first = repo._index.finished(repo.descriptors)
    assert first.kind == "ivf" and repo._index._trained_rows == 300
    repo.add_points(*_keyframe(rng, 300 * growth - 301), 1, 1, np.eye(4))
    assert repo._index.finished(repo.descriptors) is first and len(first) == 300 * growth - 1   # extended
    repo.add_points(*_keyframe(rng, 1), 2, 2, np.eye(4))
    second = repo._index.finished(repo.descriptors)
    assert second is not first and repo._index._trained_rows == 300 * growth and len(second) == 300 * growth


def test_a_build_that_fell_behind_catches_up_in_the_background(monkeypatch):
    """Rows appended during a long build are added to it in the background before it is swapped in."""
    monkeypatch.setattr(kp_vo.reloc.live_index, "CATCH_UP_ROWS", 100)
    release = threading.Event()
    build = DescriptorIndex.build

    def slow_build(descriptors, metric, config=None, rng=None):
        if len(descriptors) > config.exact_max:
            assert release.wait(30)
        return build(descriptors, metric, config, rng)

    monkeypatch.setattr(kp_vo.reloc.live_index.DescriptorIndex, "build", staticmethod(slow_build))
    rng = np.random.default_rng(4)
    repo = Repository("l2", 16, "t", index_config=IndexConfig(exact_max=500))
    repo.add_points(*_keyframe(rng, 600), 0, 0, np.eye(4))      # IVF build of 600 rows starts, held
    repo.add_points(*_keyframe(rng, 400), 1, 1, np.eye(4))      # 400 rows behind it
    release.set()
    repo._index._build.thread.join()
    repo.add_points(*_keyframe(rng, 10), 2, 2, np.eye(4))       # finds it 410 rows behind: sent to catch up
    catching_up = repo._index._build
    assert catching_up is not None and repo._index.index is None
    catching_up.thread.join()
    assert len(catching_up.result) == 1010
    repo.add_points(*_keyframe(rng, 10), 3, 3, np.eye(4))       # adopted, the last 10 rows added here
    assert repo._index.index is catching_up.result and len(repo._index.index) == 1020
    assert repo._index._trained_rows == 600
