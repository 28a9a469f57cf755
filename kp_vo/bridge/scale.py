"""Scale honesty, ROS-free: whether the odometry's poses are in metres, and the ``ros.require_metric`` check.

Monocular VO with triangulated keyframe depth has no scale: its unit is the first baseline (KITTI 07
written as 219.9 m for 90.6 m driven). Depth from a sensor (RGB-D) or from a depth network with a metric
scale (``odometry.depth_source: network``) makes it metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from kp_vo.config import ConfigError


@dataclass(frozen=True)
class Scale:
    """metric: poses in metres; source: where the scale comes from, in words (diagnostics ``scale_source``)."""

    metric: bool
    source: str


def odometry_scale(mode: str, depth_mode: str, has_estimator: bool) -> Scale:
    """The Scale of the VO node in ``mode`` ("mono" | "rgbd") with ``odometry.depth_source`` = ``depth_mode``
    ("auto" | "sensor" | "network" | "triangulation") and a depth network given or not (``depth.estimator``).

    "auto" is the tracker's rule (kp_vo.odometry.depth.DepthSource): sensor depth when frames carry it (RGB-D
    mode), else the network when there is one, else triangulation.
    """
    if depth_mode == "sensor" or (depth_mode == "auto" and mode == "rgbd"):
        if mode == "rgbd":
            return Scale(True, "depth sensor")
        return Scale(False, "depth source 'sensor' without a depth topic")
    if depth_mode == "network" or (depth_mode == "auto" and has_estimator):
        return Scale(True, "depth network, metres per unit from depth.options.scale")
    return Scale(False, "monocular triangulation, unit = the first baseline")


def check_required_metric(require_metric: bool, scale: Scale) -> None:
    """Raise ConfigError (one line) when ``ros.require_metric`` is set and ``scale`` is not metric."""
    if require_metric and not scale.metric:
        raise ConfigError(f"ros.require_metric is true but the odometry has no metric scale ({scale.source}); "
                          "use RGB-D, or odometry.depth_source: network with a DepthNet (depth.estimator)")
