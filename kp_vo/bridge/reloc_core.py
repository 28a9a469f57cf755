"""The relocalization node's logic, ROS-free: the VO node core driven by a localizer.

``LocalizerAsOdometry`` gives ``kp_vo.reloc.Localizer`` the ``process``/``reset`` interface of
the odometry, so ``VoNodeCore`` does the camera_info wait, RGB-D sync, stamp checks and the
base_link extrinsic for the relocalization node too. Its outputs read as: ``odom_frame`` is
the map frame and ``T_odom_base`` is ``T_map_base``.

Map frame: the repository's world frame seen as a base_link frame, i.e.
``T_map_base = T_base_cam @ T_world_cam @ inv(T_base_cam)`` exactly as the VO's odom frame, so
a map saved from a VO run lines up with that run's odom frame.

``map -> odom`` (``MapOdomCorrection``): each localization at stamp s gives
``T_map_odom = T_map_base(s) @ inv(T_odom_base(s))`` once TF has odom -> base_link at s (the VO node
publishes it after processing the same image, possibly later than this node localizes it). The node
asks TF without waiting, now and on its ``ros.map_tf_rate`` timer, until the answer is there or
``reloc.tf_wait`` s have passed, and republishes the latest correction on that timer.
"""

from __future__ import annotations

import logging
import collections
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from kp_vo.bridge.node_core import MapTransform, VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.odom_frames import TransformStamper
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
    tf_wait: float = 1.0               # s a localization waits for TF odom -> base_link at its stamp
    max_pending: int = 10              # localizations waiting for that TF at once (the oldest are dropped)
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
            cov = localization_covariance(result.num_inliers, self.config)
            state = TrackingState.TRACKING
        else:
            cov = np.eye(6) * self.config.failed_variance
            state = TrackingState.LOST
        return TrackingResult(frame.index, frame.stamp_ns, state, self._last.copy(), cov,
                              num_matches=int(result.num_matches), num_inliers=int(result.num_inliers),
                              features=result.features, timings=dict(result.timings or {}),
                              message=result.message)

    def reset(self) -> None:
        self._last = np.eye(4)


def make_reloc_core(node_config: NodeConfig, localizer: Any, config: RelocConfig, lookup_extrinsic=None,
                    latest_only: bool = False, clock=None) -> VoNodeCore:
    """A VoNodeCore whose outputs are map poses as the localizer gives them (``odom_frame`` =
    ``frames.map``, no continuity: every localization stands alone); no path growth beyond the
    configured length and no TF of its own (``MapOdomCorrection`` makes the node's map -> odom).
    ``latest_only``: localize the newest input only (``VoNodeCore``, the node's ``ros.drop_stale``)."""
    frames = replace(node_config.frames, odom=node_config.frames.map)
    node_config = replace(node_config, frames=frames, publish_tf=False, publish_map_tf=False)
    return VoNodeCore(node_config, LocalizerAsOdometry(localizer, config), lookup_extrinsic, clock=clock,
                      latest_only=latest_only, continuous_odom=False)


def map_to_odom(T_map_base: np.ndarray, T_odom_base: np.ndarray) -> np.ndarray:
    """(4, 4) T_map_odom such that T_map_odom @ T_odom_base = T_map_base."""
    return np.asarray(T_map_base) @ np.linalg.inv(np.asarray(T_odom_base))


OdomLookup = Callable[[int], "np.ndarray | None"]


class MapOdomCorrection:
    """reloc_node's map -> odom (module docstring). Thread-safe enough for one adder (the frame worker or the
    subscription callback) and one resolver (the timer): both run under one lock.

    ``add(stamp_ns, T_map_base)`` records a localization; ``resolve(lookup, now_ns)`` asks
    ``lookup(stamp_ns) -> T_odom_base (4, 4) | None`` (TF odom -> base_link at that stamp, never waiting)
    for the pending ones, newest first: the newest answered one sets the correction and every older
    one is dropped; one unanswered for ``tf_wait`` s is dropped and counted in ``timed_out``.
    ``transform(now_ns)``: the correction to broadcast (None before the first one), stamped by a
    ``TransformStamper``.
    """

    def __init__(self, config: RelocConfig, node_config: NodeConfig):
        self.config, self.frames = config, node_config.frames
        self.T_map_odom: np.ndarray | None = None
        self.timed_out = 0
        self._pending: collections.deque = collections.deque(maxlen=config.max_pending)
        self._stamper = TransformStamper(node_config.map_tf_tolerance)
        self._lock = threading.Lock()

    def add(self, stamp_ns: int, T_map_base: np.ndarray) -> None:
        with self._lock:
            self._pending.append((int(stamp_ns), np.asarray(T_map_base, dtype=np.float64)))

    def resolve(self, lookup: OdomLookup, now_ns: int) -> bool:
        """Settle what TF allows now; True when the correction changed."""
        with self._lock:
            pending, changed = list(self._pending), False
            for k in range(len(pending) - 1, -1, -1):
                stamp_ns, T_map_base = pending[k]
                T_odom_base = lookup(stamp_ns)
                if T_odom_base is not None:
                    self.T_map_odom = map_to_odom(T_map_base, T_odom_base)
                    pending, changed = pending[k + 1:], True
                    break
            wait_ns = int(self.config.tf_wait * 1e9)
            kept = [(s, T) for s, T in pending if now_ns - s <= wait_ns]
            if len(kept) < len(pending):
                self.timed_out += len(pending) - len(kept)
                logger.warning("no TF %s -> %s within %.1f s of %d localization(s): map -> odom not updated "
                               "from them", self.frames.odom, self.frames.base_link, self.config.tf_wait,
                               len(pending) - len(kept))
            self._pending = collections.deque(kept, maxlen=self.config.max_pending)
            return changed

    def transform(self, now_ns: int) -> MapTransform | None:
        """map -> odom to broadcast at ``now_ns``, or None before the first correction."""
        with self._lock:
            if self.T_map_odom is None:
                return None
            return MapTransform(self._stamper.stamp(now_ns), self.frames.map, self.frames.odom,
                                self.T_map_odom.copy())
