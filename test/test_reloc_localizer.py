"""Localizer: matching rules, 3D-3D and PnP pose on a synthetic RGB-D room (ViewSynth protocol)."""

from __future__ import annotations

import numpy as np
import pytest

import kp_vo.features.classical  # noqa: F401  (registers orb / sift)
from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Features, create_extractor
from kp_vo.odometry.types import Keyframe
from kp_vo.eval.reloc_room import render_room_frames, room_pose, room_trajectory
from kp_vo.reloc.evaluation import evaluate_localizer, localization_accuracy, mma, pose_error, write_evaluation
from kp_vo.reloc.index import IndexConfig
from kp_vo.reloc.localizer import Localizer, LocalizerConfig, match_to_repository
from kp_vo.reloc.repository import Repository, build_repository, lift_to_camera
from kp_vo.types import CameraIntrinsics

CAMERA = CameraIntrinsics(260.0, 260.0, 159.5, 119.5, 320, 240)
ONE_THREAD = IndexConfig(threads=1)  # FAISS OpenMP on a shared 2-core machine is slower than 1 thread


@pytest.fixture(scope="module")
def room_frames():
    """30 mapping frames on one circle and 10 query frames on a different one (radius, height, pitch)."""
    map_frames = render_room_frames(room_trajectory(30, radius=0.5, height=1.4))
    query_poses = room_trajectory(10, radius=0.9, height=1.15, pitch=np.radians(8.0), phase=np.pi / 30 + 0.3,
                                  yaw0=np.radians(10.0))
    return map_frames, render_room_frames(query_poses, first_index=1000)


def test_room_pose_is_a_rotation_looking_along_heading():
    T = room_pose([1.0, 2.0, 1.5], yaw=np.pi / 2, pitch=0.0)
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-12)
    assert np.isclose(np.linalg.det(T[:3, :3]), 1.0)
    np.testing.assert_allclose(T[:3, 2], [0, 1, 0], atol=1e-12)   # optical axis along world +y
    np.testing.assert_allclose(T[:3, 1], [0, 0, -1], atol=1e-12)  # image down = world down
    assert room_pose([0, 0, 0], 0.0, pitch=0.2)[2, 2] > 0         # positive pitch looks up


def test_lift_to_camera_known_point():
    depth = np.zeros((240, 320), np.float32)
    depth[100, 200] = 2.0
    pts = lift_to_camera(np.array([[200.0, 100.0], [10.0, 10.0], [-5.0, 3.0]]), depth, CAMERA)
    np.testing.assert_allclose(pts[0], [(200 - 159.5) / 260 * 2, (100 - 119.5) / 260 * 2, 2.0])
    assert np.isnan(pts[1]).all() and np.isnan(pts[2]).all()  # no depth / off image


def test_metrics_known_answers():
    T = np.eye(4)
    T2 = room_pose([0.3, 0.4, 0.0], 0.0)
    T3 = T2.copy()
    T3[:3, 3] = 0
    dt, dr = pose_error(T, T)
    assert dt == 0 and dr == 0
    assert np.isclose(pose_error(T2, T2 @ np.diag([1, 1, 1, 1.0]))[0], 0)
    assert np.isclose(pose_error(T3, T3 @ np.eye(4))[1], 0)
    # Non-zero known answers: a (3, 4, 0) m offset, and a 30 deg turn about z at the same centre.
    shifted = T2.copy()
    shifted[:3, 3] += [3.0, 4.0, 0.0]
    assert np.allclose(pose_error(shifted, T2), (5.0, 0.0))
    c, s = np.cos(np.radians(30.0)), np.sin(np.radians(30.0))
    turned = T2.copy()
    turned[:3, :3] = T2[:3, :3] @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    assert np.allclose(pose_error(turned, T2), (0.0, 30.0))
    assert mma(np.array([0.05, 0.2, 0.4, 1.0, np.nan])) == {"0.1": 0.25, "0.25": 0.5, "0.5": 0.75}
    acc = localization_accuracy([(0.1, 1.0), (0.8, 3.0), (3.0, 9.0), None])
    assert acc == {"0.5m_2deg": 0.25, "1m_5deg": 0.5, "5m_10deg": 0.75}


