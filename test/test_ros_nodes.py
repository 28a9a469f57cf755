"""vo_node under a real rclpy: images in, odom / TF / path / status out, services, bad input.

Runs where ROS 2 (Jazzy) is installed (see .github/workflows/ros2.yml); skips elsewhere.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed here; runs in the ros2 CI workflow")
pytest.importorskip("message_filters", reason="ROS 2 message_filters is not installed")
pytest.importorskip("tf2_ros", reason="ROS 2 tf2_ros is not installed")

from nav_msgs.msg import Odometry, Path  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from tf2_ros import StaticTransformBroadcaster  # noqa: E402

from kp_vo.bridge import conversions as cv  # noqa: E402
from kp_vo.types import CameraIntrinsics  # noqa: E402

CAM = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)


@pytest.fixture()
def ros():
    rclpy.init(args=["--ros-args", "-p", "extractor.name:=orb", "-p", "ros.qos.reliability:=reliable"])
    from kp_vo.ros.vo_node import VoNode

    node = VoNode()
    harness = Node("kp_vo_test_harness")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    executor.add_node(harness)
    yield node, harness, executor
    executor.shutdown()
    node.destroy_node()
    harness.destroy_node()
    rclpy.try_shutdown()


def spin_until(executor, predicate, timeout_s=20.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and not predicate():
        executor.spin_once(timeout_sec=0.05)
    return predicate()


def textured(k):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 400), dtype=np.uint8)
    return np.ascontiguousarray(base[:, 2 * k: 2 * k + 320])   # the camera pans 2 px per frame


def test_vo_node_publishes_and_survives_bad_input(ros):
    node, harness, executor = ros
    f = cv.ros_factory
    static = StaticTransformBroadcaster(harness)
    tf = cv.transform_stamped_msg(f, 0, "base_link", "camera_optical_frame", np.eye(4))
    static.sendTransform(tf)
    image_pub = harness.create_publisher(Image, "image", 10)
    info_pub = harness.create_publisher(CameraInfo, "camera_info", 10)
    got = {"odom": [], "path": [], "status": []}
    harness.create_subscription(Odometry, "odom", got["odom"].append, 10)
    harness.create_subscription(Path, "path", got["path"].append, 10)
    harness.create_subscription(String, "status", got["status"].append, 10)
    spin_until(executor, lambda: image_pub.get_subscription_count() > 0, 5.0)

    stamp = 1_000_000_000
    info = CameraInfo()
    fields = cv.camera_info_fields(CAM)
    info.header = cv.header_msg(f, stamp, "camera_optical_frame")
    info.width, info.height = CAM.width, CAM.height
    info.k = fields["k"].tolist()
    info.p = fields["p"].tolist()
    for k in range(8):
        stamp += 100_000_000
        info.header.stamp = cv.header_msg(f, stamp, "").stamp
        info_pub.publish(info)
        msg = cv.image_msg(f, stamp, "camera_optical_frame", textured(k), "mono8")
        if k == 3:
            msg.encoding = "yuv422"          # logged once, dropped, node keeps running
        image_pub.publish(msg)
        spin_until(executor, lambda: False, 0.2)
    assert spin_until(executor, lambda: len(got["odom"]) >= 6)
    odom = got["odom"][-1]
    assert odom.header.frame_id == "odom" and odom.child_frame_id == "base_link"
    assert len(got["path"][-1].poses) == len(got["odom"])
    assert node.core.problems["bad_encoding"] == 1
    diag = node.core.diagnostics()          # drop_stale (default): a worker thread processed the newest inputs
    assert node.worker is not None and diag.values["frames_received"] == 8 and "processing_rate_hz" in diag.values
    assert got["status"] and got["status"][-1].data.split()[0] in ("initializing", "tracking", "lost")

    client = harness.create_client(Trigger, "/vo_node/reset")
    assert client.wait_for_service(timeout_sec=5.0)
    future = client.call_async(Trigger.Request())
    assert spin_until(executor, future.done)
    assert future.result().success


def test_vo_node_declares_its_parameters_and_refuses_read_only_sets(ros):
    from rcl_interfaces.srv import DescribeParameters, SetParameters
    from rclpy.parameter import Parameter

    node, harness, executor = ros
    describe = harness.create_client(DescribeParameters, "/vo_node/describe_parameters")
    assert describe.wait_for_service(timeout_sec=5.0)
    future = describe.call_async(DescribeParameters.Request(names=["ros.sync_slop", "ros.lost_tf"]))
    assert spin_until(executor, future.done)
    slop, lost_tf = future.result().descriptors
    assert slop.read_only and slop.floating_point_range[0].to_value == 1.0 and "pairing" in slop.description
    assert not lost_tf.read_only and "hold" in lost_tf.additional_constraints

    setter = harness.create_client(SetParameters, "/vo_node/set_parameters")
    assert setter.wait_for_service(timeout_sec=5.0)
    request = SetParameters.Request(parameters=[Parameter("ros.lost_tf", value="hold").to_parameter_msg(),
                                                Parameter("ros.lost_tf", value="drift").to_parameter_msg(),
                                                Parameter("ros.mode", value="rgbd").to_parameter_msg()])
    future = setter.call_async(request)
    assert spin_until(executor, future.done)
    ok, bad_choice, read_only = future.result().results
    assert ok.successful and node.core.config.lost_tf == "hold"
    assert not bad_choice.successful and "none, hold" in bad_choice.reason
    assert not read_only.successful and node.core.config.mode == "mono"


def test_vo_node_set_pose_and_map_to_odom(ros):
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from tf2_msgs.msg import TFMessage

    node, harness, executor = ros
    tf_seen = []
    harness.create_subscription(TFMessage, "/tf", lambda m: tf_seen.extend(m.transforms), 100)
    assert spin_until(executor, lambda: any(t.child_frame_id == "odom" for t in tf_seen), 5.0)  # the map timer
    pub = harness.create_publisher(PoseWithCovarianceStamped, "/vo_node/set_pose", 10)
    T = np.eye(4)
    T[:3, 3] = [1.0, 2.0, 0.0]
    pub.publish(cv.pose_with_covariance_stamped_msg(cv.ros_factory, 0, "odom", T, np.eye(6)))
    bad = cv.pose_with_covariance_stamped_msg(cv.ros_factory, 0, "odom", T, np.eye(6))
    bad.pose.pose.orientation.w = 0.0          # one error line, the node goes on
    pub.publish(bad)
    assert spin_until(executor, lambda: np.allclose(node.core.odom_frames.T_odom_base[:3, 3], [1.0, 2.0, 0.0]), 5.0)
