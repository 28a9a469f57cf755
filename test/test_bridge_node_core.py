"""VoNodeCore driven message by message (rosbags message classes) with a stand-in odometry."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import Throttle, VoNodeCore, camera_to_base
from kp_vo.bridge.node_config import NodeConfig, split_node_parameters
from kp_vo.errors import InvalidInputError
from kp_vo.geometry.se3 import adjoint_translation_first
from kp_vo.settings import nest
from kp_vo.odometry.depth import DepthSource
from kp_vo.odometry.types import TrackingResult, TrackingState
from kp_vo.types import CameraIntrinsics

F = factory()
CAM = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
SEC = 1_000_000_000


class FakeOdometry:
    """Moves 0.1 m along the camera z axis per frame; an all-black image is LOST (prior kept).
    ``depth_source`` as VisualOdometry's: "auto" without a network (metric with RGB-D only)."""

    def __init__(self):
        self.frames, self.resets, self.steps = [], 0, 0
        self.depth_source = DepthSource("auto")

    def process(self, frame):
        frame.validate()
        self.frames.append(frame)
        lost = frame.image.max() == 0
        if not lost:
            self.steps += 1
        T = np.eye(4)
        T[2, 3] = 0.1 * self.steps
        state = TrackingState.LOST if lost else TrackingState.TRACKING
        return TrackingResult(frame.index, frame.stamp_ns, state, T, np.eye(6) * 1e-4,
                              num_matches=50, num_inliers=0 if lost else 40)

    def reset(self):
        self.resets += 1
        self.steps = 0


def image(stamp_ns, value=128, encoding="mono8", shape=(48, 64)):
    arr = np.full(shape, value, np.uint8)
    if encoding == "rgb8":
        arr = np.full(shape + (3,), value, np.uint8)
    return cv.image_msg(F, stamp_ns, "camera_optical_frame", arr, encoding)


def depth(stamp_ns, value=2.0):
    return cv.image_msg(F, stamp_ns, "camera_optical_frame", np.full((48, 64), value, np.float32), "32FC1")


def info(stamp_ns=0, camera=CAM):
    return cv.camera_info_msg(F, stamp_ns, "camera_optical_frame", camera)


def make_core(**kw):
    odo = FakeOdometry()
    core = VoNodeCore(NodeConfig(**kw), odo, lambda frame_id: np.eye(4))
    return core, odo


