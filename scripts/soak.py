"""Soak benchmark of the VO node core: N frames through ``VoNodeCore`` as the ROS node runs it, watching for
anything that grows without bound (the run itself is ``kp_vo.bridge.soak``; ``test/test_soak.py`` runs it
at a reduced size).

    .venv/bin/python scripts/soak.py [--frames 2000] [--source synthetic:room | synthetic:street | kitti:00]
                                     [--loop pingpong|wrap] [--loop-frames 200] [--width 320 --height 240]
                                     [--path-max-length N] [--archive-max-mb MB]
                                     [--every 100] [--output soak.json]

Printed as a table (one row per ``--every`` frames: RSS, window, path, archive, latency percentiles) and
written as JSON with a verdict per series: its slope per 1000 frames after the warm-up (first ``--warmup``
share of the frames), whether it grows, and the configured bound that stops it (None: grows without bound).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kp_vo.bridge.soak import SoakSettings, format_sample, run_soak  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--source", default="synthetic:room", help="synthetic:room, synthetic:street or kitti:00")
    parser.add_argument("--loop", choices=("pingpong", "wrap"), default="pingpong")
    parser.add_argument("--loop-frames", type=int, default=200, help="source frames in the loop")
    parser.add_argument("--width", type=int, default=None, help="synthetic image width (default 320)")
    parser.add_argument("--height", type=int, default=None, help="synthetic image height (default 240)")
    parser.add_argument("--path-max-length", type=int, default=None, help="ros.path_max_length (default 5000)")
    parser.add_argument("--archive-max-mb", type=float, default=None, help="odometry.archive_max_mb (default 0: none)")
    parser.add_argument("--every", type=int, default=100, help="frames per sample / latency chunk")
    parser.add_argument("--warmup", type=float, default=0.25, help="share of the frames before growth is judged")
    parser.add_argument("--output", default="soak.json")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = SoakSettings(frames=args.frames, source=args.source, loop=args.loop, loop_frames=args.loop_frames,
                            width=args.width, height=args.height, every=args.every, warmup=args.warmup)
    if args.path_max_length is not None:
        settings.ros["path_max_length"] = args.path_max_length
    if args.archive_max_mb is not None:
        settings.overrides["odometry"] = {"archive_max_mb": args.archive_max_mb}
    result = run_soak(settings, None if args.quiet else lambda s: print(format_sample(s), flush=True))
    Path(args.output).write_text(json.dumps(result, indent=1))
    print(f"latency after warm-up (ms): {result['latency_after_warmup_ms']}; slowest frame in the core "
          f"{result['core_max_ms']:.1f} ms")
    for name, v in result["verdicts"].items():
        if v.get("grows") is None:
            continue
        print(f"{name:18s} after warm-up {v['after_warmup']:10.2f} -> last {v['last']:10.2f}  slope "
              f"{v['slope_per_1000_frames']:9.2f}/1000 frames  {v['verdict']}")
    print(f"written {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
