"""``kp-vo map build|query|info``: build a 3D keypoint map, localize a sequence against it, describe it."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kp_vo.cli.common import open_source
from kp_vo.cli.progress import add_progress_argument, progress_bar
from kp_vo.errors import InvalidInputError
from kp_vo.settings import parse_options

logger = logging.getLogger(__name__)


def _open(args: argparse.Namespace):
    """The sequence of ``args.source`` with the shared selection options and any ``--option k=v``."""
    return open_source(args.source, args.sequence, args.start, args.stride, args.max_frames, args.option)


def _add_source_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sequence", default=None, help="sequence name inside SOURCE")
    parser.add_argument("--start", type=int, default=0, help="first frame")
    parser.add_argument("--stride", type=int, default=1, help="use every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--option", action="append", metavar="KEY=VALUE",
                        help="extra loader option (YAML value), e.g. width=320; repeatable")
    parser.add_argument("--extractor-option", action="append", metavar="KEY=VALUE",
                        help="extractor option (YAML value), e.g. scale=0.5 for the shipped viewsynth model on "
                             "640x480 depth; use the same options to build and to query a map; repeatable")


def _extractor(name: str, args: argparse.Namespace):
    from kp_vo.pipeline import ExtractorConfig, build_extractor

    options = parse_options(args.extractor_option, "--extractor-option")
    if args.max_keypoints is not None:
        options["max_keypoints"] = args.max_keypoints
    return build_extractor(ExtractorConfig(name, options))


def _build(args: argparse.Namespace) -> int:
    from kp_vo.reloc.repository import build_repository

    seq = _open(args)
    if not seq.has_depth:
        raise InvalidInputError(f"{args.source}: mapping needs depth images and this sequence has none")
    extractor = _extractor(args.extractor, args)
    with progress_bar(args, seq, total=len(seq)) as frames:
        repo = build_repository(frames, extractor, top_k=args.top_k, every=args.every)
    repo.metadata.update({"source": str(args.source), "sequence": args.sequence})
    repo.save(args.output)
    print(f"{repo} -> {args.output}")
    return 0


def _query(args: argparse.Namespace) -> int:
    from kp_vo.reloc.evaluation import evaluate_localizer, write_evaluation
    from kp_vo.reloc.localizer import Localizer, LocalizerConfig
    from kp_vo.reloc.repository import Repository

    repo = Repository.load(args.map)
    name = args.extractor or repo.extractor
    if not name:
        raise InvalidInputError(f"{args.map} does not record its extractor; pass --extractor")
    config = LocalizerConfig(query_top_k=args.query_top_k, match_mode=args.match_mode, use_depth=not args.no_depth)
    localizer = Localizer(repo, _extractor(name, args), config)
    evaluation = evaluate_localizer(localizer, iter(_open(args)))
    print(json.dumps(evaluation.summary, indent=2))
    if args.output:
        paths = write_evaluation(evaluation, args.output)
        print(f"wrote {paths['metrics']} and {paths['poses']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from kp_vo.reloc.map_file import read_map_file

    _, meta = read_map_file(args.map, mmap=True, verify=not args.no_verify)
    print(json.dumps(meta, indent=2))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("map", help="build, query and inspect 3D keypoint maps (relocalization)")
    sub = parser.add_subparsers(dest="map_command", required=True)

    build = sub.add_parser("build", help="build a keypoint map from a sequence with depth and poses")
    build.add_argument("source", help="dataset folder or source understood by kp_vo.datasets.open_sequence")
    build.add_argument("--output", "-o", type=Path, required=True, help="map file to write")
    _add_source_options(build)
    build.add_argument("--extractor", default="orb", help="keypoint extractor name (default: orb)")
    build.add_argument("--max-keypoints", type=int, default=None, help="keypoints extracted per frame")
    build.add_argument("--top-k", type=int, default=300, help="keypoints kept per mapped frame (ViewSynth: 50)")
    build.add_argument("--every", type=int, default=1, help="map every N-th frame")
    add_progress_argument(build)
    build.set_defaults(func=_build)

    query = sub.add_parser("query", help="localize every frame of SOURCE against MAP and score it")
    query.add_argument("map", type=Path, help="map file written by `kp-vo map build` or a node's ~/save_map")
    query.add_argument("source", help="sequence to localize (with ground-truth poses for the scores)")
    _add_source_options(query)
    query.add_argument("--output", "-o", type=Path, default=None, help="folder for metrics.json and poses_tum.txt")
    query.add_argument("--extractor", default=None, help="default: the map's extractor")
    query.add_argument("--max-keypoints", type=int, default=None, help="keypoints extracted per query frame")
    query.add_argument("--query-top-k", type=int, default=None, help="query keypoints used (ViewSynth: 50)")
    query.add_argument("--match-mode", choices=("mutual", "ratio", "topk"), default="mutual",
                       help="mutual nearest neighbours (default), Lowe ratio, or every top-k candidate")
    query.add_argument("--no-depth", action="store_true", help="ignore query depth (RANSAC-PnP only)")
    query.set_defaults(func=_query)

    info = sub.add_parser("info", help="print a map file's metadata")
    info.add_argument("map", type=Path, help="map file")
    info.add_argument("--no-verify", action="store_true", help="skip the checksum")
    info.set_defaults(func=_info)
