"""What both nodes share: their base class (the node clock, the frame worker stopped with the node),
declared parameters, QoS, image subscriptions, logging into ROS, the frame worker, the map -> odom
broadcast, spinning.

Like every file in kp_vo/ros/, this imports rclpy and runs only where ROS 2 is installed.
"""

from __future__ import annotations

import logging
from typing import Callable

import message_filters
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.latest_frame import FrameWorker
from kp_vo.bridge.node_core import MapTransform, VoNodeCore, VoOutput
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.parameters import ParamSpec, apply_changes, is_free_form, unknown_overrides
from kp_vo.config import ConfigError
from kp_vo.errors import KpVoError
from kp_vo.settings import nest

_ROS_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
              float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type], description=spec.description,
                                     read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None and spec.type is float:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                              to_value=float(spec.range[1]), step=0.0)]
    if spec.range is not None and spec.type is int:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=0)]
    return descriptor


def declare_node_parameters(node: Node, specs: list[ParamSpec]) -> dict:
    """Declare every spec with its ParameterDescriptor (``ros2 param describe`` shows them) and the
    free-form option overrides read-only; return all of them as a nested dict (dotted names unflattened).

    Raises ConfigError (one line) for an override that names no parameter, has the wrong type or is
    out of range.
    """
    # rclpy has no public accessor of the overrides (rclcpp: NodeOptions::parameter_overrides); this dict
    # is what automatically_declare_parameters_from_overrides reads too.
    overrides = dict(node._parameter_overrides)
    unknown = unknown_overrides(list(overrides), specs)
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)}; see kp_vo/ros/README.md")
    flat = {}
    for spec in specs:
        try:
            flat[spec.name] = node.declare_parameter(spec.name, spec.default, _descriptor(spec)).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
            raise ConfigError(f"parameter {spec.name}: {exc}") from None
    for name, parameter in overrides.items():
        if is_free_form(name):
            descriptor = ParameterDescriptor(name=name, description="option of the factory / config named by its "
                                             "section (kp_vo/ros/README.md)", read_only=True, dynamic_typing=True)
            flat[name] = node.declare_parameter(name, parameter.value, descriptor).value
    return nest(flat, "parameter")


def accept_parameter_changes(node: Node, core: VoNodeCore, specs: list[ParamSpec]) -> None:
    """Apply ``ros2 param set`` of run-time parameters to ``core``; refuse any other with the reason
    (``kp_vo.bridge.parameters.apply_changes``). Call after ``declare_node_parameters``."""

    def on_set(parameters) -> SetParametersResult:
        try:
            config = apply_changes(core.config, specs, {p.name: p.value for p in parameters})
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        core.reconfigure(config)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


def send_map_tf(broadcaster, transform: MapTransform | None) -> None:
    """Broadcast a map -> odom from ``VoNodeCore.map_tf`` / ``MapOdomCorrection.transform`` (None: nothing)."""
    if transform is not None:
        broadcaster.sendTransform(cv.transform_stamped_msg(cv.ros_factory, transform.stamp_ns, transform.parent,
                                                           transform.child, transform.T_parent_child))


def qos_profile(config: NodeConfig) -> QoSProfile:
    reliability = ReliabilityPolicy.BEST_EFFORT if config.qos.reliability == "best_effort" else ReliabilityPolicy.RELIABLE
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=config.qos.depth, reliability=reliability)


class RosLogHandler(logging.Handler):
    """Forward the core's Python logging to the node's ROS logger (one line per record)."""

    def __init__(self, node: Node):
        super().__init__()
        self.ros_logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.info(text)


def spin(name: str, make_node: Callable[[], Node], args=None) -> None:
    """Start rclpy, build the node (a KpVoError at start-up exits with code 2 and one fatal line), spin."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except KpVoError as exc:
        get_logger(name).fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        raise SystemExit(2) from None
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


def forward_logs(node: Node) -> None:
    """Send the kp_vo library's log records (INFO and up) to ``node``'s ROS logger."""
    logging.getLogger("kp_vo").addHandler(RosLogHandler(node))
    logging.getLogger("kp_vo").setLevel(logging.INFO)


def answer_trigger(response, action: Callable[[], str]):
    """Fill a std_srvs/Trigger response from ``action()``: its status line, or the KpVoError's one line."""
    try:
        response.success, response.message = True, action()
    except KpVoError as exc:
        response.success, response.message = False, str(exc)
    return response


class FrameWorkerNode(Node):
    """The base of both nodes: ``_now_ns``, the clock their core reads, and a ``destroy_node`` that
    stops ``worker`` (set from ``start_frame_worker`` in the subclass's constructor)."""

    worker: FrameWorker | None = None

    def _now_ns(self) -> int:
        """The node's clock (ROS time under ``use_sim_time``) in nanoseconds."""
        return self.get_clock().now().nanoseconds

    def destroy_node(self) -> None:
        """Stop the frame worker (the frame in progress finishes) before the node goes."""
        if self.worker is not None:
            self.worker.stop()
        super().destroy_node()


def start_frame_worker(node: Node, core: VoNodeCore, publish: Callable[[VoOutput], None]) -> FrameWorker | None:
    """With ``ros.drop_stale`` (``core`` built with ``latest_only``): start the thread that runs the
    odometry on the newest received input and calls ``publish``; None otherwise.
    ``FrameWorkerNode.destroy_node`` stops it.

    A thread of its own rather than a timer in a MutuallyExclusiveCallbackGroup under a
    MultiThreadedExecutor: it wakes as soon as an input arrives (no timer period added to the
    latency), works under whatever executor spins the node (``rclpy.spin``, the tests'
    SingleThreadedExecutor), and never occupies an executor thread, so subscriptions, TF,
    services and diagnostics stay responsive while a frame is processed.
    """
    if not core.latest_only:
        return None
    worker = FrameWorker(core, publish, name=f"{node.get_name()}_frames")
    worker.start()
    return worker


def subscribe_images(node: Node, config: NodeConfig, on_image: Callable, on_rgbd: Callable):
    """Subscribe ``image`` (mono) or ``image`` + ``depth`` synchronised (rgbd) as ``config`` says; with
    ``image_transport: compressed`` the image is sensor_msgs/CompressedImage on ``image/compressed``.

    RGB-D pairs come from message_filters' ApproximateTimeSynchronizer (``approx_sync``,
    ``sync_slop``, ``queue_size``) or its exact TimeSynchronizer. Returns the synchronizer
    (keep a reference) or None in mono mode.
    """
    qos = qos_profile(config)
    image_type, image_topic = (CompressedImage, "image/compressed") if config.image_transport == "compressed" \
        else (Image, "image")
    if config.mode != "rgbd":
        node.create_subscription(image_type, image_topic, on_image, qos)
        return None
    subs = [message_filters.Subscriber(node, image_type, image_topic, qos_profile=qos),
            message_filters.Subscriber(node, Image, "depth", qos_profile=qos)]
    if config.approx_sync:
        sync = message_filters.ApproximateTimeSynchronizer(subs, config.queue_size, config.sync_slop)
    else:
        sync = message_filters.TimeSynchronizer(subs, config.queue_size)
    sync.registerCallback(on_rgbd)
    return sync
