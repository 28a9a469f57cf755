"""``kp-vo bag`` (the VO node's logic over a recorded bag) and ``kp-vo make-bag`` (a dataset as a bag)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kp_vo.errors import DatasetError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from kp_vo.cli.run import add_config_arguments, add_source_arguments

    bag = subparsers.add_parser(
        "bag", help="run the VO node's logic over a rosbag2 (sqlite3/mcap) or ROS 1 bag, without ROS",
        description="Feed a bag's image (+ depth) and camera_info messages through the same core as the ROS "
                    "node; write a rosbag2 with /odom, /tf, /path, /vo/status and /diagnostics into "
                    "OUTPUT/bag plus the files of `kp-vo run` into OUTPUT.")
    bag.add_argument("input", help="rosbag2 folder or ROS 1 .bag file")
    bag.add_argument("--output", default="outputs/bag", help="output folder (default: outputs/bag)")
    bag.add_argument("--image-topic", help="sensor_msgs/Image topic (default: the only non-depth Image topic)")
    bag.add_argument("--depth-topic", help="depth Image topic (default: the Image topic named *depth*)")
    bag.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic (default: the closest to the image)")
    bag.add_argument("--mono", action="store_true", help="ignore depth topics (monocular VO)")
    bag.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="output bag storage")
    add_config_arguments(bag)
    bag.set_defaults(func=run_bag_command)

    make = subparsers.add_parser(
        "make-bag", help="write a KITTI/TUM folder or a synthetic sequence as a rosbag2 for `ros2 bag play`",
        description="Write Image, CameraInfo, static TF (base_link -> camera_optical_frame) and ground-truth "
                    "TF (gt_world -> gt_camera, also /ground_truth) of a sequence into a new rosbag2.")
    add_source_arguments(make)
    make.add_argument("--output", required=True, help="the rosbag2 folder to create (must not exist)")
    make.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="bag storage plugin")
    make.set_defaults(func=make_bag_command)


def run_bag_command(args: argparse.Namespace) -> int:
    from kp_vo.bridge.bag_runner import run_bag, segment_to_run_result
    from kp_vo.cli.run import apply_overrides, format_metrics, load_configs
    from kp_vo.pipeline import build_odometry, write_outputs

    config, node_config = load_configs(args.config)
    config = apply_overrides(config, args)
    output = Path(args.output)
    output_bag = output / "bag"
    if output_bag.exists():
        raise DatasetError(f"{output_bag} exists already; choose another --output")
    output.mkdir(parents=True, exist_ok=True)
    summary = run_bag(args.input, output_bag, build_odometry(config), node_config, args.image_topic,
                      args.depth_topic, args.camera_info_topic, args.mono, args.storage)
    if not summary.segments:
        raise DatasetError(f"no frame of {args.input} could be processed (problems: {summary.problems})")
    monocular = summary.topics.depth is None
    many = len(summary.segments) > 1
    for k, segment in enumerate(summary.segments):
        folder = output / f"segment_{k}" if many else output
        metrics = write_outputs(segment_to_run_result(segment, monocular), folder, config)
        print(format_metrics(metrics))
    print(f"frames processed: {summary.frames_processed}  problems: {summary.problems or 'none'}")
    print(f"output bag: {output_bag.resolve()}  outputs: {output.resolve()}")
    return 0


def make_bag_command(args: argparse.Namespace) -> int:
    from kp_vo.bridge.make_bag import make_bag
    from kp_vo.cli.map import parse_options

    count = make_bag(args.path, args.output, sequence=args.sequence, storage=args.storage,
                     max_frames=args.max_frames, start=args.start, stride=args.stride,
                     **parse_options(args.option, "--option"))
    print(f"wrote {count} frames to {Path(args.output).resolve()}")
    return 0
