"""``kp-vo run PATH``: visual odometry over a dataset folder or the built-in synthetic sequence."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kp_vo.cli.common import add_config_arguments, add_source_arguments, open_source, pipeline_config
from kp_vo.cli.progress import add_progress_argument, show_progress
from kp_vo.config import ConfigError

log = logging.getLogger(__name__)


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
    from kp_vo.pipeline import MemoizedExtractor, build_extractor, build_odometry, run_frames, write_outputs

    if args.seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {args.seeds}")
    config = pipeline_config(args)
    sequence = open_source(args.path, args.sequence, args.start, args.stride, args.max_frames, args.option)
    extractor = build_extractor(config.extractor)
    odometry = build_odometry(config, MemoizedExtractor(extractor) if args.seeds > 1 else extractor)
    log.info("%s: %d frames, extractor %s", sequence.name, len(sequence), config.extractor.name)
    result = run_frames(sequence, odometry, total=len(sequence), progress=show_progress(args))
    reruns = {}
    for seed in range(config.odometry.seed + 1, config.odometry.seed + args.seeds):
        odometry.reseed(seed)
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
