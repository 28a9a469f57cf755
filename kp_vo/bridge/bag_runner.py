"""``kp-vo bag``: the VO node core over a recorded bag, without ROS.

Messages are fed to ``VoNodeCore`` in log-time order, exactly as a node would receive them
from ``ros2 bag play``; the extrinsic base_link -> camera comes from the bag's /tf_static
(identity with a warning when absent). Every output is written into a new rosbag2:

    /odom (nav_msgs/Odometry), /tf (odom -> base_link, and map -> odom as the node's timer sends it:
    every 1 / ``ros.map_tf_rate`` s of log time and after each frame that changed it), /path
    (nav_msgs/Path), /vo/status (std_msgs/String), /diagnostics (diagnostic_msgs/DiagnosticArray)

The run is also returned as ``RunSegment``s (one per stretch between resets, e.g. bag loops)
holding the camera poses, so the files of ``kp-vo run`` can be written from them.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import BagWriter, bag_topics, read_messages
from kp_vo.bridge.node_core import VoNodeCore, VoOutput
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.scale import odometry_scale
from kp_vo.errors import DatasetError, InvalidInputError

logger = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
INFO = "sensor_msgs/msg/CameraInfo"
ROS1_IMAGE = "sensor_msgs/Image"  # AnyReader normalises ROS 1 names, kept for safety
STATUS_TOPIC = "/vo/status"


@dataclass
class InputTopics:
    image: str
    camera_info: str
    depth: str | None = None


@dataclass
class RunSegment:
    """Camera poses of one stretch of the run between odometry resets."""

    frame_indices: list = field(default_factory=list)
    stamps_ns: list = field(default_factory=list)
    T_world_cam: list = field(default_factory=list)
    states: list = field(default_factory=list)
    T_world_cam_gt: list = field(default_factory=list)   # (4, 4) or None per frame
    timings: list = field(default_factory=list)


@dataclass
class BagRunSummary:
    segments: list
    problems: dict
    frames_processed: int
    output_bag: Path
    topics: InputTopics


def choose_topics(topics: dict[str, str], image: str | None = None, depth: str | None = None,
                  camera_info: str | None = None, mono: bool = False, compressed: bool = False) -> InputTopics:
    """Pick the input topics of a bag: given names win; otherwise the only Image (``compressed``:
    CompressedImage) topic without "depth" in its name, the Image topic with it (RGB-D unless
    ``mono``), and the CameraInfo topic sharing the longest prefix with the image topic."""
    images = [t for t, m in topics.items() if m in (IMAGE, ROS1_IMAGE)]
    colours = [t for t, m in topics.items() if m in ((COMPRESSED, "sensor_msgs/CompressedImage") if compressed
                                                      else (IMAGE, ROS1_IMAGE))]
    infos = [t for t, m in topics.items() if m in (INFO, "sensor_msgs/CameraInfo")]
    for name, kind in ((image, "image"), (depth, "depth"), (camera_info, "camera_info")):
        if name is not None and name not in topics:
            raise DatasetError(f"{kind} topic {name} is not in the bag (topics: {', '.join(sorted(topics))})")
    if image is None:
        colour = [t for t in colours if "depth" not in t.lower()]
        if len(colour) != 1:
            raise DatasetError(f"cannot choose the image topic among {colour or colours or images}; "
                               "pass --image-topic")
        image = colour[0]
    if depth is None and not mono:
        depths = [t for t in images if "depth" in t.lower()]
        depth = depths[0] if len(depths) == 1 else None
    if mono:
        depth = None
    if camera_info is None:
        if not infos:
            raise DatasetError("the bag has no sensor_msgs/CameraInfo topic; pass --camera-info-topic")
        camera_info = max(infos, key=lambda t: len(_common_prefix(t, image)))
    return InputTopics(image, camera_info, depth)


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def static_transforms(path: str | Path) -> dict[tuple[str, str], np.ndarray]:
    """{(parent, child): T_parent_child} of every /tf_static transform in the bag; DatasetError (one line)
    for a transform that is not one (a zero or NaN quaternion): the extrinsic of every frame depends on it."""
    edges = {}
    for _, _, _, msg in read_messages(path, ["/tf_static"]):
        for t in msg.transforms:
            try:
                edges[(t.header.frame_id, t.child_frame_id)] = cv.transform_msg_to_pose(t.transform)
            except InvalidInputError as exc:
                raise DatasetError(f"{path}: /tf_static {t.header.frame_id} -> {t.child_frame_id}: {exc}") from None
    return edges


def chain_transform(edges: dict[tuple[str, str], np.ndarray], parent: str, child: str) -> np.ndarray | None:
    """T_parent_child through a chain of static transforms (either direction), or None."""
    graph = collections.defaultdict(list)
    for (a, b), T in edges.items():
        graph[a].append((b, T))
        graph[b].append((a, np.linalg.inv(T)))
    queue, seen = collections.deque([(parent, np.eye(4))]), {parent}
    while queue:
        frame, T = queue.popleft()
        if frame == child:
            return T
        for nxt, T_step in graph[frame]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, T @ T_step))
    return None


def ground_truth_by_stamp(path: str | Path, topic: str = "/ground_truth") -> dict[int, np.ndarray]:
    """{stamp_ns: T_world_cam} from a geometry_msgs/PoseStamped ground-truth topic (make-bag)."""
    return {cv.stamp_to_ns(m.header.stamp): cv.pose_msg_to_pose(m.pose)
            for _, _, _, m in read_messages(path, [topic])}


class _OutputWriter:
    """Turns VoOutputs into messages in the output bag."""

    def __init__(self, bag: BagWriter, core: VoNodeCore):
        self.bag, self.core, self.f = bag, core, bag.factory

    def write(self, out: VoOutput, log_time_ns: int) -> None:
        f, t = self.f, out.stamp_ns
        self.bag.write("/odom", cv.odometry_msg(f, t, out.odom_frame, out.base_frame, out.T_odom_base,
                                                out.covariance, out.twist, out.twist_covariance), log_time_ns)
        if out.publish_tf:
            tf = cv.transform_stamped_msg(f, t, out.odom_frame, out.base_frame, out.T_odom_base)
            self.bag.write("/tf", cv.tf_message(f, [tf]), log_time_ns)
        self.write_map_tf(log_time_ns, only_if_changed=True)
        self.bag.write("/path", cv.path_msg(f, out.odom_frame, out.path_stamps_ns, out.path_poses), log_time_ns)
        self.bag.write(STATUS_TOPIC, cv.string_msg(f, out.status), log_time_ns)
        diag = self.core.diagnostics(log_time_ns)
        self.bag.write("/diagnostics", cv.diagnostic_array_msg(f, t, "kp_vo: visual odometry", "kp_vo",
                                                               diag.level, diag.message, diag.values), log_time_ns)

    def write_map_tf(self, log_time_ns: int, only_if_changed: bool = False) -> None:
        """map -> odom as the node broadcasts it at ``log_time_ns`` (``VoNodeCore.map_tf``)."""
        mt = self.core.map_tf(log_time_ns, only_if_changed)
        if mt is not None:
            tf = cv.transform_stamped_msg(self.f, mt.stamp_ns, mt.parent, mt.child, mt.T_parent_child)
            self.bag.write("/tf", cv.tf_message(self.f, [tf]), log_time_ns)


def run_bag(bag_path: str | Path, output_bag: str | Path, odometry: Any, node_config: NodeConfig | None = None,
            image_topic: str | None = None, depth_topic: str | None = None, camera_info_topic: str | None = None,
            mono: bool = False, storage: str = "sqlite3") -> BagRunSummary:
    """Run ``odometry`` (process/reset, and ``depth_source``, a kp_vo.odometry.depth.DepthSource: the scale)
    through ``VoNodeCore`` over ``bag_path``; write ``output_bag``. Raises ConfigError when
    ``ros.require_metric`` is set and the odometry is not metric."""
    bag_path = Path(bag_path)
    config = node_config or NodeConfig()
    topics = choose_topics(bag_topics(bag_path), image_topic, depth_topic, camera_info_topic, mono,
                           compressed=config.image_transport == "compressed")
    if config.mode != ("rgbd" if topics.depth else "mono"):
        from dataclasses import replace
        config = replace(config, mode="rgbd" if topics.depth else "mono")
    logger.info("bag %s: image %s, depth %s, camera_info %s (%s mode)", bag_path, topics.image, topics.depth,
                topics.camera_info, config.mode)
    edges = static_transforms(bag_path)
    warned = []

    def lookup(camera_frame: str) -> np.ndarray:
        T = chain_transform(edges, config.frames.base_link, camera_frame)
        if T is None:
            if not warned:
                logger.warning("no /tf_static from %s to %s in the bag: using the identity",
                               config.frames.base_link, camera_frame)
                warned.append(True)
            T = np.eye(4)
        return T

    depth_source = odometry.depth_source
    scale = odometry_scale(config.mode, depth_source.mode, depth_source.estimator is not None)
    core = VoNodeCore(config, odometry, lookup, scale=scale)
    gt = ground_truth_by_stamp(bag_path) if "/ground_truth" in bag_topics(bag_path) else {}
    segments = [RunSegment()]
    wanted = [t for t in (topics.image, topics.depth, topics.camera_info) if t]
    tick_ns = int(1e9 / config.map_tf_rate)
    next_tick: int | None = None
    with BagWriter(output_bag, storage=storage) as bag:
        writer = _OutputWriter(bag, core)
        for topic, _, log_time, msg in read_messages(bag_path, wanted):
            if next_tick is None or log_time < next_tick - tick_ns:   # the first message, or time went back
                next_tick = log_time
            while next_tick <= log_time:                              # the node's map -> odom timer
                writer.write_map_tf(next_tick)
                next_tick += tick_ns
            if topic == topics.camera_info:
                core.on_camera_info(msg, log_time)
                continue
            resets = core.problems["loop_reset"]
            out = core.on_image(msg, log_time) if topic == topics.image else core.on_depth(msg, log_time)
            if core.problems["loop_reset"] != resets and segments[-1].stamps_ns:
                segments.append(RunSegment())
            if out is None:
                continue
            writer.write(out, log_time)
            seg = segments[-1]
            seg.frame_indices.append(out.frame_index)
            seg.stamps_ns.append(out.stamp_ns)
            seg.T_world_cam.append(out.T_world_cam)
            seg.states.append(out.state)
            seg.T_world_cam_gt.append(gt.get(out.stamp_ns))
            seg.timings.append(dict(getattr(out.result, "timings", {}) or {}))
    segments = [s for s in segments if s.stamps_ns]
    if core.processed == 0:
        logger.warning("no frame of %s was processed", bag_path)
    if core.problems:
        logger.info("problems seen: %s", dict(core.problems))
    return BagRunSummary(segments, dict(core.problems), core.processed, Path(output_bag), topics)


def segment_to_run_result(segment: RunSegment, monocular: bool) -> Any:
    """A kp_vo.pipeline.RunResult of one segment (ground truth only when every frame has it)."""
    from kp_vo.pipeline import RunResult

    gt = None
    if segment.T_world_cam_gt and all(T is not None for T in segment.T_world_cam_gt):
        gt = np.stack(segment.T_world_cam_gt)
    return RunResult(frame_indices=np.asarray(segment.frame_indices, np.int64),
                     stamps_ns=np.asarray(segment.stamps_ns, np.int64),
                     T_world_cam=np.stack(segment.T_world_cam), states=list(segment.states),
                     T_world_cam_gt=gt, timings=list(segment.timings), monocular=monocular)
