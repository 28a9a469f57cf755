"""Relocalization index scale benchmark: build time, query latency, memory and recall vs map size.

For each repository size N (10^4 .. --max-size) it makes N synthetic descriptors, builds the index
that ``kp_vo.reloc.index`` picks for that size (or --kind), and times searches of query "frames"
(batches of --queries descriptors, k=--k neighbours, as the localizer does). Queries are noisy
re-observations of random map descriptors (as a revisited keypoint is); recall@1 is measured
against exact search (IndexFlatL2 / IndexBinaryFlat) run on the same queries in the same run.

How hard the queries are matters: when the query noise is larger than the spread of a descriptor
cluster, the exact nearest neighbour is a near-tie among cluster members that no matcher could
use (Lowe's ratio test rejects it) and recall against it measures noise. The default float noise
(--query-noise 0.04 per dimension before re-normalisation, 128-D clustered data) puts the median
ratio of the nearest to the second-nearest distance at ~0.76, just under Lowe's 0.8: a typical
matchable keypoint. The report gives that median ratio and how often the exact nearest neighbour
is the descriptor the query was made from, so each figure can be read against the difficulty.

Descriptors ("--data"):
  clustered  Gaussian clusters (N/50 centres) around which descriptors scatter (realistic: visual
             words); L2-normalised float32 of --dim, or packed bits flipped around binary centres.
  random     i.i.d. uniform (the worst case for any approximate index).

Usage:
  .venv/bin/python -m kp_vo.reloc.scale_benchmark --max-size 1000000 --output reloc_scale.json
Prints one JSON document (also written to --output).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from kp_vo.reloc.index import DescriptorIndex, IndexConfig

logger = logging.getLogger(__name__)


def make_descriptors(n: int, metric: str, dim: int, data: str, rng: np.random.Generator,
                     chunk: int = 200_000) -> np.ndarray:
    """(n, dim) float32 L2-normalised descriptors ("l2") or (n, dim // 8) uint8 packed bits ("hamming")."""
    if metric == "l2":
        out = np.empty((n, dim), np.float32)
        centres = rng.standard_normal((max(1, n // 50), dim)).astype(np.float32)
        for s in range(0, n, chunk):
            m = min(chunk, n - s)
            if data == "clustered":
                x = centres[rng.integers(0, len(centres), m)] + 0.35 * rng.standard_normal((m, dim), dtype=np.float32)
            else:
                x = rng.uniform(-1, 1, (m, dim)).astype(np.float32)
            out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out
    nbytes = dim // 8
    out = np.empty((n, nbytes), np.uint8)
    centres = rng.integers(0, 256, (max(1, n // 50), nbytes), dtype=np.uint8)
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        if data == "clustered":
            flips = np.packbits(rng.random((m, dim)) < 0.15, axis=1)  # ~15 % of the bits differ from the centre
            out[s:s + m] = centres[rng.integers(0, len(centres), m)] ^ flips
        else:
            out[s:s + m] = rng.integers(0, 256, (m, nbytes), dtype=np.uint8)
    return out


def make_queries(db: np.ndarray, metric: str, count: int, rng: np.random.Generator, noise: float = 0.04
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of ``count`` random database rows (a keypoint seen again from another view):
    (queries, source row ids (count,)). ``noise``: Gaussian std per dimension ("l2", then the copy is
    re-normalised) or the fraction of bits flipped ("hamming")."""
    source = rng.integers(0, len(db), count)
    rows = db[source]
    if metric == "l2":
        q = rows + noise * rng.standard_normal(rows.shape, dtype=np.float32)
        return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), source
    bits = rows.shape[1] * 8
    return rows ^ np.packbits(rng.random((count, bits)) < noise, axis=1), source


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def time_searches(index, batches: list[np.ndarray], k: int) -> tuple[list[float], list[np.ndarray]]:
    times, ids = [], []
    for b in batches:
        t = time.perf_counter()
        _, i = index.search(b, k)
        times.append(time.perf_counter() - t)
        ids.append(i)
    return times, ids


def bench_size(n: int, args: argparse.Namespace, rng: np.random.Generator) -> dict:
    t = time.perf_counter()
    db = make_descriptors(n, args.metric, args.dim, args.data, rng)
    gen_s = time.perf_counter() - t
    nprobe = {} if args.nprobe is None else {"nprobe": args.nprobe, "binary_nprobe": args.nprobe}
    config = IndexConfig(kind=args.kind, nlist=args.nlist, ivf_codes=args.ivf_codes, **nprobe,
                         ef_search=args.ef_search, threads=args.threads)
    rss0 = rss_mb()
    t = time.perf_counter()
    index = DescriptorIndex.build(db, args.metric, config, rng=rng)
    build_s = time.perf_counter() - t
    index_bytes = int(len(index.serialize())) if args.index_size else None
    sizes_q = sorted(args.queries)
    noise = args.query_noise if args.query_noise is not None else (0.04 if args.metric == "l2" else 0.05)
    made = [make_queries(db, args.metric, sizes_q[-1], rng, noise) for _ in range(args.frames)]
    batches, sources = [b for b, _ in made], [s for _, s in made]
    index.search(batches[0], args.k)  # warm-up
    latency = {}
    ann_ids = None
    for nq in sizes_q:
        times, ids = time_searches(index, [b[:nq] for b in batches], args.k)
        latency[str(nq)] = {"median_ms": round(1e3 * float(np.median(times)), 3),
                            "p90_ms": round(1e3 * float(np.percentile(times, 90)), 3),
                            "us_per_descriptor": round(1e6 * float(np.median(times)) / nq, 2)}
        ann_ids = ids
    # Exact search on the same queries (fewer at large N: it is linear in N).
    exact_frames = min(args.frames, args.frames if n <= 100_000 else args.exact_frames)
    nr = min(args.recall_queries, sizes_q[-1])
    exact = DescriptorIndex.build(db, args.metric, IndexConfig(kind="flat", threads=args.threads))
    exact_times, exact_d, exact_ids = [], [], []
    for b in batches[:exact_frames]:
        t = time.perf_counter()
        d, i = exact.search(b[:nr], 2)  # the second neighbour gives the query's distance ratio
        exact_times.append(time.perf_counter() - t)
        exact_d.append(d)
        exact_ids.append(i)
    recall = float(np.mean(np.concatenate([a[:nr, 0] == e[:, 0] for a, e in zip(ann_ids, exact_ids)])))
    d1, d2 = np.concatenate(exact_d)[:, 0], np.concatenate(exact_d)[:, 1]
    ratio = np.sqrt(d1 / np.maximum(d2, 1e-12)) if args.metric == "l2" else d1 / np.maximum(d2, 1)
    source_is_nn = np.concatenate([e[:, 0] == s[:nr] for e, s in zip(exact_ids, sources)])
    result = {
        "size": n, "index_kind": index.kind, "generate_s": round(gen_s, 3), "build_s": round(build_s, 3),
        "descriptor_bytes": int(db.nbytes), "index_bytes": index_bytes,
        "rss_growth_during_build_mb": round(max(0.0, rss_mb() - rss0), 1), "max_rss_mb": round(rss_mb(), 1),
        "k": args.k, "latency_per_frame_by_query_descriptors": latency,
        "exact_latency_ms_per_query_descriptor": round(1e3 * float(np.median(exact_times)) / nr, 3),
        "recall_queries": nr * exact_frames,
        "recall_at_1_vs_exact": round(recall, 4),
        "query_noise": noise,
        "exact_nn_is_query_source": round(float(np.mean(source_is_nn)), 4),
        "median_nn_distance_ratio": round(float(np.median(ratio)), 3),
    }
    logger.info("%s", result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--min-size", type=int, default=10_000)
    p.add_argument("--max-size", type=int, default=1_000_000, help="largest map (10^7 needs ~5 GB for 128-D floats)")
    p.add_argument("--metric", choices=("l2", "hamming"), default="l2")
    p.add_argument("--dim", type=int, default=128, help="float dimension (l2) or bits (hamming, e.g. 256 for ORB)")
    p.add_argument("--data", choices=("clustered", "random"), default="clustered")
    p.add_argument("--kind", choices=("auto", "flat", "ivf", "hnsw"), default="auto")
    p.add_argument("--nprobe", type=int, default=None,
                   help=f"IVF lists scanned (default IndexConfig: {IndexConfig().nprobe} float, "
                        f"{IndexConfig().binary_nprobe} binary)")
    p.add_argument("--nlist", type=int, default=0, help="IVF lists (0 = the IndexConfig rule, 2 sqrt(N))")
    p.add_argument("--ivf-codes", choices=("sq8", "flat"), default=IndexConfig().ivf_codes)
    p.add_argument("--query-noise", type=float, default=None,
                   help="query noise: per-dimension std (l2, default 0.04) or flipped-bit fraction (hamming, 0.05)")
    p.add_argument("--ef-search", type=int, default=64)
    p.add_argument("--queries", type=lambda t: [int(v) for v in t.split(",")], default=[50, 300],
                   help="query descriptors per frame, comma-separated (ViewSynth uses 50)")
    p.add_argument("--recall-queries", type=int, default=100, help="descriptors per frame checked against exact")
    p.add_argument("--frames", type=int, default=20, help="query frames timed per size")
    p.add_argument("--exact-frames", type=int, default=3, help="frames searched exactly above 10^5")
    p.add_argument("--k", type=int, default=4, help="neighbours per query descriptor (localizer default 4)")
    p.add_argument("--threads", type=int, default=1,
                   help="FAISS threads (0 = FAISS default; 1 is fastest on a shared, loaded machine)")
    p.add_argument("--no-index-size", dest="index_size", action="store_false", help="skip serialising the index")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if args.metric == "hamming" and args.dim % 8:
        p.error("--dim must be a multiple of 8 for hamming")
    sizes = []
    n = args.min_size
    while n <= args.max_size:
        sizes.append(n)
        n *= 10
    rng = np.random.default_rng(args.seed)
    report = {
        "benchmark": "reloc_scale", "metric": args.metric, "dim": args.dim, "data": args.data,
        "kind": args.kind, "nprobe": args.nprobe, "nlist": args.nlist, "ivf_codes": args.ivf_codes,
        "faiss_version": faiss.__version__,
        "faiss_threads": faiss.omp_get_max_threads(), "machine": platform.machine(), "python": platform.python_version(),
        "command": " ".join(sys.argv), "results": [bench_size(n, args, rng) for n in sizes],
    }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