def test_mono_frames_and_outputs():
    core, odo = make_core()
    core.on_camera_info(info())
    outs = [core.on_image(image(i * SEC // 10), now_ns=i) for i in range(1, 4)]
    assert all(o is not None for o in outs)
    assert [o.stamp_ns for o in outs] == [SEC // 10, 2 * SEC // 10, 3 * SEC // 10]
    np.testing.assert_allclose(outs[-1].T_odom_base[:3, 3], [0, 0, 0.3])
    assert outs[-1].odom_frame == "odom" and outs[-1].base_frame == "base_link"
    assert len(outs[-1].path_poses) == 3 and outs[-1].path_stamps_ns == [o.stamp_ns for o in outs]
    assert outs[-1].status.startswith("tracking")
    assert odo.frames[0].camera == CAM and odo.frames[0].image.shape == (48, 64)


def test_missing_camera_info_waits_with_throttled_warning(caplog):
    core, odo = make_core(warn_period=5.0)
    with caplog.at_level(logging.WARNING):
        for i in range(10):  # 10 images within 1 s of receive time -> one warning
            assert core.on_image(image((i + 1) * SEC // 10), now_ns=i * SEC // 10) is None
    assert sum("camera_info" in r.message for r in caplog.records) == 1
    assert core.problems["camera_info_missing"] == 10 and not odo.frames
    assert core.diagnostics(now_ns=SEC).message == "camera_info missing"
    core.on_camera_info(info())
    assert core.on_image(image(2 * SEC), now_ns=SEC) is not None


def test_zero_K_camera_info_is_logged_and_ignored(caplog):
    core, _ = make_core()
    bad = info()
    bad.k = np.zeros(9)
    bad.p = np.zeros(12)
    with caplog.at_level(logging.WARNING):
        core.on_camera_info(bad)
    assert core.camera is None and core.problems["bad_camera_info"] == 1
    assert any("invalid K" in r.message for r in caplog.records)
    core.on_camera_info(info())
    core.on_camera_info(bad)   # keeps the good one
    assert core.camera == CAM


def test_repeated_and_out_of_order_stamps_are_dropped(caplog):
    core, odo = make_core(loop_reset_threshold=1.0)
    core.on_camera_info(info())
    with caplog.at_level(logging.WARNING):
        assert core.on_image(image(10 * SEC)) is not None
        assert core.on_image(image(10 * SEC)) is None               # repeated
        assert core.on_image(image(10 * SEC - SEC // 2)) is None    # 0.5 s back: out of order
        assert core.on_image(image(11 * SEC)) is not None
    assert core.problems["stamp_order"] == 2 and odo.resets == 0 and len(odo.frames) == 2
    assert sum("repeated" in r.message for r in caplog.records) == 1
    assert sum("before the previous" in r.message for r in caplog.records) == 1


def test_backward_jump_resets_cleanly(caplog):
    core, odo = make_core(loop_reset_threshold=1.0)
    core.on_camera_info(info())
    for i in range(5):
        core.on_image(image(100 * SEC + i * SEC // 10))
    with caplog.at_level(logging.WARNING):
        out = core.on_image(image(100 * SEC))   # the bag looped: 0.4 s back... below threshold
    assert out is None
    with caplog.at_level(logging.WARNING):
        out = core.on_image(image(50 * SEC))    # 50 s back: a loop
    assert out is not None and odo.resets == 1 and core.problems["loop_reset"] == 1
    np.testing.assert_allclose(out.T_odom_base[:3, 3], [0, 0, 0.1])  # trajectory restarted
    assert len(out.path_poses) == 1
    assert any("time jumped back" in r.message for r in caplog.records)


def test_bad_encoding_logged_once_and_node_keeps_running(caplog):
    core, odo = make_core()
    core.on_camera_info(info())
    with caplog.at_level(logging.ERROR):
        for i in range(3):
            bad = image((i + 1) * SEC)
            bad.encoding = "yuv422"
            assert core.on_image(bad) is None
    assert sum("yuv422" in r.message for r in caplog.records) == 1
    assert core.problems["bad_encoding"] == 3
    assert core.on_image(image(5 * SEC)) is not None and len(odo.frames) == 1


def test_empty_and_mismatched_images_are_dropped(caplog):
    core, odo = make_core()
    core.on_camera_info(info())
    empty = image(SEC)
    empty.height, empty.width, empty.step, empty.data = 0, 0, 0, np.zeros(0, np.uint8)
    with caplog.at_level(logging.WARNING):
        assert core.on_image(empty) is None
        assert core.on_image(image(2 * SEC, shape=(40, 64))) is None   # camera_info says 64x48
    assert core.problems["bad_frame"] == 2 and not odo.frames
    assert any("empty image" in r.message for r in caplog.records)
    assert any("camera_info says" in r.message for r in caplog.records)
    assert core.on_image(image(3 * SEC)) is not None   # stamps of dropped frames do not block


def test_rgbd_sync_with_slop_and_nan_depth():
    core, odo = make_core(mode="rgbd", sync_slop=0.02)
    core.on_camera_info(info())
    assert core.on_image(image(SEC, encoding="rgb8")) is None          # waits for depth
    assert core.on_depth(depth(SEC + 50_000_000)) is None              # 50 ms apart: no pair
    out = core.on_depth(depth(SEC + 10_000_000))                       # 10 ms: pairs
    assert out is not None and out.stamp_ns == SEC
    frame = odo.frames[-1]
    assert frame.depth is not None and frame.depth.dtype == np.float32 and frame.image.shape == (48, 64, 3)
    # NaN depth becomes 0 (invalid), never NaN
    nan_depth = depth(2 * SEC, value=np.nan)
    core.on_depth(nan_depth)
    assert core.on_image(image(2 * SEC, encoding="rgb8")) is not None
    assert np.all(odo.frames[-1].depth == 0)
    assert core.problems["invalid_depth"] == 1


def test_rgbd_exact_sync_and_queue_limit():
    core, odo = make_core(mode="rgbd", approx_sync=False, queue_size=2)
    core.on_camera_info(info())
    core.on_image(image(SEC))
    assert core.on_depth(depth(SEC + 1)) is None     # exact sync: 1 ns apart does not pair
    for k in range(3):                               # queue of 2: the oldest depth is dropped
        core.on_depth(depth(3 * SEC + k))
    assert len(core._depths) == 2 and core.problems["sync_dropped"] >= 1
    assert core.on_image(image(3 * SEC + 2)) is not None


def test_tracking_loss_inflates_covariance_and_recovers():
    core, _ = make_core(lost_position_variance=50.0, lost_rotation_variance=5.0)
    core.on_camera_info(info())
    good = core.on_image(image(SEC))
    lost = core.on_image(image(2 * SEC, value=0))
    back = core.on_image(image(3 * SEC))
    assert good.state == "tracking" and lost.state == "lost" and back.state == "tracking"
    np.testing.assert_allclose(np.diag(lost.covariance), [50.0001] * 3 + [5.0001] * 3)
    np.testing.assert_allclose(np.diag(back.covariance), [1e-4] * 6)
    assert core.diagnostics(now_ns=None).level == "ok"
    core.on_image(image(4 * SEC, value=0))
    assert core.diagnostics().message == "lost"


def test_extrinsic_applied_and_waited_for():
    T_base_cam = np.eye(4)
    T_base_cam[:3, :3] = [[0, 0, 1], [-1, 0, 0], [0, -1, 0]]
    T_base_cam[:3, 3] = [0.5, 0.0, 1.2]
    answers = [None, T_base_cam]
    core = VoNodeCore(NodeConfig(), FakeOdometry(), lambda frame_id: answers.pop(0))
    core.on_camera_info(info())
    assert core.on_image(image(SEC)) is None and core.problems["extrinsic_missing"] == 1
    core.on_image(image(2 * SEC))
    out = core.on_image(image(3 * SEC))
    # camera moved 0.2 m along its z axis = base_link's x axis
    np.testing.assert_allclose(out.T_odom_base[:3, 3], [0.2, 0, 0], atol=1e-12)
    np.testing.assert_allclose(out.T_odom_base[:3, :3], np.eye(3), atol=1e-12)


def test_camera_to_base_covariance_matches_sampling():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    T_bc = np.eye(4)
    T_bc[:3, :3] = Rotation.random(random_state=1).as_matrix()
    T_bc[:3, 3] = [0.3, -0.2, 1.0]
    T_wc = np.eye(4)
    T_wc[:3, 3] = [1, 2, 3]
    cov = np.diag([1e-4, 2e-4, 3e-4, 1e-5, 2e-5, 3e-5])
    T_ob, cov_b = camera_to_base(T_wc, cov, T_bc)
    A = adjoint_translation_first(T_bc)
    # the adjoint maps a small camera-frame twist to the base-frame twist of the same motion
    xi = rng.normal(size=6) * 1e-4
    def exp(x):
        T = np.eye(4)
        T[:3, :3] = Rotation.from_rotvec(x[3:]).as_matrix()
        T[:3, 3] = x[:3]
        return T
    lhs = T_bc @ (T_wc @ exp(xi)) @ np.linalg.inv(T_bc)
    rhs = T_ob @ exp(A @ xi)
    np.testing.assert_allclose(lhs, rhs, atol=1e-7)
    np.testing.assert_allclose(cov_b, A @ cov @ A.T)
    assert np.allclose(cov_b, cov_b.T)


def test_throttle():
    t = Throttle(1.0)
    assert t.ready("a", 0) and not t.ready("a", SEC // 2) and t.ready("b", SEC // 2) and t.ready("a", SEC)


def test_parameters_split_and_validation():
    flat = {"ros.mode": "rgbd", "ros.frames.odom": "vo_odom", "ros.sync_slop": 0.05, "extractor.name": "sift"}
    node_config, rest = split_node_parameters(nest(flat, "parameter"))
    assert node_config.mode == "rgbd" and node_config.frames.odom == "vo_odom" and node_config.sync_slop == 0.05
    assert rest == {"extractor": {"name": "sift"}}
    with pytest.raises(InvalidInputError, match="mode"):
        split_node_parameters({"ros": {"mode": "stereo"}})
    with pytest.raises(InvalidInputError, match="unknown config key"):
        split_node_parameters({"ros": {"frmes": {}}})


# ----------------------------------------------------------------------------- issue 19 entries

def test_set_pose_resets_the_odometry_at_the_pose():
    core, odo = make_core()
    core.on_camera_info(info())
    core.on_image(image(SEC))
    core.on_image(image(2 * SEC))
    T = np.eye(4)
    T[:3, 3] = [5.0, -1.0, 0.0]
    msg = cv.pose_with_covariance_stamped_msg(F, 0, "odom", T, np.eye(6))
    assert "reset at (5.000, -1.000, 0.000) in odom" in core.set_pose(msg)
    assert odo.resets == 1
    out = core.on_image(image(3 * SEC))            # the fake restarts at 0.1 m: its first step
    np.testing.assert_allclose(out.T_odom_base[:3, 3], [5.0, -1.0, 0.0])
    out = core.on_image(image(4 * SEC))             # then 0.1 m along the camera z (identity mount)
    np.testing.assert_allclose(out.T_odom_base[:3, 3], [5.0, -1.0, 0.1])
    np.testing.assert_allclose(out.T_map_odom, np.eye(4))
    # in map: odom continues, the correction puts base_link at the pose
    core.set_pose(cv.pose_with_covariance_stamped_msg(F, 0, "map", np.eye(4), np.eye(6)))
    out = core.on_image(image(5 * SEC))
    np.testing.assert_allclose(out.T_odom_base[:3, 3], [5.0, -1.0, 0.1])
    np.testing.assert_allclose(out.T_map_odom @ out.T_odom_base, np.eye(4), atol=1e-12)
    with pytest.raises(InvalidInputError, match="frame 'world'"):
        core.set_pose(cv.pose_with_covariance_stamped_msg(F, 0, "world", np.eye(4), np.eye(6)))


def test_twist_of_the_fake_motion():
    core, _ = make_core()
    core.on_camera_info(info())
    first = core.on_image(image(SEC))
    second = core.on_image(image(SEC + SEC // 5))   # 0.1 m along z (identity mount) in 0.2 s
    assert first.twist is None
    np.testing.assert_allclose(second.twist, [0, 0, 0.5, 0, 0, 0], atol=1e-12)
    # (Ad(T_rel^-1) cov Ad^T + cov) / dt^2: a 0.1 m step along z couples rotation variance into x and y
    np.testing.assert_allclose(np.diag(second.twist_covariance), [(2e-4 + 1e-4 * 0.1 ** 2) / 0.04] * 2
                               + [2e-4 / 0.04] * 4)
    lost = core.on_image(image(2 * SEC, value=0))
    back = core.on_image(image(3 * SEC))
    assert lost.twist is None and back.twist is None   # unknown across a loss


@pytest.mark.parametrize("mode, depth_mode, estimator, metric", [
    ("mono", "auto", False, False), ("mono", "triangulation", True, False), ("mono", "network", True, True),
    ("mono", "auto", True, True), ("rgbd", "auto", False, True), ("rgbd", "sensor", False, True),
    ("mono", "sensor", False, False)])
def test_scale_honesty(mode, depth_mode, estimator, metric):
    from kp_vo.bridge.scale import odometry_scale
    from kp_vo.config import ConfigError

    scale = odometry_scale(mode, depth_mode, estimator)
    assert scale.metric is metric
    core = VoNodeCore(NodeConfig(mode=mode), FakeOdometry(), scale=scale)
    assert core.diagnostics(now_ns=0).values["metric_scale"] == ("true" if metric else "false")
    if metric:
        VoNodeCore(NodeConfig(mode=mode, require_metric=True), FakeOdometry(), scale=scale)
    else:
        with pytest.raises(ConfigError, match="require_metric is true but the odometry has no metric scale"):
            VoNodeCore(NodeConfig(mode=mode, require_metric=True), FakeOdometry(), scale=scale)


def test_compressed_transport_in_the_core(caplog):
    import cv2

    core, odo = make_core(image_transport="compressed")
    core.on_camera_info(info())
    gray = np.random.default_rng(0).integers(1, 255, (48, 64), dtype=np.uint8)
    ok, png = cv2.imencode(".png", gray)
    msg = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, SEC, "camera_optical_frame"),
                                                format="mono8; png compressed mono8", data=png.reshape(-1))
    assert core.on_image(msg) is not None
    np.testing.assert_array_equal(odo.frames[-1].image, gray)
    bad = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, 2 * SEC, "camera_optical_frame"),
                                                format="jpeg", data=np.frombuffer(b"\xff\xd8garbage", np.uint8))
    with caplog.at_level(logging.WARNING):
        assert core.on_image(bad) is None
    assert core.problems["bad_frame"] == 1 and any("does not decode" in r.message for r in caplog.records)
    msg.header.stamp = cv.header_msg(F, 3 * SEC, "").stamp
    assert core.on_image(msg) is not None            # the node goes on


def test_node_config_rejects_unknown_choices():
    for kw in ({"lost_tf": "drift"}, {"image_transport": "theora"}, {"distortion": "ignore"}, {"map_tf_rate": 0.0}):
        with pytest.raises(InvalidInputError, match="ros."):
            NodeConfig(**kw)
