"""Cost of the odometry's keyframe archive on the tracking path: milliseconds per keyframe append as
the archive grows, and the stall of the first relocalization query (index build included).

    .venv/bin/python scripts/bench_archive.py [--points 500000] [--per-keyframe 300] [--dim 64]

Keyframes of random unit 64-D float descriptors (KeypointNet-like) are appended the way
``VisualOdometry._archive_keyframe`` does (``Repository.add_points``), ``--interval-ms`` apart (the
tracking between keyframes), once through a query made early (the tracker lost once: the index
exists and is kept up to date) and once never queried before the end (the first relocalization
comes late). Timings are wall-clock on this machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from kp_vo.features.base import Features
from kp_vo.reloc.repository import Repository


def keyframe(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, Features]:
    desc = rng.standard_normal((n, dim)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    features = Features(rng.uniform(0, 640, (n, 2)).astype(np.float32), rng.uniform(0, 1, n).astype(np.float32),
                        desc, "l2")
    return rng.uniform(-50, 50, (n, 3)), features


def fill(points: int, per_keyframe: int, dim: int, interval_s: float, query_early: bool) -> dict:
    rng = np.random.default_rng(0)
    repo = Repository("l2", dim, "bench")
    _, probe = keyframe(rng, per_keyframe, dim)
    append_ms, k = [], 0
    while len(repo) < points:
        xyz, features = keyframe(rng, per_keyframe, dim)
        t = time.perf_counter()
        repo.add_points(xyz, features, k, k * 10**8, np.eye(4))
        append_ms.append(1e3 * (time.perf_counter() - t))
        time.sleep(interval_s)
        k += 1
        if query_early and k == 20:
            repo.index.search(probe.descriptors, 4)
    t = time.perf_counter()
    repo.index.search(probe.descriptors, 4)
    query_ms = 1e3 * (time.perf_counter() - t)
    t = time.perf_counter()
    repo.index.search(probe.descriptors, 4)
    steady_ms = 1e3 * (time.perf_counter() - t)
    tail = append_ms[-max(1, len(append_ms) // 10):]
    return {"keyframes": k, "points": len(repo), "append_mean_ms": float(np.mean(append_ms)),
            "append_last10pct_mean_ms": float(np.mean(tail)), "append_max_ms": float(np.max(append_ms)),
            "append_p99_ms": float(np.percentile(append_ms, 99)),
            "first_query_ms": query_ms, "next_query_ms": steady_ms, "index_kind": repo.index.kind}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=500_000, help="archive size reached (map points)")
    parser.add_argument("--per-keyframe", type=int, default=300, help="points archived per keyframe")
    parser.add_argument("--dim", type=int, default=64, help="descriptor width")
    parser.add_argument("--interval-ms", type=float, default=20.0,
                        help="time between keyframe appends (default 20: 50 keyframes a second)")
    args = parser.parse_args()
    for query_early in (False, True):
        r = fill(args.points, args.per_keyframe, args.dim, args.interval_ms / 1e3, query_early)
        print(f"{'queried early' if query_early else 'first query at the end'}: {r['keyframes']} keyframes, "
              f"{r['points']} points ({r['index_kind']} index); append mean {r['append_mean_ms']:.2f} ms, "
              f"last 10 % {r['append_last10pct_mean_ms']:.2f} ms, 99th percentile {r['append_p99_ms']:.1f} ms, "
              f"max {r['append_max_ms']:.1f} ms; "
              f"first query {r['first_query_ms']:.1f} ms, next {r['next_query_ms']:.1f} ms")


if __name__ == "__main__":
    main()
