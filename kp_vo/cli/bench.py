"""``kp-vo bench``: per-stage latency and frames per second of the whole VO, one row per extractor.

Every configuration runs on the same frames in the same process, so the ratios between rows
are meaningful even on a noisy machine; absolute numbers are for this machine only.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from kp_vo.cli.run import add_config_arguments, add_source_arguments, open_source, pipeline_config
from kp_vo.config import merge, to_dict
from kp_vo.pipeline import STAGES, build_odometry, run_frames, timing_summary


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="per-stage latency and FPS of the VO for several extractors")
    add_source_arguments(parser)
    add_config_arguments(parser)
    parser.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                        help="extractor names to compare (default: orb sift); the first is the baseline")
    parser.add_argument("--warmup", type=int, default=3, help="frames run before timing starts (default 3)")
    parser.add_argument("--output", default="outputs/bench.json", help="JSON report path")
    parser.set_defaults(func=bench, max_frames=None)


def bench(args: argparse.Namespace) -> int:
    base = pipeline_config(args)
    # Decode once, timed on its own, so every configuration then runs on identical in-memory frames.
    t = time.perf_counter()
    frames = list(open_source(args))
    decode_ms = 1e3 * (time.perf_counter() - t) / max(1, len(frames))
    rows = []
    for name in args.extractors:
        config = merge(base, {"extractor": {"name": name}})
        odometry = build_odometry(config)
        result = run_frames(frames, odometry, total=len(frames), progress=False)
        timings = result.timings[args.warmup:] or result.timings
        summary = timing_summary(timings)
        summary["decode_ms"] = decode_ms
        summary["fps"] = 1e3 / (decode_ms + summary["total_ms"])
        row = {"extractor": name, **summary,
               "frames": len(timings), "tracking_share": result.states.count("tracking") / max(1, len(result.states))}
        rows.append(row)
    baseline = rows[0]["total_ms"]
    for row in rows:
        row["speed_vs_baseline"] = baseline / row["total_ms"] if row["total_ms"] > 0 else float("nan")
    h, w = frames[0].image.shape[:2]
    report = {"source": args.path, "image_size": [h, w], "machine": platform.processor() or platform.machine(),
              "baseline": args.extractors[0], "rows": rows, "config": to_dict(base)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, default=_default))
    print(f"{len(frames)} frames of {w}x{h} from {args.path}; FPS counts decode + total; "
          f"speed is relative to {args.extractors[0]} (same run)")
    print(f"{'extractor':<14}" + "".join(f"{s + ' ms':>12}" for s in STAGES) + f"{'FPS':>8}{'speed':>9}")
    for row in rows:
        print(f"{row['extractor']:<14}" + "".join(f"{row[s + '_ms']:>12.1f}" for s in STAGES)
              + f"{row['fps']:>8.1f}{row['speed_vs_baseline']:>9.2f}x")
    print(f"report written to {args.output}")
    return 0


def _default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)
