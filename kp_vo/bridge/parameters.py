"""The nodes' ROS parameters as data, ROS-free: declarations, run-time changes, the README table.

Every parameter is a ``ParamSpec`` (dotted name, type, default, description, range or choices, and
whether it can change at run time). Names, types and defaults come from the typed configs they fill
(``ros.*``: ``kp_vo.bridge.node_core.NodeConfig``, ``reloc.*``: ``kp_vo.bridge.reloc_core.RelocConfig``,
``extractor.*`` / ``depth.*`` / ``odometry.*``: ``kp_vo.pipeline.PipelineConfig``), the rest from the
``*_DOCS`` tables below, so the two cannot drift apart (a missing doc fails at import). The nodes declare
them with rclpy ParameterDescriptors (``kp_vo.ros.common.declare_node_parameters``); the free-form option
mappings (``FREE_FORM``: extractor and depth network options, localizer overrides) are declared from the
overrides given, read-only. ``parameter_table`` writes the table of ``kp_vo/ros/README.md``
(``python -m kp_vo.bridge.parameters`` rewrites it; a test checks it is current).

Run time: only ``runtime`` parameters take effect when set (``check_change``); every other one is used
at start-up only, is declared read-only and a set is refused with the reason.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kp_vo.bridge.camera_model import DISTORTION_MODES
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.reloc_core import RelocConfig
from kp_vo.odometry.depth import SOURCES
from kp_vo.odometry.tracker import OdometryConfig

INT_MAX = 2**31 - 1


@dataclass(frozen=True)
class Doc:
    """The hand-written part of a parameter: description, inclusive (low, high) range or choices, and
    whether a change at run time takes effect."""

    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = False


@dataclass(frozen=True)
class ParamSpec:
    name: str                 # dotted ROS name, e.g. "ros.sync_slop"
    type: type                # bool, int, float or str
    default: Any
    description: str
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    read_only: bool = True    # used at start-up only


ROS_DOCS = {
    "mode": Doc("mono (image + camera_info) or rgbd (+ depth)", choices=("mono", "rgbd")),
    "frames.odom": Doc("odometry frame (REP-105), parent of base_link"),
    "frames.base_link": Doc("robot frame whose pose is published; empty: the camera frame itself"),
    "frames.camera": Doc("camera optical frame; empty: the image header's frame_id"),
    "frames.map": Doc("map frame (map -> odom)"),
    "publish_tf": Doc("broadcast odom -> base_link", runtime=True),
    "approx_sync": Doc("RGB-D: pair image and depth within sync_slop (false: equal stamps)"),
    "sync_slop": Doc("s, RGB-D pairing tolerance", range=(0.0, 1.0)),
    "queue_size": Doc("RGB-D messages kept waiting for a partner", range=(1, 1000)),
    "qos.reliability": Doc("subscription reliability", choices=("best_effort", "reliable")),
    "qos.depth": Doc("subscription history depth", range=(1, 1000)),
    "path_max_length": Doc("poses kept in the published path", range=(1, 1_000_000)),
    "loop_reset_threshold": Doc("s; a stamp this far back is a bag loop (reset), less is dropped",
                                range=(0.0, 1e6), runtime=True),
    "warn_period": Doc("s between repeats of a throttled warning", range=(0.0, 3600.0), runtime=True),
    "no_image_timeout": Doc("s without images before diagnostics warn", range=(0.0, 3600.0), runtime=True),
    "lost_position_variance": Doc("m^2 added to the x, y, z variances while lost", range=(0.0, 1e12),
                                  runtime=True),
    "lost_rotation_variance": Doc("rad^2 added to the rotation variances while lost", range=(0.0, 1e12),
                                  runtime=True),
    "map_path": Doc("file of ~/save_map and ~/load_map", runtime=True),
    "drop_stale": Doc("process the newest input in a worker thread, drop stale ones (false: every message "
                      "in its callback)"),
    "stats_window": Doc("processed frames over which rate, processing time and latency are measured",
                        range=(2, 100_000)),
    "lost_tf": Doc("odom -> base_link while not tracking: none (no TF) or hold (the last tracked pose)",
                   choices=("none", "hold"), runtime=True),
    "publish_map_tf": Doc("vo_node: broadcast map -> odom (relocalization and set_pose corrections)",
                          runtime=True),
    "map_tf_rate": Doc("Hz at which map -> odom is republished", range=(0.1, 1000.0)),
    "map_tf_tolerance": Doc("s a map -> odom stamp is dated ahead of the clock", range=(0.0, 10.0), runtime=True),
    "require_metric": Doc("refuse to start when the odometry has no metric scale (monocular triangulation)"),
    "image_transport": Doc("image input: raw (sensor_msgs/Image on image) or compressed "
                           "(sensor_msgs/CompressedImage on image/compressed)", choices=("raw", "compressed")),
    "distortion": Doc("camera_info with distortion: rectify (raw images), rectified (image_rect topics: P is "
                      "used) or refuse", choices=DISTORTION_MODES),
}

RELOC_DOCS = {
    "map_path": Doc("keypoint map (kp-vo map build, ~/save_map) loaded at start"),
    "publish_map_to_odom": Doc("broadcast map -> odom (needs TF odom -> base_link)"),
    "position_std_m": Doc("m, position std of a localization at reference_inliers inliers", range=(0.0, 1e6)),
    "rotation_std_rad": Doc("rad, rotation std at reference_inliers inliers", range=(0.0, 10.0)),
    "reference_inliers": Doc("stds scale with sqrt(reference_inliers / inliers)", range=(1, INT_MAX)),
    "failed_variance": Doc("variance reported for a failed localization (m^2, rad^2)", range=(0.0, 1e12)),
    "tf_wait": Doc("s a localization waits for TF odom -> base_link at its stamp", range=(0.0, 60.0)),
    "max_pending": Doc("localizations waiting for that TF at once", range=(1, 1000)),
}

PIPELINE_DOCS = {
    "extractor.name": Doc("keypoint extractor: orb, sift, keypointnet, viewsynth"),
    "depth.estimator": Doc("depth network for monocular depth (depthnet), empty for none"),
}

ODOMETRY_DOCS = {
    "depth_source": Doc("where keyframe depth comes from", choices=SOURCES),
    "network_scale": Doc("metres per unit of the depth network's output"),
    "network_every_frame": Doc("run the depth network on every frame, not keyframes only"),
    "window_size": Doc("keyframes kept in the window"),
    "match_ratio": Doc("Lowe ratio of descriptor matching (1 disables)"),
    "guided_radius_px": Doc("px, search radius around the motion-prior projections"),
    "guided_retry_radius_px": Doc("px, wider radius tried when the first gives too few inliers (0: none)"),
    "guided_max_points": Doc("window points matched by the prior, most recently observed first"),
    "refine_radius_px": Doc("px, search radius around the projections of the solved pose"),
    "refine_max_points": Doc("window points matched with the solved pose, most recent first"),
    "pnp_threshold_px": Doc("px, RANSAC-PnP inlier threshold"),
    "pnp_iterations": Doc("RANSAC iteration cap"),
    "huber_px": Doc("px, Huber threshold of the Gauss-Newton refinement"),
    "min_inliers": Doc("fewer inliers = pose not trusted (lost)"),
    "procrustes_refinement": Doc("KP3D Procrustes correction after PnP + Gauss-Newton"),
    "max_step_ratio": Doc("a solved step longer than this times the prior's is rejected"),
    "keyframe_inlier_ratio": Doc("new keyframe below this share of the last keyframe's tracked points"),
    "keyframe_max_interval": Doc("new keyframe after this many frames"),
    "keyframe_min_interval": Doc("never two keyframes closer than this many frames"),
    "min_parallax_deg": Doc("deg, triangulation: minimum angle between the rays"),
    "max_reprojection_px": Doc("px, triangulation: maximum reprojection error"),
    "triangulation_keyframes": Doc("previous keyframes new keypoints are triangulated against"),
    "bundle_adjustment": Doc("bundle-adjust the window after each keyframe (with sensor depth, its measured depths too)"),
    "ba_fixed_keyframes": Doc("oldest window keyframes held fixed in bundle adjustment"),
    "ba_iterations": Doc("bundle adjustment iterations"),
    "ba_tolerance": Doc("bundle adjustment stops below this relative cost decrease"),
    "min_depth_m": Doc("m, depth below is ignored"),
    "max_depth_m": Doc("m, depth above is ignored"),
    "depth_noise_per_m2": Doc("sensor depth noise sigma_z = this x z^2 (m): weights and tolerances of the 3D-3D pose"),
    "depth_tolerance_m": Doc("m, a match agrees in 3D within this + 3 sigma_z"),
    "depth_edge_ratio": Doc("sensor depth: no 3D point where the depth varies more than this share around a "
                            "keypoint (0: off)"),
    "depth_edge_window_px": Doc("px, odd window of that depth-edge test"),
    "min_support_with_depth": Doc("matches agreeing in 2D and 3D a pose needs when the frame has sensor depth"),
    "init_min_matches": Doc("monocular initialisation: reciprocal matches needed"),
    "init_min_flow_px": Doc("px, monocular initialisation: median flow needed"),
    "init_min_points": Doc("monocular initialisation: triangulated points needed"),
    "init_baseline": Doc("length of the first monocular baseline (the map's unit)"),
    "relocalization": Doc("relocalize against the keyframe archive when lost"),
    "archive_points_per_keyframe": Doc("3D keypoints archived per keyframe"),
    "archive_max_keyframes": Doc("keyframe archive capacity"),
    "archive_max_mb": Doc("MiB, memory bound of the keyframe archive, index included (0: none)"),
    "max_lost_frames": Doc("lost frames before the map is rebuilt"),
    "loaded_map_frames": Doc("after ~/load_map: frames that only try to relocalize before a new map starts"),
    "lost_covariance": Doc("variance reported while lost or initialising (m^2, rad^2)"),
    "seed": Doc("RANSAC seed"),
    "blas_threads": Doc("numpy BLAS threads while tracking (0 = unchanged)"),
    "async_mapping": Doc("triangulate and bundle-adjust in a worker thread"),
}

# Mappings of free-form options: their keys are declared from the overrides given (read-only).
FREE_FORM = ("extractor.options.", "depth.options.", "reloc.localizer.")


def _leaves(cls: type, prefix: str) -> list[tuple[str, type, Any]]:
    """(dotted name, type, default) of every scalar field of dataclass ``cls`` (nested ones flattened;
    free-form mapping fields left out)."""
    hints = typing.get_type_hints(cls)
    out = []
    defaults = cls()
    for f in dataclasses.fields(cls):
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            out += _leaves(type(value), f"{prefix}{f.name}.")
        elif hints[f.name] in (bool, int, float, str):
            out.append((f"{prefix}{f.name}", hints[f.name], value))
    return out


def _specs(cls: type, prefix: str, docs: dict[str, Doc], doc_prefix: str = "") -> list[ParamSpec]:
    specs = []
    for name, kind, default in _leaves(cls, prefix):
        doc = docs[doc_prefix + name[len(prefix):]]
        specs.append(ParamSpec(name, kind, default, doc.description, doc.range, doc.choices, not doc.runtime))
    return specs


def _pipeline_specs() -> list[ParamSpec]:
    from kp_vo.pipeline import DepthConfig, ExtractorConfig

    return (_specs(ExtractorConfig, "extractor.", PIPELINE_DOCS, "extractor.")
            + _specs(DepthConfig, "depth.", PIPELINE_DOCS, "depth.")
            + _specs(OdometryConfig, "odometry.", ODOMETRY_DOCS))


def node_specs(node: str) -> list[ParamSpec]:
    """The declared parameters of ``node`` ("vo_node" or "reloc_node")."""
    ros = _specs(NodeConfig, "ros.", ROS_DOCS)
    if node == "vo_node":
        return ros + _pipeline_specs()
    extractor = [s for s in _pipeline_specs() if s.name.startswith("extractor.")]
    return ros + _specs(RelocConfig, "reloc.", RELOC_DOCS) + extractor


def is_free_form(name: str) -> bool:
    return name.startswith(FREE_FORM)


def unknown_overrides(names: list[str], specs: list[ParamSpec]) -> list[str]:
    """The dotted override names that are neither declared nor free-form options (undotted names are
    ROS's own: use_sim_time, ...)."""
    known = {s.name for s in specs}
    return sorted(n for n in names if "." in n and n not in known and not is_free_form(n))


def check_change(spec: ParamSpec | None, name: str, value: Any) -> str | None:
    """Why ``name`` cannot be set to ``value`` at run time, or None when it can."""
    if spec is None:
        return f"{name}: no such parameter" if not is_free_form(name) else f"{name} is read-only: used at start-up"
    if spec.read_only:
        return f"{name} is read-only: it is used at start-up only (restart the node to change it)"
    if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, spec.type) or (spec.type is int and isinstance(value, bool)):
        return f"{name} must be a {spec.type.__name__}, got {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.range is not None and not (isinstance(value, (int, float)) and math.isfinite(value)
                                       and spec.range[0] <= value <= spec.range[1]):
        return f"{name} must be in [{spec.range[0]}, {spec.range[1]}], got {value!r}"
    return None


