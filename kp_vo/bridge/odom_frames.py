"""REP-105 frames of the VO node, ROS-free: a continuous ``odom -> base_link`` and the ``map -> odom`` correction.

Three frames, every pose below being base_link's (REP-103 body axes):

- ``W``, the tracker's world: ``T_W_base = T_base_cam @ T_world_cam @ inv(T_base_cam)`` (its first camera,
  or a loaded map's frame). The tracker's pose jumps in it: relocalization against its keyframe archive or
  a loaded map, recovery after LOST, a map rebuilt after a long loss, a reset of the tracker.
- ``odom``: continuous. Between two tracked frames ``T_odom_base`` moves exactly as the tracker's pose; at a
  jump it holds the last tracked pose, and while not tracking it holds it too (never the motion prior).
- ``map``: where the tracker's jumps land: ``T_map_base = T_map_odom @ T_odom_base``.

State: ``T_odom_W`` and ``T_map_odom`` ((4, 4) each), constant while the tracker tracks in one W. At the
first tracked frame after a jump the frames are re-anchored: ``T_odom_W = T_odom_base_held @ inv(T_W_base)``
and ``T_map_odom`` follows from what is known of the map there (:class:`MapAnchor`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kp_vo.geometry.se3 import adjoint_translation_first, se3_log

@dataclass(frozen=True)
class MapAnchor:
    """What is known of the map at the next re-anchoring (exactly one of the two is given).

    T_map_W:    (4, 4) place of the tracker's world in map (the same world after a relocalization; the
                identity when the tracker continues inside a loaded map).
    T_map_base: (4, 4) map pose of base_link at the re-anchoring frame (``set_pose``).
    """

    T_map_W: np.ndarray | None = None
    T_map_base: np.ndarray | None = None


class OdomFrames:
    """The odom and map frames over the tracker's outputs (see the module docstring). Not thread-safe: the
    node core calls it under its processing lock."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Start over: odom = map = the tracker's world, base_link at the origin (the next trajectory)."""
        self.T_odom_W = np.eye(4)
        self.T_map_odom = np.eye(4)
        self.T_odom_base = np.eye(4)     # the last tracked pose, held while not tracking
        self._tracked = False            # tracked since the reset
        self._tracking = False           # the last frame was tracked
        self._anchor: MapAnchor | None = None

    @property
    def T_map_W(self) -> np.ndarray:
        return self.T_map_odom @ self.T_odom_W

    def enter_map(self) -> None:
        """The tracker restarts inside a loaded map (``~/load_map``): its world becomes the map frame.
        odom holds its pose; map -> odom is set at the first frame the tracker places in the map."""
        self._anchor = MapAnchor(T_map_W=np.eye(4))

    def set_pose(self, frame: str, T_frame_base: np.ndarray) -> None:
        """The tracker was reset and base_link is at ``T_frame_base`` (4, 4) in ``frame``, "odom" or "map".

        odom: the odometry restarts at that pose (odom jumps there, as asked), map -> odom is kept.
        map:  odom holds its pose, map -> odom becomes ``T_frame_base @ inv(T_odom_base)`` at the next
        tracked frame.
        """
        if frame == "odom":
            self.T_odom_base = np.array(T_frame_base, dtype=np.float64)
            self._anchor = MapAnchor(T_map_base=self.T_map_odom @ self.T_odom_base)
        else:
            self._anchor = MapAnchor(T_map_base=np.array(T_frame_base, dtype=np.float64))
        self._tracking = False

    def update(self, tracking: bool, T_W_base: np.ndarray, relocalized: bool = False) -> tuple[np.ndarray, bool]:
        """One tracker output -> (``T_odom_base`` (4, 4) to publish, whether the frames were re-anchored here).

        tracking: the tracker solved this frame's pose; ``T_W_base`` (4, 4) is then its pose in W (ignored
        otherwise: the held pose is returned). relocalized: the tracker placed this frame by relocalization
        (``TrackingResult.relocalized``): its pose may jump although it is tracking.
        """
        if not tracking:
            self._tracking = False
            return self.T_odom_base.copy(), False
        jumped = (self._anchor is not None or (self._tracked and not self._tracking)
                  or relocalized)
        if jumped:
            anchor = self._anchor or MapAnchor(T_map_W=self.T_map_W)
            self.T_odom_W = self.T_odom_base @ np.linalg.inv(T_W_base)
            if anchor.T_map_W is not None:
                self.T_map_odom = anchor.T_map_W @ np.linalg.inv(self.T_odom_W)
            else:
                self.T_map_odom = anchor.T_map_base @ np.linalg.inv(self.T_odom_base)
            self._anchor = None
        self.T_odom_base = self.T_odom_W @ T_W_base
        self._tracked = self._tracking = True
        return self.T_odom_base.copy(), jumped


def body_twist(T_prev: np.ndarray, T_cur: np.ndarray, cov_prev: np.ndarray, cov_cur: np.ndarray,
               dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Twist of base_link between two poses ``dt_s`` s apart, in base_link (nav_msgs/Odometry's child frame).

    T_prev, T_cur: (4, 4) poses in one frame; cov_prev, cov_cur: (6, 6) their covariances (right
    perturbations in base_link, order x, y, z, rot_x, rot_y, rot_z). Returns the (6,) twist
    (vx, vy, vz, wx, wy, wz) = log(inv(T_prev) @ T_cur) / dt and its (6, 6) covariance
    ``(Ad(inv(T_rel)) cov_prev Ad(inv(T_rel))^T + cov_cur) / dt^2`` (the two poses taken as independent).
    """
    T_rel = np.linalg.inv(T_prev) @ T_cur
    omega_rho = se3_log(T_rel)
    twist = np.concatenate([omega_rho[3:], omega_rho[:3]]) / dt_s
    A = adjoint_translation_first(np.linalg.inv(T_rel))
    cov = (A @ cov_prev @ A.T + cov_cur) / dt_s ** 2
    return twist, cov


class TransformStamper:
    """Stamps of a transform republished at a fixed rate (``map -> odom``).

    ``now + tolerance``: future-dated like AMCL's ``transform_tolerance``, so a lookup of map -> base_link
    at the newest odom stamp finds a map -> odom at or after it; strictly increasing (1 ns after the last
    one when the clock has not moved on), because tf2 ignores (and warns about) a dynamic transform sent
    twice with one stamp, and a correction sent right after a timer tick must not be lost.
    """

    def __init__(self, tolerance_s: float):
        self.tolerance_s = tolerance_s
        self._last_ns: int | None = None

    def stamp(self, now_ns: int) -> int:
        """The stamp to send at ``now_ns`` (caller's clock)."""
        stamp_ns = int(now_ns) + int(round(self.tolerance_s * 1e9))
        if self._last_ns is not None and stamp_ns <= self._last_ns:
            stamp_ns = self._last_ns + 1
        self._last_ns = stamp_ns
        return stamp_ns

    def reset(self) -> None:
        """Forget the last stamp (time jumped back: a bag loop)."""
        self._last_ns = None
