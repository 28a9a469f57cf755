"""Arguments and helpers shared by several ``kp-vo`` commands: the input sequence and the pipeline config.

``add_source_arguments`` / ``open_source`` select frames of a dataset folder or synthetic sequence;
``add_config_arguments`` / ``pipeline_config`` build the pipeline config from defaults, ``--config``
(a pipeline YAML or a ROS parameter file) and the command-line overrides.
"""

from __future__ import annotations

import argparse

from kp_vo.config import load_config, merge, read_yaml
from kp_vo.settings import parse_options, parse_settings


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments naming the input sequence, shared by ``run``, ``bench`` and ``bag``."""
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


def open_source(source: str, sequence: str | None = None, start: int = 0, stride: int = 1,
                max_frames: int | None = None, option_items: list[str] | None = None):
    """The sequence ``open_sequence(source, sequence)`` with the selection options and ``KEY=VALUE``
    loader options (YAML values, from ``--option``)."""
    from kp_vo.datasets import open_sequence

    options = {"start": start, "stride": stride, "max_frames": max_frames}
    options.update(parse_options(option_items, "--option"))
    return open_sequence(source, sequence, **options)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--extractor``, ``--depth-source`` and ``--set``: the pipeline config of a command."""
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
    from kp_vo.bridge.node_config import NodeConfig, split_node_parameters
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
    config = merge(config, parse_settings(getattr(args, "settings", None), "--set"))
    if args.extractor:
        config = merge(config, {"extractor": {"name": args.extractor}})
    if args.depth_source:
        config = merge(config, {"odometry": {"depth_source": args.depth_source}})
        if args.depth_source == "network" and not config.depth.estimator:
            config = merge(config, {"depth": {"estimator": "depthnet"}})
    return config