def apply_changes(config: NodeConfig, specs: list[ParamSpec], changes: dict[str, Any]) -> NodeConfig:
    """``config`` with run-time ``changes`` ({dotted name: value}, every one ``ros.*``) applied; raises
    ConfigError with the reason (one line) when any of them is refused (``check_change``, or the
    NodeConfig's own validation)."""
    from kp_vo.config import ConfigError, merge
    from kp_vo.settings import nest

    by_name = {s.name: s for s in specs}
    ros = {}
    for name, value in changes.items():
        reason = check_change(by_name.get(name), name, value)
        if reason is not None:
            raise ConfigError(reason)
        ros[name[len("ros."):]] = float(value) if by_name[name].type is float else value
    return merge(config, nest(ros, "ros parameter"))


# ----------------------------------------------------------------------------- README table

TABLE_BEGIN = "<!-- BEGIN parameter table: generated from kp_vo/bridge/parameters.py -->"
TABLE_END = "<!-- END parameter table -->"


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    return f"`{value}`"


def parameter_table() -> str:
    """The markdown table of every parameter of both nodes (name, node, type, default, range or choices,
    run time, description)."""
    vo = {s.name: s for s in node_specs("vo_node")}
    reloc = {s.name: s for s in node_specs("reloc_node")}
    names = list(vo) + [n for n in reloc if n not in vo]
    rows = ["| parameter | nodes | type | default | range / choices | run time | description |",
            "|---|---|---|---|---|---|---|"]
    for name in names:
        spec = vo.get(name) or reloc[name]
        nodes = "both" if name in vo and name in reloc else ("vo_node" if name in vo else "reloc_node")
        limits = " \\| ".join(spec.choices) if spec.choices else (
            f"[{spec.range[0]}, {spec.range[1]}]" if spec.range else "")
        rows.append(f"| `{name}` | {nodes} | {spec.type.__name__} | {_cell(spec.default)} | {limits} | "
                    f"{'' if spec.read_only else 'yes'} | {spec.description} |")
    return "\n".join(rows)


def readme_with_table(text: str) -> str:
    """``text`` (kp_vo/ros/README.md) with the generated table between the TABLE_BEGIN / TABLE_END markers."""
    begin, end = text.index(TABLE_BEGIN) + len(TABLE_BEGIN), text.index(TABLE_END)
    return text[:begin] + "\n" + parameter_table() + "\n" + text[end:]


if __name__ == "__main__":
    readme = Path(__file__).resolve().parents[1] / "ros" / "README.md"
    readme.write_text(readme_with_table(readme.read_text()))
