"""launch_testing: kitti_mono.launch.py playing a bag made by `kp-vo make-bag` publishes /odom.

Runs where ROS 2 with launch_testing is installed and kp_vo is built with colcon (see
.github/workflows/ros2.yml); skips elsewhere.
"""

from __future__ import annotations

import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

launch_testing = pytest.importorskip("launch_testing", reason="ROS 2 launch_testing is not installed here")
pytest.importorskip("launch_ros", reason="ROS 2 launch_ros is not installed here")
rclpy = pytest.importorskip("rclpy", reason="ROS 2 rclpy is not installed here")

import launch  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402

from kp_vo.bridge.make_bag import write_frames_bag  # noqa: E402
from kp_vo.types import CameraIntrinsics, Frame  # noqa: E402


def _synthetic_bag() -> Path:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240, 500), dtype=np.uint8)
    cam = CameraIntrinsics(200.0, 200.0, 159.5, 119.5, 320, 240)
    frames = [Frame(k, 1_000_000_000 + k * 100_000_000, np.ascontiguousarray(base[:, 3 * k: 3 * k + 320]), cam)
              for k in range(30)]
    path = Path(tempfile.mkdtemp(prefix="kp_vo_launch_")) / "bag"
    write_frames_bag(frames, path)
    return path


@pytest.mark.launch_test
def generate_test_description():
    share = Path(get_package_share_directory("kp_vo"))
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(share / "launch" / "kitti_mono.launch.py")),
        launch_arguments={"bag": str(_synthetic_bag()), "rviz": "false"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()])


class TestOdometryPublished(unittest.TestCase):
    def test_odom_arrives(self, proc_output):
        rclpy.init()
        node = rclpy.create_node("kp_vo_launch_probe")
        received = []
        node.create_subscription(Odometry, "/odom", received.append, 10)
        try:
            end = time.monotonic() + 60.0
            while time.monotonic() < end and len(received) < 5:
                rclpy.spin_once(node, timeout_sec=0.1)
        finally:
            node.destroy_node()
            rclpy.shutdown()
        self.assertGreaterEqual(len(received), 5)
        self.assertEqual(received[-1].header.frame_id, "odom")
        self.assertEqual(received[-1].child_frame_id, "base_link")
