"""Map file format and repository persistence: round trip, bad files, atomic save, index, merge."""

from __future__ import annotations


import numpy as np
import pytest

from kp_vo.errors import InvalidInputError, MapFileError
from kp_vo.features.base import Features
from kp_vo.reloc import map_file
from kp_vo.reloc.index import DescriptorIndex, IndexConfig, choose_kind
from kp_vo.reloc.map_file import read_map_file, write_map_file
from kp_vo.reloc.repository import Repository


def _features(rng, n, metric):
    uv = rng.uniform(0, 300, (n, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    if metric == "hamming":
        desc = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    else:
        desc = rng.normal(size=(n, 16)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    return Features(uv, scores, desc, metric)


def _repo(metric="hamming", frames=3, n=40, seed=0, top_k=25):
    rng = np.random.default_rng(seed)
    f0 = _features(rng, n, metric)
    repo = Repository(metric, f0.descriptors.shape[1], "test")
    for j in range(frames):
        feats = f0 if j == 0 else _features(rng, n, metric)
        pts = rng.normal(size=(n, 3))
        pts[::7] = np.nan  # keypoints without depth are skipped
        T = np.eye(4)
        T[:3, 3] = [j, 0, 0]
        repo.add_points(pts, feats, frame_index=10 + j, stamp_ns=1000 * j, T_world_cam=T, top_k=top_k)
    return repo


def test_write_read_round_trip_mmap_and_copy(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.float64).reshape(3, 4), "b": np.array([1, 2, 255], np.uint8),
              "empty": np.zeros((0, 3), np.float32)}
    path = tmp_path / "x.map"
    write_map_file(path, arrays, {"hello": [1, 2]})
    for mmap in (True, False):
        out, meta = read_map_file(path, mmap=mmap)
        assert meta == {"hello": [1, 2]}
        for k, v in arrays.items():
            np.testing.assert_array_equal(out[k], v)
            assert out[k].dtype == v.dtype and out[k].shape == v.shape
        assert isinstance(out["a"], np.memmap) == mmap


def test_repository_round_trip_keeps_top_k_and_frames(tmp_path):
    repo = _repo()
    assert repo.num_frames == 3
    assert len(repo) == 75  # 25 per frame (34 finite of 40)
    # top-k keeps the highest-scoring keypoints of the frame
    f0_scores = repo.scores[repo.frame_ids == 0]
    assert np.all(np.diff(f0_scores) <= 0)
    path = tmp_path / "m.kpmap"
    repo.save(path)
    back = Repository.load(path)
    assert isinstance(back.descriptors, np.memmap)
    for name in ("points_world", "descriptors", "scores", "keypoints", "frame_ids", "frame_indices",
                 "frame_stamps_ns", "frame_poses"):
        np.testing.assert_array_equal(np.asarray(getattr(back, name)), getattr(repo, name))
    assert (back.metric, back.descriptor_dim, back.extractor) == ("hamming", 32, "test")
    # exact self-search: every map descriptor finds itself (distance 0)
    d, i = back.index.search(np.asarray(back.descriptors[:20]), 1)
    np.testing.assert_array_equal(d[:, 0], 0)


@pytest.mark.parametrize("damage", ["foreign", "truncated", "flipped", "version", "empty", "trailing"])
def test_bad_files_raise_map_file_error(tmp_path, damage):
    path = tmp_path / "m.kpmap"
    _repo(metric="l2").save(path)
    data = bytearray(path.read_bytes())
    if damage == "foreign":
        data = b"PK\x03\x04 this is a zip file, not a map" + bytes(100)
    elif damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "flipped":
        data[len(data) // 2] ^= 0x01
    elif damage == "version":
        data[8:12] = (99).to_bytes(4, "little")
    elif damage == "empty":
        data = b""
    elif damage == "trailing":
        data += b"junk"
    path.write_bytes(bytes(data))
    with pytest.raises(MapFileError) as info:
        Repository.load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    if damage == "version":
        assert "version 99" in message


def test_missing_file_raises(tmp_path):
    with pytest.raises(MapFileError, match="does not exist"):
        Repository.load(tmp_path / "nope.kpmap")


def test_interrupted_save_keeps_previous_map(tmp_path, monkeypatch):
    path = tmp_path / "m.kpmap"
    old = _repo(seed=1)
    old.save(path)
    before = path.read_bytes()

    real_open = open

    class FailingFile:
        """Writes half of the first large chunk and then fails like a full disk."""

        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, data):
            if self.written > 200:
                raise OSError(28, "No space left on device")
            self.written += len(data)
            return self.fh.write(bytes(data)[: max(1, len(data) // 2)])

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()
            return False

    # map_file writes through the built-in open; shadow it in that module only.
    monkeypatch.setattr(map_file, "open", lambda path, mode: FailingFile(real_open(path, mode)), raising=False)
    with pytest.raises(MapFileError, match="No space left"):
        _repo(seed=2, frames=5).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.kpmap"]  # temp file removed
    back = Repository.load(path)
    np.testing.assert_array_equal(np.asarray(back.points_world), old.points_world)


def test_incremental_add_updates_index_and_merge(tmp_path):
    repo = _repo(metric="l2", frames=2)
    n0 = len(repo)
    _ = repo.index  # built now, must follow later additions
    rng = np.random.default_rng(5)
    feats = _features(rng, 30, "l2")
    added = repo.add_points(rng.normal(size=(30, 3)), feats, 99, 5, np.eye(4), top_k=None)
    assert added == 30 and len(repo.index) == n0 + 30
    _, ids = repo.index.search(feats.descriptors, 1)
    assert np.all(ids[:, 0] >= n0)  # new points found through the incrementally updated index
    np.testing.assert_array_equal(repo.descriptors[ids[:, 0]], feats.descriptors)

    other = _repo(metric="l2", frames=2, seed=9)
    path = tmp_path / "o.kpmap"
    other.save(path)
    merged = repo.merge(Repository.load(path))
    assert len(merged) == len(repo) + len(other)
    assert merged.num_frames == repo.num_frames + other.num_frames
    # frame rows of the second map are renumbered after the first map's frames
    assert merged.frame_ids[len(repo):].min() == repo.num_frames
    np.testing.assert_array_equal(merged.frame_indices[merged.frame_ids[-1]], other.frame_indices[other.frame_ids[-1]])
    with pytest.raises(InvalidInputError, match="cannot merge"):
        repo.merge(_repo(metric="hamming"))


@pytest.mark.parametrize("metric", ["l2", "hamming"])
@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_index_kinds_find_exact_duplicates_and_survive_save(tmp_path, metric, kind):
    rng = np.random.default_rng(3)
    feats = _features(rng, 1500, metric)
    index = DescriptorIndex.build(feats.descriptors, metric, IndexConfig(kind=kind, nprobe=16))
    _, ids = index.search(feats.descriptors[:50], 1)
    assert np.mean(ids[:, 0] == np.arange(50)) >= 0.95
    repo = Repository(metric, feats.descriptors.shape[1], "t", index_config=IndexConfig(kind=kind))
    repo.add_points(rng.normal(size=(1500, 3)), feats, 0, 0, np.eye(4))
    assert repo.index.kind == kind
    repo.save(tmp_path / "k.kpmap")
    back = Repository.load(tmp_path / "k.kpmap")
    if kind != "flat":
        assert back._index.index is not None and back._index.index.kind == kind  # stored index reused
    _, ids2 = back.index.search(feats.descriptors[:50], 1)
    found = np.all(np.asarray(back.descriptors)[ids2[:, 0]] == feats.descriptors[:50], axis=1)
    assert found.mean() >= 0.95


def test_choose_kind_by_size():
    cfg = IndexConfig(exact_max=1000)
    assert choose_kind(1000, cfg) == "flat" and choose_kind(1001, cfg) == "ivf"
    with pytest.raises(InvalidInputError):
        choose_kind(10, IndexConfig(kind="magic"))
    with pytest.raises(InvalidInputError, match="ivf_codes"):
        choose_kind(10, IndexConfig(ivf_codes="pq99"))


def test_ivf_sq8_codes_are_smaller_and_find_the_exact_neighbours_of_noisy_queries():
    rng = np.random.default_rng(4)
    db = rng.normal(size=(8000, 64)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db[:200] + 0.02 * rng.normal(size=(200, 64)).astype(np.float32)  # re-observed descriptors
    exact_ids = DescriptorIndex.build(db, "l2", IndexConfig(kind="flat")).search(queries, 1)[1][:, 0]
    sizes = {}
    for codes in ("sq8", "flat"):
        index = DescriptorIndex.build(db, "l2", IndexConfig(kind="ivf", ivf_codes=codes, nlist=64, nprobe=4))
        assert type(index.faiss_index).__name__ == ("IndexIVFScalarQuantizer" if codes == "sq8" else "IndexIVFFlat")
        distances, ids = index.search(queries, 2)
        assert np.mean(ids[:, 0] == exact_ids) >= 0.9
        true_d2 = np.sum((db[ids[:, 0]] - queries) ** 2, axis=1)
        np.testing.assert_allclose(distances[:, 0], true_d2, atol=0.02)  # 8-bit codes: small distance error
        sizes[codes] = len(index.serialize())
    assert sizes["sq8"] < 0.4 * sizes["flat"]


def test_growing_repository_switches_from_exact_to_ivf_index_when_it_outgrows_exact_max():
    """Past exact_max the IVF index is built in the background; queries meanwhile use the exact index,
    kept up to date, and the IVF index, once adopted, also holds the rows added during its build."""
    rng = np.random.default_rng(5)
    repo = Repository("l2", 16, "t", index_config=IndexConfig(exact_max=1000))
    first = _features(rng, 800, "l2")
    repo.add_points(rng.normal(size=(800, 3)), first, 0, 0, np.eye(4))
    assert repo.index.kind == "flat"
    repo.add_points(rng.normal(size=(100, 3)), _features(rng, 100, "l2"), 1, 1, np.eye(4))
    assert repo.index.kind == "flat" and len(repo.index) == 900  # appended to the live exact index
    second = _features(rng, 800, "l2")
    repo.add_points(rng.normal(size=(800, 3)), second, 2, 2, np.eye(4))
    third = _features(rng, 50, "l2")
    repo.add_points(rng.normal(size=(50, 3)), third, 3, 3, np.eye(4))
    assert repo._index.finished(repo.descriptors).kind == "ivf"
    assert repo.index.kind == "ivf" and len(repo.index) == 1750
    for feats in (second, third):
        _, ids = repo.index.search(feats.descriptors[:50], 1)
        found = np.all(np.isclose(np.asarray(repo.descriptors)[ids[:, 0]], feats.descriptors[:50], atol=1e-6), axis=1)
        assert found.mean() >= 0.9


def _raw_map(path, header_text: str) -> None:
    """A file with the map layout around an arbitrary header, its data section padded to the header's
    data_end (4096) and a correct checksum, as a hostile writer would make it."""
    import hashlib

    header = header_text.encode("utf-8")
    body = map_file._PREFIX.pack(map_file.MAGIC, map_file.FORMAT_VERSION, len(header)) + header
    body += b"\0" * max(0, 4096 - len(body))
    path.write_bytes(body + hashlib.sha256(body).digest())


@pytest.mark.parametrize("header", [
    "[" * 100_000 + "]" * 100_000,                                               # nesting deep enough to recurse
    '{"arrays": 5, "metadata": {}, "data_end": 4096}',                          # table not a list
    '{"arrays": [], "metadata": [1, 2], "data_end": 4096}',                     # metadata not an object
    '{"arrays": [7], "metadata": {}, "data_end": 4096}',                        # entry not an object
    ('{"arrays": [{"name": "a", "dtype": "uint8", "shape": [-4, -8], "offset": 1024, "nbytes": 32}], '
     '"metadata": {}, "data_end": 4096}'),                                       # negative dimensions
    ('{"arrays": [{"name": "a", "dtype": "uint8", "shape": [4294967296, 4294967296, 0], "offset": 1024, '
     '"nbytes": 0}, {"name": "b", "dtype": "uint8", "shape": [4294967296, 4294967296], "offset": 1024, '
     '"nbytes": 0}], "metadata": {}, "data_end": 4096}'),                        # a size overflowing int64
])
def test_hostile_headers_with_a_valid_checksum_are_one_line_errors(tmp_path, header):
    path = tmp_path / "hostile.kpmap"
    _raw_map(path, header)
    with pytest.raises(MapFileError):
        read_map_file(path)
    with pytest.raises(MapFileError):
        Repository.load(path)


def test_a_stored_index_of_another_width_is_refused_at_load(tmp_path):
    repo = _repo("hamming", frames=1, n=40)
    other = DescriptorIndex.build(np.zeros((len(repo), 64), np.uint8), "hamming", IndexConfig(kind="flat"))
    arrays = {name: getattr(repo, name) for name in ("points_world", "descriptors", "scores", "keypoints",
                                                     "frame_ids", "frame_indices", "frame_stamps_ns", "frame_poses")}
    arrays["faiss_index"] = other.serialize()
    meta = {"kind": "kp_vo.keypoint_map", "metric": "hamming", "descriptor_dim": 32,
            "index": {"kind": "flat", "ntotal": len(repo)}}
    write_map_file(tmp_path / "wide.kpmap", arrays, meta)
    with pytest.raises(MapFileError, match="64-wide"):
        Repository.load(tmp_path / "wide.kpmap")


@pytest.mark.parametrize("top_k", [0, -5])
def test_building_a_map_with_a_non_positive_top_k_is_refused(top_k):
    from kp_vo.features import create_extractor
    from kp_vo.reloc.repository import build_repository

    with pytest.raises(InvalidInputError, match="top_k must be >= 1"):
        build_repository([], create_extractor("orb"), top_k=top_k)