def _toy_repo(rng, n=200, dim=16):
    desc = rng.normal(size=(n, dim)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    repo = Repository("l2", dim, "toy")
    feats = Features(np.zeros((n, 2), np.float32), np.linspace(1, 0, n).astype(np.float32), desc, "l2")
    repo.add_points(rng.uniform(-5, 5, (n, 3)), feats, 0, 0, np.eye(4))
    return repo


def test_matching_modes_on_known_descriptors():
    rng = np.random.default_rng(0)
    repo = _toy_repo(rng)
    map_desc = np.asarray(repo.descriptors)
    # Query i = slightly perturbed map descriptor 3*i: its true match.
    q = map_desc[::3][:40] + 0.01 * rng.normal(size=(40, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    feats = Features(np.zeros((40, 2), np.float32), np.ones(40, np.float32), q.astype(np.float32), "l2")
    for mode in ("mutual", "ratio"):
        qi, ids, dist = match_to_repository(feats, repo, LocalizerConfig(match_mode=mode))
        assert len(qi) >= 38
        np.testing.assert_array_equal(ids, 3 * qi)
        assert np.all(dist < 0.1)
    qi, ids, _ = match_to_repository(feats, repo, LocalizerConfig(match_mode="topk", candidates=3))
    assert len(qi) == 120 and set(np.unique(qi)) == set(range(40))
    # Two map views of the SAME 3D point are not rivals in the ratio test; a distinct point is.
    dup = Repository("l2", 16, "toy")
    d = np.stack([map_desc[0], map_desc[0] * 0.999 + 0.001 * map_desc[1]])
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    ff = Features(np.zeros((2, 2), np.float32), np.ones(2, np.float32), d.astype(np.float32), "l2")
    same = dup.add_points(np.array([[1.0, 1, 1], [1.0, 1, 1.01]]), ff, 0, 0, np.eye(4))
    assert same == 2
    one = feats.subset(np.array([0]))
    assert len(match_to_repository(one, dup, LocalizerConfig(match_mode="ratio", ratio=0.8))[0]) == 1
    dup.points_world[1] = [3.0, 3.0, 3.0]
    assert len(match_to_repository(one, dup, LocalizerConfig(match_mode="ratio", ratio=0.8))[0]) == 0
    with pytest.raises(InvalidInputError, match="match mode"):
        match_to_repository(feats, repo, LocalizerConfig(match_mode="best"))


def test_metric_mismatch_is_rejected():
    repo = _toy_repo(np.random.default_rng(1))
    with pytest.raises(InvalidInputError, match="hamming"):
        Localizer(repo, create_extractor("orb"))


@pytest.mark.parametrize("extractor_name", ["orb", "sift"])
def test_room_localization_accuracy_viewsynth_protocol(room_frames, extractor_name, tmp_path):
    map_frames, query_frames = room_frames
    assert len({f.index for f in map_frames} | {f.index for f in query_frames}) == 40
    extractor = create_extractor(extractor_name, max_keypoints=1000)
    repo = build_repository(map_frames, extractor, top_k=300, index_config=ONE_THREAD)
    assert repo.num_frames == 30 and len(repo) > 30 * 200
    evaluation = evaluate_localizer(Localizer(repo, extractor), query_frames)
    summary = evaluation.summary
    assert summary["num_queries"] == 10
    assert summary["localization_accuracy"]["0.5m_2deg"] >= 0.9
    assert summary["median_translation_error_m"] < 0.05 and summary["median_rotation_error_deg"] < 1.0
    assert summary["mma"]["0.1"] > 0.4
    assert summary["mma"]["0.1"] <= summary["mma"]["0.25"] <= summary["mma"]["0.5"]
    # query trajectory really differs from the mapping one
    gaps = [min(np.linalg.norm(f.T_world_cam_gt[:3, 3] - m.T_world_cam_gt[:3, 3]) for m in map_frames)
            for f in query_frames]
    assert min(gaps) > 0.3
    paths = write_evaluation(evaluation, tmp_path)
    rows = np.loadtxt(paths["poses"], ndmin=2)
    assert rows.shape == (summary["num_success"], 8)


def test_room_localization_without_depth_uses_pnp(room_frames):
    map_frames, query_frames = room_frames
    extractor = create_extractor("orb", max_keypoints=1000)
    repo = build_repository(map_frames[::2], extractor, top_k=300, index_config=ONE_THREAD)
    localizer = Localizer(repo, extractor, LocalizerConfig(use_depth=False))
    results = [localizer.localize(f) for f in query_frames[:4]]
    assert all(r.method == "pnp" for r in results)
    good = [r for r, f in zip(results, query_frames) if r.success and pose_error(r.T_world_cam, f.T_world_cam_gt)[0] < 0.1]
    assert len(good) >= 3
    assert all(0 < r.confidence <= 1 for r in good)


def test_unmappable_query_fails_cleanly(room_frames):
    map_frames, _ = room_frames
    extractor = create_extractor("orb", max_keypoints=500)
    repo = build_repository(map_frames[:3], extractor, top_k=100, index_config=ONE_THREAD)
    blank = map_frames[0].__class__(5, 0, np.full((240, 320, 3), 128, np.uint8), map_frames[0].camera, depth=None)
    result = Localizer(repo, extractor).localize(blank)
    assert not result.success and result.T_world_cam is None and result.confidence == 0.0
    assert "failed" in result.message


def test_from_keyframes_keeps_finite_top_k():
    rng = np.random.default_rng(4)
    kfs = []
    for j in range(3):
        n = 50
        feats = Features(rng.uniform(0, 300, (n, 2)).astype(np.float32), np.sort(rng.uniform(0, 1, n))[::-1].astype(np.float32),
                         rng.integers(0, 256, (n, 32), dtype=np.uint8), "hamming")
        pts = rng.normal(size=(n, 3))
        pts[:5] = np.nan  # the five best keypoints have no 3D point
        kfs.append(Keyframe(frame_index=j * 10, stamp_ns=j, T_world_cam=np.eye(4), features=feats, points_world=pts,
                            point_ids=np.full(n, -1, np.int64)))
    repo = Repository.from_keyframes(kfs, top_k=20, extractor="orb")
    assert len(repo) == 60 and repo.num_frames == 3
    np.testing.assert_array_equal(repo.frame_indices, [0, 10, 20])
    # the kept points are rows 5..24 of each keyframe (best finite ones)
    np.testing.assert_array_equal(repo.descriptors[:20], kfs[0].features.descriptors[5:25])
    with pytest.raises(InvalidInputError, match="zero keyframes"):
        Repository.from_keyframes([])
