"""reloc_core: the VO node core driven by a stand-in localizer, then by the real Localizer on a real map."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import kp_vo.features.classical  # noqa: F401  (registers orb)
from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_config import FramesConfig, NodeConfig
from kp_vo.bridge.reloc_core import RelocConfig, localization_covariance, make_reloc_core, map_to_odom
from kp_vo.features.base import create_extractor
from kp_vo.eval.reloc_room import render_room_frames, room_trajectory
from kp_vo.reloc.evaluation import pose_error
from kp_vo.reloc.index import IndexConfig
from kp_vo.reloc.localizer import Localizer, LocalizerConfig
from kp_vo.reloc.repository import Repository, build_repository
from kp_vo.types import CameraIntrinsics

F = factory()
CAM = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)


class FakeLocalizer:
    """Succeeds (pose x = stamp in s) unless the image is black."""

    def localize(self, frame):
        ok = frame.image.max() > 0
        T = np.eye(4)
        T[0, 3] = frame.stamp_ns * 1e-9
        return SimpleNamespace(success=ok, T_world_cam=T if ok else None, num_matches=80,
                               num_inliers=25 if ok else 3, timings={}, message="", features=None)


def img(t, v=100):
    return cv.image_msg(F, t, "cam", np.full((48, 64), v, np.uint8), "mono8")


def test_reloc_core_outputs_map_poses_and_covariance():
    config = RelocConfig(position_std_m=0.1, rotation_std_rad=0.02, reference_inliers=100)
    core = make_reloc_core(NodeConfig(), FakeLocalizer(), config, lambda f: np.eye(4))
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", CAM))
    ok = core.on_image(img(2_000_000_000))
    assert ok.state == "tracking" and ok.odom_frame == "map" and not ok.publish_tf
    np.testing.assert_allclose(ok.T_odom_base[:3, 3], [2.0, 0, 0])
    # 25 inliers vs reference 100: variances x4
    np.testing.assert_allclose(np.diag(ok.covariance), [0.04] * 3 + [0.0016] * 3)
    failed = core.on_image(img(3_000_000_000, v=0))
    assert failed.state == "lost" and np.all(np.diag(failed.covariance) > 999)
    np.testing.assert_allclose(failed.T_odom_base[:3, 3], [2.0, 0, 0])   # last good pose kept


def test_localization_covariance_scales_with_inliers():
    c = RelocConfig()
    assert np.allclose(localization_covariance(400, c), localization_covariance(100, c) / 4)
    assert np.all(np.isfinite(localization_covariance(0, c)))


def test_map_to_odom():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    def pose(seed):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        return T

    T_map_base, T_odom_base = pose(1), pose(2)
    np.testing.assert_allclose(map_to_odom(T_map_base, T_odom_base) @ T_odom_base, T_map_base, atol=1e-12)


# ----------------------------------------------------------------------------- the real Localizer
# A real map (ORB keypoints of 12 rendered RGB-D views of the synthetic room, ground-truth poses),
# saved and loaded as the reloc node does, and queries from a different circle (other radius,
# height, pitch, headings between the mapped ones). Known answer: the query's ground-truth pose.
# The localizer alone measures <= 1 cm / 0.25 deg on these queries; the bounds are 3 cm / 1 deg.

POS_TOL_M, ROT_TOL_DEG = 0.03, 1.0
# base_link: x forward = optical z, y left = -optical x, z up = -optical y; camera 0.3 m ahead, 0.5 m up.
T_BASE_CAM = np.array([[0.0, 0.0, 1.0, 0.3], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.5], [0, 0, 0, 1.0]])


class CountingLocalizer:
    """The real Localizer, counting the frames it is handed."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def localize(self, frame):
        self.calls += 1
        return self.inner.localize(frame)


