"""The relocalization node's logic, ROS-free: the VO node core driven by a localizer.

``LocalizerAsOdometry`` gives ``kp_vo.reloc.Localizer`` the ``process``/``reset`` interface of
the odometry, so ``VoNodeCore`` does the camera_info wait, RGB-D sync, stamp checks and the
base_link extrinsic for the relocalization node too. Its outputs read as: ``odom_frame`` is
the map frame and ``T_odom_base`` is ``T_map_base``.

Map frame: the repository's world frame seen as a base_link frame, i.e.
``T_map_base = T_base_cam @ T_world_cam @ inv(T_base_cam)`` exactly as the VO's odom frame, so
a map saved from a VO run lines up with that run's odom frame.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kp_vo.bridge.node_core import NodeConfig, VoNodeCore
from kp_vo.odometry.types import TrackingResult, TrackingState
from kp_vo.types import Frame

logger = logging.getLogger(__name__)


@dataclass
class RelocConfig:
    """The ``reloc`` section of the reloc_node parameters (``ros`` is a NodeConfig)."""

    map_path: str = ""                 # keypoint map (Repository file) to load at start
    publish_map_to_odom: bool = False  # broadcast map -> odom (needs odom -> base_link in TF)
    position_std_m: float = 0.05       # position std at ``reference_inliers`` inliers
    rotation_std_rad: float = 0.01     # rotation std at ``reference_inliers`` inliers
    reference_inliers: int = 100       # stds scale with sqrt(reference_inliers / inliers)
    failed_variance: float = 1.0e3     # variance reported for a failed query (m^2, rad^2)
    localizer: dict = field(default_factory=dict)   # kp_vo.reloc.LocalizerConfig overrides


def localization_covariance(num_inliers: int, config: RelocConfig) -> np.ndarray:
    """(6, 6) diagonal covariance (x, y, z, rx, ry, rz) of a localization with ``num_inliers``.

    A heuristic (the localizer reports no covariance): stds shrink as 1/sqrt(inliers).
    """
    scale = config.reference_inliers / max(int(num_inliers), 1)
    return np.diag([config.position_std_m ** 2 * scale] * 3 + [config.rotation_std_rad ** 2 * scale] * 3)


class LocalizerAsOdometry:
    """``process(frame) -> TrackingResult`` over ``localizer.localize(frame)``.

    TRACKING when the localization succeeded, LOST otherwise (pose: the last success, or the
    identity, with ``failed_variance``).
    """

    def __init__(self, localizer: Any, config: RelocConfig):
        self.localizer, self.config = localizer, config
        self._last = np.eye(4)

    def process(self, frame: Frame) -> TrackingResult:
        result = self.localizer.localize(frame)
        if result.success:
            self._last = np.asarray(result.T_world_cam, dtype=np.float64)
            cov = getattr(result, "covariance", None)
            cov = localization_covariance(result.num_inliers, self.config) if cov is None else np.asarray(cov)
            state = TrackingState.TRACKING
        else:
            cov = np.eye(6) * self.config.failed_variance
            state = TrackingState.LOST
        return TrackingResult(frame.index, frame.stamp_ns, state, self._last.copy(), cov,
                              num_matches=int(result.num_matches), num_inliers=int(result.num_inliers),
                              features=getattr(result, "features", None), timings=dict(result.timings or {}),
                              message=result.message)

    def reset(self) -> None:
        self._last = np.eye(4)


def make_reloc_core(node_config: NodeConfig, localizer: Any, config: RelocConfig, lookup_extrinsic=None,
                    latest_only: bool = False) -> VoNodeCore:
    """A VoNodeCore whose outputs are map poses (``odom_frame`` = ``frames.map``); no path growth
    beyond the configured length and no TF of its own (the node publishes map -> odom).
    ``latest_only``: localize the newest input only (``VoNodeCore``, the node's ``ros.drop_stale``)."""
    frames = replace(node_config.frames, odom=node_config.frames.map)
    node_config = replace(node_config, frames=frames, publish_tf=False)
    return VoNodeCore(node_config, LocalizerAsOdometry(localizer, config), lookup_extrinsic, latest_only=latest_only)


def map_to_odom(T_map_base: np.ndarray, T_odom_base: np.ndarray) -> np.ndarray:
    """(4, 4) T_map_odom such that T_map_odom @ T_odom_base = T_map_base."""
    return np.asarray(T_map_base) @ np.linalg.inv(np.asarray(T_odom_base))
