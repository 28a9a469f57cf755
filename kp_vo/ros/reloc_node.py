"""``reloc_node``: localize camera frames against a saved keypoint map (ROS 2 adapter).

Logic: ``kp_vo.bridge.reloc_core`` (the VO node core driven by ``kp_vo.reloc.Localizer``, and
``MapOdomCorrection``). Publishes ``pose`` (geometry_msgs/PoseWithCovarianceStamped, base_link in
map) and, with ``reloc.publish_map_to_odom``, TF map -> odom: each localization is matched with TF
odom -> base_link at its image stamp, asked for without waiting (never a blocking lookup inside a
callback: under a single-threaded executor TF could not arrive while it waits), retried on the
``ros.map_tf_rate`` timer, which also republishes the latest correction. Parameters: declared from
``kp_vo.bridge.parameters`` (``ros.*``, ``reloc.*``, ``extractor.*``: the extractor the map was built
with). ``ros.drop_stale`` works as in vo_node: a worker thread localizes the newest input.
"""

from __future__ import annotations

from geometry_msgs.msg import PoseWithCovarianceStamped
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo
from std_srvs.srv import Trigger
from tf2_ros import Buffer, TransformBroadcaster, TransformException, TransformListener

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.node_core import VoOutput
from kp_vo.bridge.node_config import split_node_parameters
from kp_vo.bridge.parameters import node_specs
from kp_vo.bridge.reloc_core import MapOdomCorrection, RelocConfig, make_reloc_core
from kp_vo.errors import KpVoError
from kp_vo.odometry.types import TrackingState
from kp_vo.ros.common import (
    FrameWorkerNode,
    accept_parameter_changes,
    declare_node_parameters,
    forward_logs,
    qos_profile,
    send_map_tf,
    spin,
    start_frame_worker,
    subscribe_images,
)


class RelocNode(FrameWorkerNode):
    def __init__(self) -> None:
        super().__init__("reloc_node")
        forward_logs(self)
        from kp_vo.config import load_config
        from kp_vo.pipeline import PipelineConfig, build_extractor
        from kp_vo.reloc.localizer import Localizer, LocalizerConfig
        from kp_vo.reloc.repository import Repository

        specs = node_specs("reloc_node")
        self.config, params = split_node_parameters(declare_node_parameters(self, specs))
        self.reloc_config = load_config(RelocConfig, params.pop("reloc", {}) or {})
        pipeline = load_config(PipelineConfig, params)
        if not self.reloc_config.map_path:
            raise KpVoError("parameter reloc.map_path is empty")
        extractor = build_extractor(pipeline.extractor)
        self.repository = Repository.load(self.reloc_config.map_path)
        localizer = Localizer(self.repository, extractor, load_config(LocalizerConfig, self.reloc_config.localizer))
        self.core = make_reloc_core(self.config, localizer, self.reloc_config, self._lookup_extrinsic,
                                    latest_only=self.config.drop_stale, clock=self._now_ns)
        accept_parameter_changes(self, self.core, specs)
        self.correction = MapOdomCorrection(self.reloc_config, self.config)
        self.tf_buffer = Buffer()
        self.tf_listener = TransformListener(self.tf_buffer, self)
        self.tf_broadcaster = TransformBroadcaster(self)

        qos = qos_profile(self.config)
        self.create_subscription(CameraInfo, "camera_info", self.core.on_camera_info, qos)
        self.sync = subscribe_images(self, self.config, lambda msg: self._publish(self.core.on_image(msg)),
                                     lambda image, depth: self._publish(self.core.on_pair(image, depth)))
        self.pose_pub = self.create_publisher(PoseWithCovarianceStamped, "pose", 10)
        self.create_service(Trigger, "~/reset", self._on_reset)
        if self.reloc_config.publish_map_to_odom:
            self.create_timer(1.0 / self.config.map_tf_rate, self._on_map_tf_timer)
        self.worker = start_frame_worker(self, self.core, self._publish)
        self.get_logger().info(f"reloc_node ready: {self.repository!r}")

    def _lookup(self, parent: str, child: str, stamp: Time):
        """TF ``parent -> child`` at ``stamp`` as the buffer holds it now (no timeout: never waits)."""
        try:
            t = self.tf_buffer.lookup_transform(parent, child, stamp)
        except TransformException:
            return None
        return cv.transform_msg_to_pose(t.transform)

    def _lookup_extrinsic(self, camera_frame: str):
        return self._lookup(self.config.frames.base_link, camera_frame, Time())

    def _odom_base_at(self, stamp_ns: int):
        return self._lookup(self.config.frames.odom, self.config.frames.base_link, Time(nanoseconds=stamp_ns))

    def _publish(self, out: VoOutput | None) -> None:
        if out is None or out.state != TrackingState.TRACKING:
            return
        self.pose_pub.publish(cv.pose_with_covariance_stamped_msg(cv.ros_factory, out.stamp_ns, out.odom_frame,
                                                                  out.T_odom_base, out.covariance))
        if self.reloc_config.publish_map_to_odom:
            self.correction.add(out.stamp_ns, out.T_odom_base)
            if self.correction.resolve(self._odom_base_at, self._now_ns()):
                send_map_tf(self.tf_broadcaster, self.correction.transform(self._now_ns()))

    def _on_map_tf_timer(self) -> None:
        now_ns = self._now_ns()
        self.correction.resolve(self._odom_base_at, now_ns)
        send_map_tf(self.tf_broadcaster, self.correction.transform(now_ns))

    def _on_reset(self, request, response):
        self.core.reset("~/reset service")
        response.success, response.message = True, "relocalization reset"
        return response


def main(args=None) -> None:
    spin("reloc_node", RelocNode, args)


if __name__ == "__main__":
    main()