@pytest.fixture(scope="module")
def room_map(tmp_path_factory):
    extractor = create_extractor("orb", max_keypoints=1000)
    map_frames = render_room_frames(room_trajectory(12, radius=0.5, height=1.4))
    repo = build_repository(map_frames, extractor, top_k=300, index_config=IndexConfig(threads=1))
    path = tmp_path_factory.mktemp("map") / "room.kpmap"
    repo.save(path)
    query_poses = room_trajectory(4, radius=0.7, height=1.3, pitch=np.radians(5.0), phase=np.pi / 12 + 0.2,
                                  yaw0=np.radians(5.0))
    queries = render_room_frames(query_poses, first_index=1000)
    # The queries really are elsewhere: >= 0.2 m from every mapped view.
    assert min(np.linalg.norm(q.T_world_cam_gt[:3, 3] - m.T_world_cam_gt[:3, 3])
               for q in queries for m in map_frames) > 0.2
    return path, extractor, queries


def _core(room_map, node_config, config=None, **localizer_config):
    path, extractor, _ = room_map
    localizer = CountingLocalizer(Localizer(Repository.load(path), extractor, LocalizerConfig(**localizer_config)))
    core = make_reloc_core(node_config, localizer, config or RelocConfig(), lambda frame_id: T_BASE_CAM)
    return core, localizer


def _rgb(frame, stamp_ns=None, frame_id="cam"):
    return cv.image_msg(F, frame.stamp_ns if stamp_ns is None else stamp_ns, frame_id, frame.image, "rgb8")


def _close(T_est, T_gt):
    dt, dr = pose_error(T_est, T_gt)
    return dt < POS_TOL_M and dr < ROT_TOL_DEG, (dt, dr)


def test_reloc_core_rgbd_query_gives_its_ground_truth_map_pose(room_map):
    """RGB-D pairs through the node core and the real Localizer (3D-3D RANSAC): the published
    map -> base_link pose is T_base_cam @ T_world_cam_gt @ inv(T_base_cam) of each query."""
    core, localizer = _core(room_map, NodeConfig(mode="rgbd"))
    queries = room_map[2]
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", queries[0].camera))
    for q in queries:
        assert core.on_image(_rgb(q)) is None                      # waits for its depth
        out = core.on_depth(cv.image_msg(F, q.stamp_ns, "cam", q.depth, "32FC1"))
        assert out is not None and out.state == "tracking", out and out.status
        assert out.odom_frame == "map" and out.base_frame == "base_link" and not out.publish_tf
        assert out.result.num_inliers >= 50
        ok, err = _close(out.T_world_cam, q.T_world_cam_gt)
        assert ok, err
        expected = T_BASE_CAM @ q.T_world_cam_gt @ np.linalg.inv(T_BASE_CAM)
        ok, err = _close(out.T_odom_base, expected)
        assert ok, err
        # Independent check of the frame convention: the base sits 0.3 m behind the camera along the
        # camera's optical axis and 0.5 m below it (map z = world "up" seen from the origin's base).
        base_in_world = q.T_world_cam_gt @ np.linalg.inv(T_BASE_CAM)       # the robot's pose in the world
        np.testing.assert_allclose(base_in_world[:3, 3], q.T_world_cam_gt[:3, 3] - 0.3 * q.T_world_cam_gt[:3, 2]
                                   + 0.5 * q.T_world_cam_gt[:3, 1], atol=1e-12)
        np.testing.assert_allclose(out.T_odom_base, T_BASE_CAM @ base_in_world, atol=0.05)
    assert localizer.calls == len(queries) and core.processed == len(queries)


