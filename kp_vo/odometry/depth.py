"""Depth sources: where the odometry gets the 3D position of keyframe keypoints.

- ``sensor``: the frame's own depth image (RGB-D cameras).
- ``network``: a monocular depth network (DepthNet), run on keyframes only.
- ``triangulation``: no per-frame depth; keyframe points are triangulated against the
  previous keyframes of the window (monocular input before a DepthNet is available).
"""

from __future__ import annotations

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.features.base import DepthEstimator
from kp_vo.types import Frame, sanitize_depth

SOURCES = ("auto", "sensor", "network", "triangulation")


class DepthSource:
    """Chooses, per keyframe, the depth map used to lift keypoints (or None = triangulate).

    mode "auto": sensor depth when the frame has it, else the network when one is given,
    else triangulation.
    """

    def __init__(self, mode: str = "auto", estimator: DepthEstimator | None = None, network_scale: float = 1.0,
                 network_every_frame: bool = False):
        if mode not in SOURCES:
            raise InvalidInputError(f"unknown depth source {mode!r}; expected one of {SOURCES}")
        if mode == "network" and estimator is None:
            raise InvalidInputError("depth source 'network' needs a depth estimator (e.g. a DepthNet model)")
        self.mode = mode
        self.estimator = estimator
        self.network_scale = network_scale
        self.network_every_frame = network_every_frame  # run the network on every frame, not only keyframes
        self._cached: tuple[int, np.ndarray] | None = None

    def on_frame(self, frame: Frame) -> None:
        """Called for every frame; runs the network now when ``network_every_frame`` (else nothing)."""
        if self.network_every_frame and self.kind_for(frame) == "network":
            self._cached = (frame.stamp_ns, self._network_depth(frame))

    def kind_for(self, frame: Frame) -> str:
        """The source this frame's keyframe depth comes from: "sensor", "network" or "triangulation"."""
        if self.mode == "sensor" or (self.mode == "auto" and frame.depth is not None):
            return "sensor"
        if self.mode == "network" or (self.mode == "auto" and self.estimator is not None):
            return "network"
        return "triangulation"

    def keyframe_depth(self, frame: Frame) -> np.ndarray | None:
        """(H, W) float32 metres for a new keyframe, or None when points must be triangulated."""
        kind = self.kind_for(frame)
        if kind == "sensor":
            if frame.depth is None:
                raise InvalidInputError(f"frame {frame.index}: depth source 'sensor' but the frame has no depth")
            return sanitize_depth(frame.depth)
        if kind == "network":
            if self._cached is not None and self._cached[0] == frame.stamp_ns:
                return self._cached[1]
            return self._network_depth(frame)
        return None

    def _network_depth(self, frame: Frame) -> np.ndarray:
        depth = np.asarray(self.estimator.estimate(frame.image), np.float32) * self.network_scale
        if depth.shape != frame.image.shape[:2]:
            raise InvalidInputError(
                f"depth network returned {depth.shape}, expected the image size {frame.image.shape[:2]}")
        return sanitize_depth(depth)
