"""``reloc_node``: localize camera frames against a saved keypoint map (ROS 2 adapter).

Logic: ``kp_vo.bridge.reloc_core`` (the VO node core driven by ``kp_vo.reloc.Localizer``).
Publishes ``pose`` (geometry_msgs/PoseWithCovarianceStamped, base_link in map) and, with
``reloc.publish_map_to_odom``, TF map -> odom computed from TF odom -> base_link at the
image stamp. Parameters: ``ros.*`` (NodeConfig), ``reloc.*`` (RelocConfig), the rest is the
pipeline config (its extractor must be the one the map was built with). ``ros.drop_stale``
works as in vo_node: a worker thread localizes the newest input.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import Trigger
from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.node_core import VoOutput, split_node_parameters
from kp_vo.bridge.reloc_core import RelocConfig, make_reloc_core, map_to_odom
from kp_vo.errors import KpVoError
from kp_vo.ros.common import (
    forward_logs,
    node_parameters,
    qos_profile,
    spin,
    start_frame_worker,
    subscribe_images,
)


class RelocNode(Node):
    def __init__(self) -> None:
        super().__init__("reloc_node", automatically_declare_parameters_from_overrides=True)
        forward_logs(self)
        from kp_vo.config import load_config
        from kp_vo.pipeline import PipelineConfig, build_extractor
        from kp_vo.reloc.localizer import Localizer, LocalizerConfig
        from kp_vo.reloc.repository import Repository

        self.config, params = split_node_parameters(node_parameters(self))
        self.reloc_config = load_config(RelocConfig, params.pop("reloc", {}) or {})
        pipeline = load_config(PipelineConfig, params)
        if not self.reloc_config.map_path:
            raise KpVoError("parameter reloc.map_path is empty")
        extractor = build_extractor(pipeline.extractor)
        self.repository = Repository.load(self.reloc_config.map_path)
        localizer = Localizer(self.repository, extractor, load_config(LocalizerConfig, self.reloc_config.localizer))
        self.core = make_reloc_core(self.config, localizer, self.reloc_config, self._lookup_extrinsic,
                                    latest_only=self.config.drop_stale)
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)
        self.tf_broadcaster = TransformBroadcaster(self)

        qos = qos_profile(self.config)
        self.create_subscription(CameraInfo, "camera_info", self.core.on_camera_info, qos)
        self.sync = subscribe_images(self, self.config, lambda msg: self._publish(self.core.on_image(msg)),
                                     lambda image, depth: self._publish(self.core.on_pair(image, depth)))
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.worker = start_frame_worker(self, self.core, self._publish)
        self.get_logger().info(f"reloc_node ready: {self.repository!r}")

    def destroy_node(self) -> None:
        """Stop the frame worker (the frame in progress finishes) before the node goes."""
        if self.worker is not None:
            self.worker.stop()
        super().destroy_node()

    def _lookup(self, parent: str, child: str, stamp: Time):
        try:
            t = self.tf_buffer.lookup_transform(parent, child, stamp, timeout=Duration(seconds=0.05))
        except TransformException:
            return None
        return cv.transform_msg_to_pose(t.transform)

    def _lookup_extrinsic(self, camera_frame: str):
        return self._lookup(self.config.frames.base_link, camera_frame, Time())

    def _publish(self, out: VoOutput | None) -> None:
        if out is None or out.state != "tracking":
            return
        f = cv.ros_factory
        self.pose_pub.publish(cv.pose_with_covariance_stamped_msg(f, out.stamp_ns, out.odom_frame, out.T_odom_base,
                                                                  out.covariance))
        if self.reloc_config.publish_map_to_odom:
            frames = self.config.frames
            T_odom_base = self._lookup(frames.odom, frames.base_link, Time(nanoseconds=out.stamp_ns))
            if T_odom_base is None:
                self.get_logger().warning(f"no TF {frames.odom} -> {frames.base_link}: map -> odom not published",
                                          throttle_duration_sec=5.0)
                return
            self.tf_broadcaster.sendTransform(cv.transform_stamped_msg(
                f, out.stamp_ns, frames.map, frames.odom, map_to_odom(out.T_odom_base, T_odom_base)))

    def _on_reset(self, request, response):
        self.core.reset("~/reset service")
        response.success, response.message = True, "relocalization reset"
        return response


def main(args=None) -> None:
    spin("reloc_node", RelocNode, args)


if __name__ == "__main__":
    main()