def test_reloc_core_mono_query_pnp_pose_and_inlier_covariance(room_map):
    """Mono images (no depth: RANSAC-PnP) published in the camera frame itself (base_link ""): the
    pose is the ground truth and the covariance the inlier-count heuristic, diag = std^2 * 100 / n."""
    config = RelocConfig(position_std_m=0.05, rotation_std_rad=0.01, reference_inliers=100)
    node = NodeConfig(mode="mono", frames=FramesConfig(base_link=""))
    core, _ = _core(room_map, node, config)
    queries = room_map[2]
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", queries[0].camera))
    for q in queries:
        out = core.on_image(_rgb(q))
        assert out.state == "tracking" and out.base_frame == "cam" and out.odom_frame == "map"
        assert out.result.message == ""
        ok, err = _close(out.T_odom_base, q.T_world_cam_gt)
        assert ok, err
        n = out.num_inliers
        assert n >= 50
        np.testing.assert_allclose(out.covariance, np.diag([0.05 ** 2 * 100 / n] * 3 + [0.01 ** 2 * 100 / n] * 3),
                                   rtol=1e-12, atol=1e-15)


def test_reloc_core_failed_query_is_lost_and_keeps_the_last_map_pose(room_map):
    """A query the map cannot place (a featureless grey image, then a scene the map never saw) is LOST:
    identity before any success, afterwards the last good pose, with failed_variance + the node's lost
    inflation; the next good query is placed again."""
    config = RelocConfig(failed_variance=1000.0)
    node = NodeConfig(mode="mono", frames=FramesConfig(base_link=""), lost_position_variance=100.0,
                      lost_rotation_variance=10.0)
    core, localizer = _core(room_map, node, config)
    queries = room_map[2]
    cam = queries[0].camera
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", cam))
    grey = np.full((cam.height, cam.width, 3), 128, np.uint8)
    lost_cov = np.diag([1100.0] * 3 + [1010.0] * 3)

    first = core.on_image(cv.image_msg(F, 1, "cam", grey, "rgb8"))
    assert first.state == "lost" and "localization failed" in first.status
    np.testing.assert_array_equal(first.T_odom_base, np.eye(4))
    np.testing.assert_allclose(first.covariance, lost_cov)

    good = core.on_image(_rgb(queries[1]))
    assert good.state == "tracking" and _close(good.T_odom_base, queries[1].T_world_cam_gt)[0]

    # Another scene: the random room of seed 7 (other layout and textures) seen from its centre.
    other = render_room_frames(room_trajectory(1, center=(2.0, 2.0), radius=0.3), kind="random_room", seed=7)[0]
    for stamp, image in ((queries[1].stamp_ns + 1, grey), (queries[1].stamp_ns + 2, other.image)):
        out = core.on_image(cv.image_msg(F, stamp, "cam", image, "rgb8"))
        assert out.state == "lost", out.status
        np.testing.assert_array_equal(out.T_odom_base, good.T_odom_base)     # last good pose kept
        np.testing.assert_allclose(out.covariance, lost_cov)
    again = core.on_image(_rgb(queries[2], stamp_ns=queries[1].stamp_ns + 3))
    assert again.state == "tracking" and _close(again.T_odom_base, queries[2].T_world_cam_gt)[0]
    assert localizer.calls == 5
    assert core.diagnostics(now_ns=core._last_image_ns).level == "ok"


