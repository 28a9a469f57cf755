"""``kp-vo bench``: per-stage latency and frames per second of the whole VO, one row per configuration.

Rows are either extractor names (``--extractors orb sift``) or named partial pipeline configs
from a YAML file (``--rows FILE``, e.g. a naive fp32 KeypointNet + DepthNet-on-every-frame row
and a reduced-cost row). Every row runs on the same decoded frames in the same process and the
first row is the baseline of the ``speed`` column, so ratios hold on a noisy machine; absolute
numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from kp_vo.cli.common import add_config_arguments, add_source_arguments, open_source, pipeline_config
from kp_vo.config import ConfigError, merge, read_yaml, to_dict


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="per-stage latency and FPS of the VO for several configurations")
    add_source_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                        help="extractor names to compare (default: orb sift); the first is the baseline")
    parser.add_argument("--rows", help="YAML file {rows: {NAME: partial pipeline config, ...}} compared instead "
                                       "of --extractors; the first row is the baseline")
    parser.add_argument("--warmup", type=int, default=3, help="frames run before timing starts (default 3)")
    parser.add_argument("--output", default="outputs/bench.json", help="JSON report path")
    parser.set_defaults(func=bench)


def bench_rows(args: argparse.Namespace) -> dict[str, dict]:
    """Named partial configs to compare, in order."""
    if not args.rows:
        return {name: {"extractor": {"name": name}} for name in args.extractors}
    rows = read_yaml(args.rows, "bench rows").get("rows")
    if not isinstance(rows, dict) or not rows:
        raise ConfigError(f"{args.rows}: expected a non-empty mapping under 'rows'")
    return rows


def bench(args: argparse.Namespace) -> int:
    from kp_vo.pipeline import STAGES, build_odometry, run_frames, timing_summary

    base = pipeline_config(args)
    rows_config = bench_rows(args)
    # Decode once, timed on its own, so every configuration then runs on identical in-memory frames.
    t = time.perf_counter()
    frames = list(open_source(args.path, args.sequence, args.start, args.stride, args.max_frames, args.option))
    decode_ms = 1e3 * (time.perf_counter() - t) / max(1, len(frames))
    rows = []
    for name, overrides in rows_config.items():
        config = merge(base, overrides)
        odometry = build_odometry(config)
        result = run_frames(frames, odometry, total=len(frames), progress=False)
        timings = result.timings[args.warmup:] or result.timings
        summary = timing_summary(timings)
        summary["decode_ms"] = decode_ms
        summary["fps"] = 1e3 / (decode_ms + summary["total_ms"])
        summary["vo_fps"] = 1e3 / summary["total_ms"] if summary["total_ms"] > 0 else float("nan")
        rows.append({"row": name, **summary, "frames": len(timings), "providers": providers(odometry),
                     "tracking_share": result.states.count("tracking") / max(1, len(result.states)),
                     "config": to_dict(config)})
    baseline = rows[0]["total_ms"]
    for row in rows:
        row["speed_vs_baseline"] = baseline / row["total_ms"] if row["total_ms"] > 0 else float("nan")
    h, w = frames[0].image.shape[:2]
    report = {"source": args.path, "image_size": [h, w], "machine": platform.processor() or platform.machine(),
              "baseline": rows[0]["row"], "rows": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=_default))
    print(f"{len(frames)} frames of {w}x{h} from {args.path}; VO FPS excludes decoding; "
          f"speed is relative to {rows[0]['row']} (same run)")
    width = max(12, *(len(r["row"]) + 2 for r in rows))
    print(f"{'row':<{width}}" + "".join(f"{s + ' ms':>11}" for s in STAGES) + f"{'VO FPS':>8}{'speed':>8}{'tracked':>9}")
    for row in rows:
        print(f"{row['row']:<{width}}" + "".join(f"{row[s + '_ms']:>11.1f}" for s in STAGES)
              + f"{row['vo_fps']:>8.1f}{row['speed_vs_baseline']:>7.2f}x{100 * row['tracking_share']:>8.0f}%")
    for row in rows:
        print(f"{row['row']}: " + ", ".join(f"{k} on {v}" for k, v in row["providers"].items()))
    print(f"report written to {args.output}")
    return 0


def providers(odometry) -> dict[str, str]:
    """Where each network of the VO runs, as read back from its runtime (e.g. CUDAExecutionProvider,
    CPUExecutionProvider, torch-cuda); classical extractors run in OpenCV on the CPU."""
    used = {"extractor": getattr(odometry.extractor, "provider", "opencv-cpu")}
    estimator = odometry.depth_source.estimator
    if estimator is not None:
        used["depth"] = estimator.provider
    return used


def _default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
