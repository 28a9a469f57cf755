"""The ``ros`` section of the node parameters (``NodeConfig``) and its split from the pipeline's.

Kept apart from the node core so that reading a config file (``kp-vo run --config``) does not load
the message conversions and the odometry behind the core.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kp_vo.bridge.camera_model import DISTORTION_MODES
from kp_vo.errors import InvalidInputError, KpVoError


@dataclass
class FramesConfig:
    odom: str = "odom"            # odometry frame (REP-105), parent of base_link
    base_link: str = "base_link"  # robot frame; its pose is published. "" = use the camera frame itself
    camera: str = ""              # camera optical frame; "" = header.frame_id of the image messages
    map: str = "map"              # relocalization frame (reloc_node: map -> odom)


@dataclass
class QosConfig:
    reliability: str = "best_effort"  # "best_effort" (sensor data) or "reliable"
    depth: int = 5                    # history depth of the subscriptions


@dataclass
class NodeConfig:
    """The ``ros`` section of the node parameters (the rest is kp_vo.pipeline.PipelineConfig)."""

    mode: str = "mono"                 # "mono" (image + camera_info) or "rgbd" (+ depth)
    frames: FramesConfig = field(default_factory=FramesConfig)
    publish_tf: bool = True            # broadcast odom -> base_link
    approx_sync: bool = True           # RGB-D: pair image/depth within sync_slop; false = equal stamps
    sync_slop: float = 0.02            # s, RGB-D pairing tolerance
    queue_size: int = 10               # RGB-D messages kept waiting for a partner
    qos: QosConfig = field(default_factory=QosConfig)
    path_max_length: int = 5000        # poses kept in the published nav_msgs/Path
    loop_reset_threshold: float = 1.0  # s; a stamp this far back is a loop -> reset (smaller: drop)
    warn_period: float = 5.0           # s between repeats of a throttled warning
    no_image_timeout: float = 2.0      # s without images before diagnostics warn
    lost_position_variance: float = 100.0  # m^2 added to x, y, z variances while LOST
    lost_rotation_variance: float = 10.0   # rad^2 added to the rotation variances while LOST
    map_path: str = ""                 # file for the ~/save_map and ~/load_map services
    drop_stale: bool = True            # nodes: odometry on the newest input in a worker thread, stale ones
                                       # dropped; false: every message in the subscription callback
                                       # (kp-vo bag always processes every message)
    stats_window: int = 30             # processed frames over which rate, processing time, latency are measured
    lost_tf: str = "none"              # odom -> base_link while not tracking: "none" (no TF) or "hold" (last pose)
    publish_map_tf: bool = True        # broadcast map -> odom (the relocalization correction)
    map_tf_rate: float = 10.0          # Hz at which map -> odom is republished
    map_tf_tolerance: float = 0.1      # s a map -> odom stamp is dated ahead of the clock (like AMCL's)
    require_metric: bool = False       # refuse to start when the odometry has no metric scale (monocular)
    image_transport: str = "raw"       # "raw" (sensor_msgs/Image) or "compressed" (sensor_msgs/CompressedImage)
    distortion: str = "refuse"         # camera_info with distortion: "rectify" | "rectified" | "refuse"

    def __post_init__(self) -> None:
        if self.mode not in ("mono", "rgbd"):
            raise InvalidInputError(f"ros.mode must be 'mono' or 'rgbd', got {self.mode!r}")
        for name, value, allowed in (("lost_tf", self.lost_tf, ("none", "hold")),
                                     ("image_transport", self.image_transport, ("raw", "compressed")),
                                     ("distortion", self.distortion, DISTORTION_MODES)):
            if value not in allowed:
                raise InvalidInputError(f"ros.{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not (self.map_tf_rate > 0 and self.map_tf_tolerance >= 0):
            raise InvalidInputError("ros.map_tf_rate must be > 0 Hz and ros.map_tf_tolerance >= 0 s")
        if self.stats_window < 2:
            raise InvalidInputError(f"ros.stats_window must be >= 2 frames, got {self.stats_window}")
        if self.sync_slop < 0 or self.queue_size < 1 or self.path_max_length < 1:
            raise InvalidInputError("ros.sync_slop must be >= 0, ros.queue_size and ros.path_max_length >= 1")
        if self.qos.reliability not in ("best_effort", "reliable"):
            raise InvalidInputError(f"ros.qos.reliability must be best_effort or reliable, got {self.qos.reliability!r}")
        # the numeric ranges the ROS node declares (kp_vo.bridge.parameters.ROS_DOCS), held here too so that a
        # bag run or a YAML file cannot pass NaN, inf or a size that overflows a deque
        for name, value, low, high in (
                ("sync_slop", self.sync_slop, 0.0, 1.0), ("queue_size", self.queue_size, 1, 1000),
                ("qos.depth", self.qos.depth, 1, 1000), ("path_max_length", self.path_max_length, 1, 1_000_000),
                ("loop_reset_threshold", self.loop_reset_threshold, 0.0, 1e6),
                ("warn_period", self.warn_period, 0.0, 3600.0), ("no_image_timeout", self.no_image_timeout, 0.0, 3600.0),
                ("lost_position_variance", self.lost_position_variance, 0.0, 1e12),
                ("lost_rotation_variance", self.lost_rotation_variance, 0.0, 1e12),
                ("stats_window", self.stats_window, 2, 100_000), ("map_tf_rate", self.map_tf_rate, 0.1, 1000.0),
                ("map_tf_tolerance", self.map_tf_tolerance, 0.0, 10.0)):
            if not low <= value <= high:   # NaN fails too
                raise InvalidInputError(f"ros.{name} must be in [{low:g}, {high:g}], got {value!r}")


def split_node_parameters(params: dict) -> tuple[NodeConfig, dict]:
    """Split the node's nested parameters into the ``ros`` NodeConfig and the pipeline mapping.

    ``params``: nested mapping as in config/*.yaml under ``ros__parameters``.
    """
    from kp_vo.config import load_config

    params = dict(params or {})
    ros = params.pop("ros", {}) or {}
    try:
        node_config = load_config(NodeConfig, ros)
    except KpVoError as exc:
        raise InvalidInputError(f"ros parameters: {exc}") from exc
    return node_config, params