def test_reloc_core_bad_messages_never_reach_the_localizer(room_map):
    """Image before camera_info, a camera_info with fx = 0, an unsupported encoding, an image or a
    depth of the wrong size, a repeated or earlier stamp: each dropped and counted, the localizer never
    called, and the following good RGB-D query still gets its ground-truth pose."""
    core, localizer = _core(room_map, NodeConfig(mode="rgbd", approx_sync=False))
    queries = room_map[2]
    q0, q1 = queries[0], queries[1]
    cam = q0.camera
    depth = lambda q, stamp=None, arr=None: cv.image_msg(  # noqa: E731
        F, q.stamp_ns if stamp is None else stamp, "cam", q.depth if arr is None else arr, "32FC1")

    assert core.on_image(_rgb(q0)) is None and core.on_depth(depth(q0)) is None
    assert core.problems["camera_info_missing"] == 1

    bad_info = cv.camera_info_msg(F, 0, "cam", cam)
    bad_info.k = np.zeros(9)
    bad_info.p = np.zeros(12)
    core.on_camera_info(bad_info)
    assert core.camera is None and core.problems["bad_camera_info"] == 1
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", cam))
    assert core.camera == cam

    t = q0.stamp_ns + 10_000_000
    yuv = cv.image_msg(F, t, "cam", q0.image[..., 0], "mono8")
    yuv.encoding = "yuv422"
    assert core.on_image(yuv) is None and core.on_depth(depth(q0, t)) is None
    assert core.problems["bad_encoding"] == 1

    t += 10_000_000
    small = cv.image_msg(F, t, "cam", q0.image[::2, ::2].copy(), "rgb8")
    assert core.on_image(small) is None and core.on_depth(depth(q0, t)) is None
    t += 10_000_000
    assert core.on_image(_rgb(q0, t)) is None and core.on_depth(depth(q0, t, q0.depth[::2, ::2].copy())) is None
    assert core.problems["bad_frame"] == 2
    assert localizer.calls == 0 and core.processed == 0

    t += 10_000_000
    core.on_image(_rgb(q0, t))
    ok = core.on_depth(depth(q0, t))
    assert ok.state == "tracking" and localizer.calls == 1
    assert _close(ok.T_odom_base, T_BASE_CAM @ q0.T_world_cam_gt @ np.linalg.inv(T_BASE_CAM))[0]
    for stamp in (t, t - 500_000_000):                 # repeated, then 0.5 s back (< loop_reset_threshold)
        core.on_image(_rgb(q1, stamp))
        assert core.on_depth(depth(q1, stamp)) is None
    assert core.problems["stamp_order"] == 2 and localizer.calls == 1

    later = core.on_image(_rgb(q1, t + 1)) or core.on_depth(depth(q1, t + 1))
    assert later.state == "tracking" and localizer.calls == 2
    assert _close(later.T_odom_base, T_BASE_CAM @ q1.T_world_cam_gt @ np.linalg.inv(T_BASE_CAM))[0]
    assert core.processed == 2 and core.diagnostics(now_ns=core._last_image_ns).values["dropped_bad_frame"] == 2


def test_map_to_odom_waits_for_tf_without_blocking_and_is_republished():
    from kp_vo.bridge.reloc_core import MapOdomCorrection

    sec = 1_000_000_000
    corr = MapOdomCorrection(RelocConfig(tf_wait=1.0), NodeConfig())
    assert corr.transform(0) is None                         # nothing before the first correction
    T_map_base = np.eye(4)
    T_map_base[:3, 3] = [3.0, 1.0, 0.0]
    corr.add(10 * sec, T_map_base)
    tf = {}                                                  # TF odom -> base_link known so far, by stamp
    assert not corr.resolve(tf.get, 10 * sec)               # the VO has not published 10 s yet: wait
    T_odom_base = np.eye(4)
    T_odom_base[:3, 3] = [1.0, 0.0, 0.0]
    tf[10 * sec] = T_odom_base
    assert corr.resolve(tf.get, 10 * sec + sec // 10)       # the timer's next try finds it
    np.testing.assert_allclose(corr.T_map_odom[:3, 3], [2.0, 1.0, 0.0])
    first, second = corr.transform(11 * sec), corr.transform(11 * sec)
    assert first.parent == "map" and first.child == "odom" and second.stamp_ns > first.stamp_ns == 11 * sec + sec // 10
    corr.add(20 * sec, np.eye(4))                            # never answered: dropped after tf_wait
    assert not corr.resolve(tf.get, 20 * sec + sec // 2)
    assert not corr.resolve(tf.get, 21 * sec + 1) and corr.timed_out == 1
    np.testing.assert_allclose(corr.T_map_odom[:3, 3], [2.0, 1.0, 0.0])   # the last good correction kept
