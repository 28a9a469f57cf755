"""``kp-vo bag`` (the VO node's logic over a recorded bag) and ``kp-vo make-bag`` (a dataset as a bag)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kp_vo.cli.progress import add_progress_argument, progress_bar, show_progress
from kp_vo.errors import DatasetError, InvalidInputError

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from kp_vo.cli.common import add_config_arguments, add_source_arguments

    bag = subparsers.add_parser(
        "bag", help="run the VO node's logic over a rosbag2 (sqlite3/mcap) or ROS 1 bag, without ROS",
        description="Feed a bag's image (+ depth) and camera_info messages through the same core as the ROS "
                    "node; write a rosbag2 with /odom, /tf, /path, /vo/status and /diagnostics into "
                    "OUTPUT/bag plus the files of `kp-vo run` into OUTPUT. As with `kp-vo run`, the files "
                    "of an earlier run in OUTPUT are replaced only when this run succeeds.")
    bag.add_argument("input", help="rosbag2 folder or ROS 1 .bag file")
    bag.add_argument("--output", default="outputs/bag", help="output folder (default: outputs/bag); existing "
                                                             "results in it are replaced")
    bag.add_argument("--image-topic", help="sensor_msgs/Image topic (default: the only non-depth Image topic)")
    bag.add_argument("--depth-topic", help="depth Image topic (default: the Image topic named *depth*)")
    bag.add_argument("--camera-info-topic", help="sensor_msgs/CameraInfo topic (default: the closest to the image)")
    bag.add_argument("--mono", action="store_true", help="ignore depth topics (monocular VO)")
    bag.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="output bag storage")
    add_config_arguments(bag)
    add_progress_argument(bag)
    bag.set_defaults(func=run_bag_command)

    make = subparsers.add_parser(
        "make-bag", help="write a KITTI/TUM folder or a synthetic sequence as a rosbag2 for `ros2 bag play`",
        description="Write Image, CameraInfo, static TF (base_link -> camera_optical_frame) and ground-truth "
                    "TF (gt_world -> gt_camera, also /ground_truth) of a sequence into a new rosbag2.")
    add_source_arguments(make)
    make.add_argument("--output", required=True, help="the rosbag2 folder to create (must not exist)")
    make.add_argument("--storage", choices=["sqlite3", "mcap"], default="sqlite3", help="bag storage plugin")
    add_progress_argument(make)
    make.set_defaults(func=make_bag_command)


class _Counted:
    """``odometry`` whose ``process`` also advances a progress bar: run_bag's loop is not the CLI's."""

    def __init__(self, odometry, bar):
        self._odometry, self._bar = odometry, bar

    def process(self, frame):
        try:
            return self._odometry.process(frame)
        finally:
            self._bar.update(1)

    def __getattr__(self, name: str):
        return getattr(self._odometry, name)


def run_bag_command(args: argparse.Namespace) -> int:
    from kp_vo.bridge.bag_runner import choose_topics, run_bag, segment_to_run_result
    from kp_vo.bridge.bagio import bag_topics, message_counts
    from kp_vo.cli.common import apply_overrides, load_configs
    from kp_vo.cli.run import format_metrics
    from kp_vo.fileio import atomic_dir
    from kp_vo.pipeline import build_odometry, write_outputs

    config, node_config = load_configs(args.config)
    config = apply_overrides(config, args)
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise InvalidInputError(f"output {output} exists and is not a folder")
    odometry = build_odometry(config)
    total = None
    if show_progress(args):
        topics = choose_topics(bag_topics(args.input), args.image_topic, args.depth_topic, args.camera_info_topic,
                               args.mono)
        total = message_counts(args.input).get(topics.image)
    # The bag is written under a temporary name and moved to OUTPUT/bag only once every output is written.
    with atomic_dir(output / "bag") as partial_bag, progress_bar(args, total=total) as bar:
        summary = run_bag(args.input, partial_bag, _Counted(odometry, bar), node_config, args.image_topic,
                          args.depth_topic, args.camera_info_topic, args.mono, args.storage)
        if not summary.segments:
            raise DatasetError(f"no frame of {args.input} could be processed (problems: {summary.problems})")
        monocular = summary.topics.depth is None
        many = len(summary.segments) > 1
        reports = [format_metrics(write_outputs(segment_to_run_result(segment, monocular),
                                                output / f"segment_{k}" if many else output, config))
                   for k, segment in enumerate(summary.segments)]
    print("\n".join(reports))
    print(f"frames processed: {summary.frames_processed}  problems: {summary.problems or 'none'}")
    print(f"output bag: {(output / 'bag').resolve()}  outputs: {output.resolve()}")
    return 0


def make_bag_command(args: argparse.Namespace) -> int:
    from kp_vo.bridge.make_bag import make_bag
    from kp_vo.settings import parse_options

    count = make_bag(args.path, args.output, sequence=args.sequence, storage=args.storage,
                     progress=show_progress(args), max_frames=args.max_frames, start=args.start, stride=args.stride,
                     **parse_options(args.option, "--option"))
    print(f"wrote {count} frames to {Path(args.output).resolve()}")
    return 0
