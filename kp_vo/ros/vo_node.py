"""``vo_node``: the ROS 2 adapter of the visual odometry (convert, call the core, publish).

All logic lives in ``kp_vo.bridge.node_core.VoNodeCore`` (tested without ROS). This file only
wires ROS: declared parameters (``kp_vo.bridge.parameters``), subscriptions (message_filters for
RGB-D, raw or compressed images, ``~/set_pose``), the TF lookup of base_link -> camera (never
waiting), publishers, services, the diagnostics timer and the map -> odom timer. With
``ros.drop_stale`` (default) the subscription callbacks only hand the input to the core's one-slot
holder and a worker thread (``kp_vo.ros.common.start_frame_worker``) runs the odometry on the
newest one and publishes; otherwise the callbacks process every message. See kp_vo/ros/README.md.
"""

from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseWithCovarianceStamped
from nav_msgs.msg import Odometry, Path
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String
from std_srvs.srv import Trigger
from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.debug_image import draw_debug_image
from kp_vo.bridge.node_core import VoNodeCore, VoOutput
from kp_vo.bridge.node_config import split_node_parameters
from kp_vo.bridge.parameters import node_specs
from kp_vo.bridge.scale import odometry_scale
from kp_vo.errors import KpVoError
from kp_vo.ros.common import (
    FrameWorkerNode,
    accept_parameter_changes,
    answer_trigger,
    declare_node_parameters,
    forward_logs,
    qos_profile,
    send_map_tf,
    spin,
    start_frame_worker,
    subscribe_images,
)


class VoNode(FrameWorkerNode):
    def __init__(self) -> None:
        super().__init__("vo_node")
        forward_logs(self)
        from kp_vo.config import load_config
        from kp_vo.pipeline import PipelineConfig, build_odometry

        specs = node_specs("vo_node")
        config, pipeline_params = split_node_parameters(declare_node_parameters(self, specs))
        self.pipeline_config = load_config(PipelineConfig, pipeline_params)
        self.odometry = build_odometry(self.pipeline_config)
        source = self.odometry.depth_source
        scale = odometry_scale(config.mode, source.mode, source.estimator is not None)
        self.core = VoNodeCore(config, self.odometry, self._lookup_extrinsic, clock=self._now_ns,
                               latest_only=config.drop_stale, scale=scale)
        accept_parameter_changes(self, self.core, specs)
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)
        self.tf_broadcaster = TransformBroadcaster(self)

        qos = qos_profile(config)
        self.create_subscription(CameraInfo, "camera_info", self.core.on_camera_info, qos)
        self.sync = subscribe_images(self, config, self._on_image, self._on_rgbd)
        self.create_subscription(PoseWithCovarianceStamped, "~/set_pose", self._on_set_pose, 10)

        self.odom_pub = self.create_publisher(Odometry, "odom", 10)
        self.path_pub = self.create_publisher(Path, "path", 10)
        self.status_pub = self.create_publisher(String, "status", 10)
        self.debug_pub = self.create_publisher(Image, "debug_image", 1)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        self.create_service(Trigger, "~/save_map", self._on_save_map)
        self.create_service(Trigger, "~/load_map", self._on_load_map)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(1.0 / config.map_tf_rate, lambda: send_map_tf(self.tf_broadcaster, self.core.map_tf()))
        self.worker = start_frame_worker(self, self.core, self._publish)
        self.get_logger().info(f"vo_node ready: mode {config.mode}, extractor {self.pipeline_config.extractor.name}"
                               f", drop_stale {config.drop_stale}, metric scale {scale.metric} ({scale.source})")

    # ------------------------------------------------------------------ callbacks
    def _on_image(self, msg) -> None:
        self._publish(self.core.on_image(msg))   # None with drop_stale: the worker publishes

    def _on_rgbd(self, image, depth: Image) -> None:
        self._publish(self.core.on_pair(image, depth))

    def _on_set_pose(self, msg: PoseWithCovarianceStamped) -> None:
        try:
            self.get_logger().info(self.core.set_pose(msg))
        except KpVoError as exc:
            self.get_logger().error(f"~/set_pose ignored: {exc}")

    def _lookup_extrinsic(self, camera_frame: str):
        """base_link -> camera from TF as it is now (no waiting: the core retries on the next frame)."""
        try:
            t = self.tf_buffer.lookup_transform(self.core.config.frames.base_link, camera_frame, Time())
        except TransformException:
            return None
        return cv.transform_msg_to_pose(t.transform)

    def _publish(self, out: VoOutput | None) -> None:
        if out is None:
            return
        f = cv.ros_factory
        self.odom_pub.publish(cv.odometry_msg(f, out.stamp_ns, out.odom_frame, out.base_frame, out.T_odom_base,
                                              out.covariance, out.twist, out.twist_covariance))
        if out.publish_tf:
            self.tf_broadcaster.sendTransform(
                cv.transform_stamped_msg(f, out.stamp_ns, out.odom_frame, out.base_frame, out.T_odom_base))
        send_map_tf(self.tf_broadcaster, self.core.map_tf(only_if_changed=True))
        self.path_pub.publish(cv.path_msg(f, out.odom_frame, out.path_stamps_ns, out.path_poses))
        self.status_pub.publish(String(data=out.status))
        if self.debug_pub.get_subscription_count() > 0 and out.frame is not None:
            debug = draw_debug_image(out.frame.image, out.result)
            self.debug_pub.publish(cv.image_msg(f, out.stamp_ns, out.camera_frame, debug, "rgb8"))

    def _publish_diagnostics(self) -> None:
        now_ns = self._now_ns()
        d = self.core.diagnostics(now_ns)
        self.diag_pub.publish(cv.diagnostic_array_msg(cv.ros_factory, now_ns, "kp_vo: visual odometry",
                                                      self.get_name(), d.level, d.message, d.values))

    # ------------------------------------------------------------------ services
    def _on_reset(self, request, response):
        self.core.reset("~/reset service")
        response.success, response.message = True, "odometry reset"
        return response

    def _on_save_map(self, request, response):
        return answer_trigger(response, lambda: self.core.save_map(self.core.config.map_path))

    def _on_load_map(self, request, response):
        return answer_trigger(response, lambda: self.core.load_map(self.core.config.map_path))


def main(args=None) -> None:
    spin("vo_node", VoNode, args)


if __name__ == "__main__":
    main()
