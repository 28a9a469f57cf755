"""What the odometry hands to its callers (pipeline, ROS adapters, relocalization)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from kp_vo.features.base import Features


class TrackingState(str, enum.Enum):
    INITIALIZING = "initializing"  # no metric map yet (monocular: waiting for enough parallax)
    TRACKING = "tracking"          # pose solved against the keyframe window
    LOST = "lost"                  # pose could not be solved; motion prior used, recovery under way


@dataclass
class Keyframe:
    """A frame kept in the window: its pose, features, and 3D points of the matched keypoints.

    T_world_cam: (4, 4) pose of the keyframe camera in the odometry world frame.
    features:    Features of the keyframe image.
    points_world:(N, 3) float64 3D point per keypoint in world coordinates (NaN where unknown).
    point_ids:   (N,) int64 id of the map point each keypoint observes (-1 = none).
    depth:       optional (H, W) float32 depth map the keypoints were lifted with.
    keypoint_depth: optional (N,) float64 sensor depth (m) measured at each keypoint, NaN where it has none
                 (a hole, out of range, on a depth edge); the window's bundle adjustment weighs it.
    """

    frame_index: int
    stamp_ns: int
    T_world_cam: np.ndarray
    features: Features
    points_world: np.ndarray
    point_ids: np.ndarray
    depth: np.ndarray | None = None
    keypoint_depth: np.ndarray | None = None


@dataclass
class TrackingResult:
    """The outcome of one ``VisualOdometry.process(frame)`` call.

    T_world_cam: (4, 4) estimated camera pose in the odometry world frame (the first frame's
        camera is the origin). While LOST it is the motion-prior prediction.
    covariance: (6, 6) pose covariance in the camera frame, order (x, y, z, rot_x, rot_y, rot_z)
        as in ROS messages; inflated while INITIALIZING or LOST.
    matches: (M, 2) int (current keypoint index, map point id) of the inlier matches.
    match_keyframe_uv: (M, 2) float32 pixel of each inlier match's map point in the newest keyframe
        that observes it (row i belongs to matches[i]; the debug image draws the flow from it).
    relocalized: the pose comes from relocalization against the archive or a loaded map, not from
        tracking the previous frame: it may jump although the state stays TRACKING.
    timings: seconds per stage ("extract", "match", "pose", "map", "total").
    """

    frame_index: int
    stamp_ns: int
    state: TrackingState
    T_world_cam: np.ndarray
    covariance: np.ndarray
    num_matches: int = 0
    num_inliers: int = 0
    is_keyframe: bool = False
    features: Features | None = None
    matches: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    match_keyframe_uv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    relocalized: bool = False
    timings: dict = field(default_factory=dict)
    message: str = ""
