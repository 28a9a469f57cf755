"""``kp-vo run PATH``: visual odometry over a dataset folder or the built-in synthetic sequence."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from kp_vo.cli.progress import add_progress_argument, show_progress
from kp_vo.config import ConfigError, load_config, merge, read_yaml

log = logging.getLogger(__name__)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments naming the input sequence, shared by ``run`` and ``bench``."""
    parser.add_argument("path", nargs="?", default="synthetic",
                        help="KITTI odometry root, TUM RGB-D folder, image folder, or 'synthetic[:street|:room]' "
                             "(default: synthetic)")
    parser.add_argument("--sequence", help="KITTI sequence number, e.g. 07")
    parser.add_argument("--max-frames", type=int, help="process at most this many frames")
    parser.add_argument("--start", type=int, default=0, help="first frame to process")
    parser.add_argument("--stride", type=int, default=1, help="process every N-th frame")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="extra loader option (YAML value), e.g. seed=200000 for another synthetic street; "
                             "repeatable")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file overriding the pipeline config (nested keys), or a ROS parameter "
                        "file such as config/kitti_mono.yaml")
    parser.add_argument("--extractor", help="keypoint extractor: orb, sift, keypointnet, ... (overrides the config)")
    parser.add_argument("--depth-source", choices=["auto", "sensor", "network", "triangulation"],
                        help="where keyframe depth comes from; 'triangulation' forces monocular VO; 'network' "
                             "without a depth estimator in the config uses the shipped DepthNet")
    parser.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", dest="settings",
                        help="override one config value (YAML value) after --config, e.g. "
                             "odometry.keyframe_max_interval=1 or extractor.options.max_keypoints=3000; repeatable")


def pipeline_config(args: argparse.Namespace):
    """The config from defaults, ``--config`` and the command-line overrides, in that order."""
    return apply_overrides(load_configs(args.config)[0], args)


def load_configs(path: str | None):
    """(PipelineConfig, NodeConfig) from a pipeline YAML or a ROS parameter YAML
    (``vo_node: ros__parameters: {ros: ..., extractor: ..., odometry: ...}``; another node's
    section is used when there is no vo_node)."""
    from kp_vo.bridge.node_core import NodeConfig, split_node_parameters
    from kp_vo.pipeline import PipelineConfig

    if path is None:
        return PipelineConfig(), NodeConfig()
    data = read_yaml(path)
    nodes = {k: v for k, v in data.items() if isinstance(v, dict) and "ros__parameters" in v}
    if nodes:
        data = (nodes.get("vo_node") or next(iter(nodes.values())))["ros__parameters"] or {}
    node_config, rest = split_node_parameters(data)
    return load_config(PipelineConfig, rest), node_config


def apply_overrides(config, args: argparse.Namespace):
    """``config`` with ``--set``, ``--extractor`` and ``--depth-source`` applied, in that order (``network``
    with no estimator configured: the shipped DepthNet)."""
    from kp_vo.cli.map import parse_settings

    config = merge(config, parse_settings(getattr(args, "settings", None), "--set"))
    if args.extractor:
        config = merge(config, {"extractor": {"name": args.extractor}})
    if args.depth_source:
        config = merge(config, {"odometry": {"depth_source": args.depth_source}})
        if args.depth_source == "network" and not config.depth.estimator:
            config = merge(config, {"depth": {"estimator": "depthnet"}})
    return config


def open_source(args: argparse.Namespace):
    from kp_vo.cli.map import parse_options
    from kp_vo.datasets import open_sequence

    return open_sequence(args.path, args.sequence, max_frames=args.max_frames, start=args.start, stride=args.stride,
                         **parse_options(args.option, "--option"))


def register(subparsers) -> None:
    parser = subparsers.add_parser("run", help="run visual odometry on a sequence and evaluate it",
                                   description="Run visual odometry on a sequence; write trajectories, "
                                               "metrics.json, config.yaml and trajectory.png.")
    add_source_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--output", default="outputs/run", help="output folder (default: outputs/run)")
    parser.add_argument("--seeds", type=int, default=1,
                        help="track the frames this many times with consecutive RANSAC seeds (odometry.seed, "
                             "+1, ...) and report the spread of the metrics; the features are extracted once "
                             "(default 1)")
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from kp_vo.pipeline import MemoizedExtractor, build_odometry, run_frames, write_outputs

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    config = pipeline_config(args)
    sequence = open_source(args)
    odometry = build_odometry(config)
    log.info("%s: %d frames, extractor %s", sequence.name, len(sequence), config.extractor.name)
    if args.seeds > 1:
        odometry.extractor = MemoizedExtractor(odometry.extractor)
    result = run_frames(sequence, odometry, total=len(sequence), progress=show_progress(args))
    reruns = {}
    for seed in range(config.odometry.seed + 1, config.odometry.seed + args.seeds):
        odometry.config = dataclasses.replace(config.odometry, seed=seed)
        odometry.reset()
        reruns[seed] = run_frames(sequence, odometry, total=len(sequence), progress=show_progress(args))
    metrics = write_outputs(result, args.output, config, reruns)
    print(format_metrics(metrics))
    print(f"outputs written to {Path(args.output).resolve()}")
    return 0


def format_metrics(metrics: dict) -> str:
    """A short human-readable summary of metrics.json."""
    lines = [f"frames: {metrics['num_frames']}  states: {metrics['states']}  monocular: {metrics['monocular']}"]
    if "ate_rmse_m" in metrics:
        lines.append(f"ATE RMSE after {metrics['alignment']} alignment: {metrics['ate_rmse_m']:.3f} m  "
                     f"(path length {metrics['path_length_gt_m']:.1f} m)")
    if metrics.get("drift_t_rel_percent") is not None:
        lines.append(f"drift over {metrics['drift_lengths_m'][0]:.0f}-{metrics['drift_lengths_m'][-1]:.0f} m "
                     f"segments: t_rel {metrics['drift_t_rel_percent']:.2f} %  "
                     f"r_rel {metrics['drift_r_rel_deg_per_100m']:.2f} deg/100m")
    spread = metrics.get("seed_spread", {})
    if "drift_t_rel_percent" in spread or "ate_rmse_m" in spread:
        parts = [f"{label} {spread[key]['mean']:.{digits}f} ± {spread[key]['std']:.{digits}f}{unit}"
                 for key, label, digits, unit in (("drift_t_rel_percent", "t_rel", 2, " %"),
                                                  ("drift_r_rel_deg_per_100m", "r_rel", 2, " deg/100m"),
                                                  ("ate_rmse_m", "ATE", 3, " m")) if key in spread]
        lines.append(f"over {len(spread['seeds'])} RANSAC seeds (mean ± std): " + "  ".join(parts))
    timing = metrics["timing"]
    lines.append("time per frame: " + "  ".join(f"{k[:-3]} {v:.1f} ms" for k, v in timing.items() if k.endswith("_ms"))
                 + f"  ({timing['fps']:.1f} FPS)")
    return "\n".join(lines)
