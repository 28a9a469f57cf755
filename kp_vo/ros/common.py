"""What both nodes share: parameters as a nested dict, QoS, logging into ROS, the frame worker, spinning.

Like every file in kp_vo/ros/, this imports rclpy and runs only where ROS 2 is installed.
"""

from __future__ import annotations

import logging
from typing import Callable

import message_filters
import rclpy
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from kp_vo.bridge.latest_frame import FrameWorker
from kp_vo.bridge.node_core import NodeConfig, VoNodeCore, VoOutput, unflatten
from kp_vo.errors import KpVoError


def node_parameters(node: Node) -> dict:
    """All kp_vo parameters of ``node`` as a nested dict (dotted ROS names unflattened).

    Only dotted names are ours (every kp_vo parameter lives in a section); undotted ones are
    ROS's own (use_sim_time, start_type_description_service, ...).
    """
    names = node.list_parameters([], 0).names
    flat = {p.name: p.value for p in node.get_parameters(names) if "." in p.name}
    return unflatten(flat)


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


def start_frame_worker(node: Node, core: VoNodeCore, publish: Callable[[VoOutput], None]) -> FrameWorker | None:
    """With ``ros.drop_stale`` (``core`` built with ``latest_only``): start the thread that runs the
    odometry on the newest received input and calls ``publish``; None otherwise. Stop it in
    ``destroy_node``.

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
    """Subscribe ``image`` (mono) or ``image`` + ``depth`` synchronised (rgbd) as ``config`` says.

    RGB-D pairs come from message_filters' ApproximateTimeSynchronizer (``approx_sync``,
    ``sync_slop``, ``queue_size``) or its exact TimeSynchronizer. Returns the synchronizer
    (keep a reference) or None in mono mode.
    """
    qos = qos_profile(config)
    if config.mode != "rgbd":
        node.create_subscription(Image, "image", on_image, qos)
        return None
    subs = [message_filters.Subscriber(node, Image, name, qos_profile=qos) for name in ("image", "depth")]
    if config.approx_sync:
        sync = message_filters.ApproximateTimeSynchronizer(subs, config.queue_size, config.sync_slop)
    else:
        sync = message_filters.TimeSynchronizer(subs, config.queue_size)
    sync.registerCallback(on_rgbd)
    return sync
