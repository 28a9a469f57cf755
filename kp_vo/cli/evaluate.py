"""``kp-vo eval keypoints|matches|viewsynth|depth|objects``: model evaluations, several extractors per run.

    kp-vo eval keypoints --extractors orb sift keypointnet:models/X.onnx [--pairs 50] ...
        HPatches-style keypoint metrics (``kp_vo.eval.keypoints``) on the same pairs: held-out
        homography pairs from a photo folder, or an HPatches folder.
    kp-vo eval matches ../shared/data/kitti --sequence 07 --extractors orb keypointnet:models/X.onnx
        Match precision on a real sequence with ground-truth poses (``kp_vo.eval.matches``): distance of
        matched keypoints from their ground-truth epipolar lines, share within 1 px and beyond 3 px.
    kp-vo eval viewsynth --extractors orb sift viewsynth:models/viewsynth.onnx
                         [--map-source SRC --query-source SRC ...]
        ViewSynth relocalization protocol (``kp_vo.eval.reloc_room``): MMA at 0.1/0.25/0.5 m and
        localization accuracy at (0.5 m, 2 deg), (1 m, 5 deg), (5 m, 10 deg); by default on the
        synthetic RGB-D room (map one trajectory, localize another), else map one dataset sequence
        (depth + ground truth, e.g. a 7-Scenes train sequence) and localize another.
    kp-vo eval depth --models constant depthnet stereo [--source synthetic:street --seed S | --source DRIVE ...]
        Depth metrics (``kp_vo.eval.depth``: abs rel, sq rel, RMSE, RMSE log, delta < 1.25^k) with per-image
        median scaling and at each model's fixed scale (``kp_vo.eval.depth_benchmark``), against the
        ground-truth depth of held-out synthetic streets, of any dataset sequence with depth, or the
        projected LiDAR of a KITTI raw drive (Eigen crop, 80 m cap; stereo baseline from its rectified pairs).
    kp-vo eval objects CHECKPOINT [--pairs 100]
        3D-object KeypointNet relative-pose angular error on held-out rendered view pairs
        (``kp_vo.eval.objects``).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def image_size(text: str) -> tuple[int, int]:
    """argparse type of an HxW size option, e.g. 240x320."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 240x320, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} too small")
    return h, w


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate models (keypoint metrics, match precision, ViewSynth "
                                           "relocalization, monocular depth, object keypoints)")
    sub = p.add_subparsers(dest="eval_command", required=True)
    k = sub.add_parser("keypoints", help="HPatches-style repeatability / localization / correctness / "
                       "matching score")
    k.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                   help="orb, sift, keypointnet:FILE.onnx|.safetensors, keypointnet_vgg:FILE.safetensors; "
                   "append extractor options as ,key=value (e.g. keypointnet:F.onnx,scale=0.5)")
    k.add_argument("--photos", default="../shared/data/photos",
                   help="photo folder: pairs from its held-out photos (sorted index %% holdout == 0)")
    k.add_argument("--hpatches", default=None, help="HPatches folder (used instead of --photos)")
    k.add_argument("--pairs", type=int, default=50, help="number of photo pairs")
    k.add_argument("--size", type=image_size, default=(240, 320), help="HxW (240x320 or 480x640)")
    k.add_argument("--num-keypoints", type=int, default=None, help="default 300 at 240x320, 1000 larger")
    k.add_argument("--seed", type=int, default=0, help="seed of the homographies")
    k.add_argument("--holdout-every", type=int, default=5, help="held-out photo period (as in training)")
    k.add_argument("--eps", type=float, default=3.0, help="distance threshold (px) of repeatability / MS")
    k.add_argument("--json", default=None, help="also write the results to this JSON file")
    k.set_defaults(func=handle_keypoints)

    m = sub.add_parser("matches", help="match precision against ground-truth epipolar geometry on a real sequence")
    m.add_argument("source", help="dataset with ground-truth poses (KITTI root with --sequence, TUM folder, ...)")
    m.add_argument("--sequence", default=None, help="sequence inside SOURCE, e.g. 07")
    m.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                   help="as for 'eval keypoints' (orb, sift, keypointnet:FILE.onnx, ...; ,key=value options)")
    m.add_argument("--num-keypoints", type=int, default=2000, help="keypoints per frame (default 2000)")
    m.add_argument("--gaps", type=int, nargs="+", default=[1, 3], help="frame gaps of the pairs (default 1 3)")
    m.add_argument("--every", type=int, default=5, help="first frames of the pairs are every N-th frame (default 5)")
    m.add_argument("--ratio", type=float, default=0.9, help="Lowe ratio of the matching (1 disables; default 0.9)")
    m.add_argument("--start", type=int, default=0, help="first frame")
    m.add_argument("--max-frames", type=int, default=None, help="frames read from SOURCE")
    m.add_argument("--json", default=None, help="also write the results to this JSON file")
    m.set_defaults(func=handle_matches)

    v = sub.add_parser("viewsynth", help="ViewSynth relocalization protocol: MMA and localization accuracy")
    v.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                   help="orb, sift, viewsynth:FILE.onnx|.safetensors (depth), keypointnet:FILE.onnx|.safetensors; "
                   "append extractor options as ,key=value")
    v.add_argument("--map-source", default=None,
                   help="dataset to map (depth + ground-truth poses; any kp_vo.datasets.open_sequence source); "
                        "default: the synthetic room experiment")
    v.add_argument("--query-source", default=None, help="dataset to localize against the map (with --map-source)")
    for role in ("map", "query"):
        v.add_argument(f"--{role}-sequence", default=None, help=f"sequence inside the {role} source (7-Scenes: seq-01)")
        v.add_argument(f"--{role}-start", type=int, default=0, help=f"first {role} frame")
        v.add_argument(f"--{role}-stride", type=int, default=1, help=f"use every N-th {role} frame")
        v.add_argument(f"--{role}-max-frames", type=int, default=None, help=f"at most this many {role} frames")
        v.add_argument(f"--{role}-option", action="append", metavar="KEY=VALUE",
                       help=f"extra {role} loader option (YAML value); repeatable")
    v.add_argument("--num-map", type=int, default=30, help="room: mapped frames (one circular trajectory)")
    v.add_argument("--num-query", type=int, default=10, help="room: query frames (another trajectory)")
    v.add_argument("--size", type=image_size, default=(240, 320), help="room: rendered HxW")
    v.add_argument("--scene", choices=("room", "random_room"), default="room",
                   help="room: the fixed synthetic room, or random_room: the room of random layout --seed "
                        "(models/viewsynth.onnx trained on seeds 0-39; 100000-100001 validated it)")
    v.add_argument("--seed", type=int, nargs="+", default=[0],
                   help="room seed(s); several: each room is mapped and queried on its own, and the summary "
                        "pools the queries of all rooms")
    v.add_argument("--num-keypoints", type=int, default=1000, help="keypoints extracted per frame")
    v.add_argument("--top-k", type=int, default=300, help="keypoints kept per mapped frame (ViewSynth paper: 50)")
    v.add_argument("--query-top-k", type=int, default=None, help="query keypoints used (default all)")
    v.add_argument("--every", type=int, default=1, help="map every N-th map frame")
    v.add_argument("--match-mode", choices=("mutual", "ratio", "topk"), default="mutual",
                   help="mutual nearest neighbours (default), Lowe ratio, or every top-k candidate")
    v.add_argument("--no-depth", action="store_true", help="ignore query depth (RANSAC-PnP only)")
    v.add_argument("--threshold-m", type=float, default=0.05, help="3D-3D RANSAC inlier threshold (metres)")
    v.add_argument("--threshold-px", type=float, default=3.0, help="PnP RANSAC inlier threshold (pixels)")
    v.add_argument("--device", default="cpu", help="learned extractors: cpu, cuda or auto")
    v.add_argument("--json", default=None, help="also write the results to this JSON file")
    v.set_defaults(func=handle_viewsynth)

    d = sub.add_parser("depth", help="depth metrics against ground-truth depth (synthetic streets, depth images, "
                                     "KITTI raw LiDAR), median-scaled and at fixed scale")
    d.add_argument("--models", nargs="+", default=["constant", "depthnet"],
                   help="constant (one depth everywhere: the no-information baseline), depthnet (the configured or "
                        "shipped model), depthnet:FILE.onnx|.safetensors, stereo (OpenCV StereoSGBM on the rectified "
                        "pair: KITTI raw); append options as ,key=value (e.g. depthnet,scale=22.94 or "
                        "stereo,num_disparities=128)")
    d.add_argument("--source", default="synthetic:street",
                   help="synthetic:street (streets --seed; models/depthnet.onnx trained on seeds 0-39, "
                        "validated on 100000-100001), a dataset with depth images, or a KITTI raw drive (LiDAR "
                        "ground truth on the frames with a velodyne scan)")
    d.add_argument("--sequence", default=None, help="sequence inside --source (KITTI raw day folder: the drive)")
    d.add_argument("--seed", type=int, nargs="+", default=[200000],
                   help="synthetic street seed(s); the figures are means over the images of all streets")
    d.add_argument("--start", type=int, default=0, help="first frame")
    d.add_argument("--stride", type=int, default=None, help="use every N-th frame (default 5; KITTI raw: 1)")
    d.add_argument("--max-frames", type=int, default=None,
                   help="frames per street / sequence (default 20; KITTI raw: all)")
    d.add_argument("--size", type=image_size, default=None, help="synthetic: rendered HxW (default the scene's, 192x640)")
    d.add_argument("--min-depth", type=float, default=1e-3, help="ground truth below this is ignored (m)")
    d.add_argument("--max-depth", type=float, default=80.0, help="ground truth above this is ignored; "
                                                                 "predictions are clipped to it (m)")
    d.add_argument("--crop", choices=("auto", "eigen", "none"), default="auto",
                   help="scored region: eigen = the KITTI LiDAR protocol's crop (auto: on KITTI raw only)")
    d.add_argument("--scaling", nargs="+", choices=("median", "fixed"), default=["median", "fixed"],
                   help="median: per-image median scaling; fixed: the model's own scale (depthnet: its scale "
                        "option, stereo: metric; constant has none)")
    d.add_argument("--no-median-scaling", action="store_const", const=["fixed"], dest="scaling",
                   help="same as --scaling fixed")
    d.add_argument("--config", default=None,
                   help="pipeline or ROS parameter YAML whose depth.options (scale, model_path, ...) configure "
                        "the plain 'depthnet' model")
    d.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    d.add_argument("--json", default=None, help="also write the results to this JSON file")
    d.set_defaults(func=handle_depth)

    o = sub.add_parser("objects", help="3D-object KeypointNet relative-pose angular error on held-out rendered pairs")
    o.add_argument("model", help="exported .onnx, training checkpoint (step_N.safetensors / .json) or "
                                 "weights/object_keypointnet.safetensors")
    o.add_argument("--config", default=None,
                   help="training config YAML for the render size and distance (default: the run's "
                        "config_used.yaml when the model lies in a training output folder, else the recipe defaults)")
    o.add_argument("--pairs", type=int, default=100, help="held-out view pairs")
    o.add_argument("--num-objects", type=int, default=10, help="held-out chairs the pairs cycle through")
    o.add_argument("--size", type=int, default=None, help="render size S (SxS); overrides the config")
    o.add_argument("--distance", type=float, default=None,
                   help="camera distance = depth offset z0; overrides the config")
    o.add_argument("--seed", type=int, default=0, help="seed of the held-out chairs and views")
    o.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    o.add_argument("--json", default=None, help="also write the results (and every pair's error) to this JSON file")
    o.set_defaults(func=handle_objects)


def handle_keypoints(args: argparse.Namespace) -> int:
    from kp_vo.eval.keypoints import (
        default_num_keypoints,
        evaluate_extractors,
        format_table,
        homography_pairs,
        hpatches_pairs,
    )

    h, w = args.size
    n_kp = args.num_keypoints or default_num_keypoints(h, w)
    if args.hpatches:
        pairs, source = list(hpatches_pairs(args.hpatches, (h, w))), f"HPatches {args.hpatches}"
    else:
        pairs = list(homography_pairs(args.photos, args.pairs, (h, w), args.seed, args.holdout_every))
        source = f"held-out photos {args.photos}"
    rows = evaluate_extractors(args.extractors, pairs, n_kp, args.eps)
    header = f"{len(pairs)} pairs from {source}, {h}x{w}, {n_kp} keypoints, eps {args.eps:g} px"
    print(header)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": [r.as_row() for r in rows]}, indent=2))
    return 0


def handle_matches(args: argparse.Namespace) -> int:
    from kp_vo.cli.common import open_source
    from kp_vo.pipeline import extractor_from_spec
    from kp_vo.eval.matches import evaluate_match_precision, format_table

    frames = open_source(args.source, args.sequence, args.start, 1, args.max_frames)
    rows = []
    for spec in args.extractors:
        extractor = extractor_from_spec(spec, args.num_keypoints)
        rows += evaluate_match_precision(extractor, frames, args.gaps, args.every, args.ratio, label=spec)
    header = (f"{len(frames)} frames of {args.source} {args.sequence or ''}, pairs (i, i + gap) every {args.every} "
              f"frames, {args.num_keypoints} keypoints, mutual matches with ratio {args.ratio:g}")
    print(header)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": [r.as_row() for r in rows]}, indent=2))
    return 0


def _open_role(args: argparse.Namespace, role: str):
    from kp_vo.cli.common import open_source

    def arg(name: str):
        return getattr(args, f"{role}_{name}")

    return open_source(arg("source"), arg("sequence"), arg("start"), arg("stride"), arg("max_frames"), arg("option"))


def handle_viewsynth(args: argparse.Namespace) -> int:
    from kp_vo.errors import InvalidInputError
    from kp_vo.eval.reloc_room import room_experiment
    from kp_vo.pipeline import extractor_from_spec
    from kp_vo.reloc.evaluation import format_summary_table, map_and_localize, pooled_summary, with_ground_truth
    from kp_vo.reloc.localizer import LocalizerConfig

    if (args.map_source is None) != (args.query_source is None):
        raise InvalidInputError("give both --map-source and --query-source, or neither (synthetic room)")
    if not (args.threshold_m > 0 and args.threshold_px > 0):
        raise InvalidInputError(f"RANSAC thresholds must be > 0, got --threshold-m {args.threshold_m} "
                                f"--threshold-px {args.threshold_px}")
    config = LocalizerConfig(query_top_k=args.query_top_k, match_mode=args.match_mode, use_depth=not args.no_depth,
                             threshold_m=args.threshold_m, threshold_px=args.threshold_px)
    # Build every extractor first so that a bad spec fails before any long run.
    extractors = {spec: extractor_from_spec(spec, args.num_keypoints, args.device) for spec in args.extractors}
    summaries: dict[str, dict] = {}
    if args.map_source is None:
        h, w = args.size
        seeds = " ".join(str(s) for s in args.seed)
        setup = (f"synthetic {args.scene} (seed {seeds}): {args.num_map} mapped frames, {args.num_query} queries "
                 f"from another trajectory per room, {h}x{w}")
        for spec, extractor in extractors.items():
            summaries[spec] = pooled_summary([
                room_experiment(extractor, top_k=args.top_k, num_map=args.num_map, num_query=args.num_query,
                                seed=seed, width=w, height=h, config=config, kind=args.scene)
                for seed in args.seed])
    else:
        map_seq, query_seq = _open_role(args, "map"), _open_role(args, "query")
        if not map_seq.has_depth or map_seq.ground_truth() is None:
            raise InvalidInputError(f"{args.map_source}: mapping needs depth images and ground-truth poses")
        if query_seq.ground_truth() is None:
            raise InvalidInputError(f"{args.query_source}: queries need ground-truth poses to be scored")
        setup = (f"map {map_seq.name} ({len(map_seq)} frames, every {args.every}), "
                 f"queries {query_seq.name} ({len(query_seq)} frames)")
        for spec, extractor in extractors.items():
            summaries[spec] = map_and_localize(extractor, with_ground_truth(iter(map_seq)), iter(query_seq),
                                               top_k=args.top_k, every=args.every, config=config).summary
    header = f"{setup}; {args.num_keypoints} keypoints per frame, top {args.top_k} mapped"
    print(header)
    print(format_summary_table(summaries))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": summaries}, indent=2))
    return 0


def handle_depth(args: argparse.Namespace) -> int:
    from kp_vo.cli.common import open_source
    from kp_vo.datasets.kitti_raw import is_kitti_raw
    from kp_vo.errors import InvalidInputError
    from kp_vo.eval.depth import eigen_crop
    from kp_vo.eval.depth_benchmark import (
        benchmark_depth,
        depth_model_from_spec,
        format_depth_table,
        samples_from_sequence,
    )

    depthnet_options = {}
    if args.config:
        from kp_vo.cli.common import load_configs

        depth = load_configs(args.config)[0].depth
        if depth.estimator in ("", "depthnet"):
            depthnet_options = dict(depth.options)
    models = [depth_model_from_spec(spec, args.device, depthnet_options) for spec in args.models]
    synthetic = args.source.startswith("synthetic")
    lidar = not synthetic and is_kitti_raw(args.source)       # every frame with a LiDAR scan by default
    stride = args.stride if args.stride is not None else (1 if lidar else 5)
    max_frames = args.max_frames if args.max_frames is not None else (None if lidar else 20)
    options = []
    if args.size is not None:
        options += [f"height={args.size[0]}", f"width={args.size[1]}"]
    sequences = [open_source(args.source, args.sequence, args.start, stride, max_frames,
                             options + ([f"seed={seed}"] if synthetic else []))
                 for seed in (args.seed if synthetic else [None])]
    if not lidar and not all(seq.has_depth for seq in sequences):
        raise InvalidInputError(f"{args.source}: depth evaluation needs ground-truth depth images or LiDAR scans")
    samples = [s for seq in sequences for s in samples_from_sequence(seq)]   # read / rendered once for every model
    crop = args.crop == "eigen" or (args.crop == "auto" and lidar)
    mask = eigen_crop(*samples[0].depth.shape) if crop and samples else None
    rows = benchmark_depth(models, samples, args.scaling, args.min_depth, args.max_depth, mask)
    where = f"{args.source} seeds {' '.join(map(str, args.seed))}" if synthetic else sequences[0].name
    frames = f"frames from {args.start}, stride {stride}"
    truth = f"projected LiDAR of the frames with a scan, {frames}" if lidar else frames
    header = (f"{len(samples)} images of {where} ({truth}), depth in ({args.min_depth:g}, {args.max_depth:g}) m"
              f"{', Eigen crop' if crop else ''}")
    print(header)
    print(format_depth_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": rows}, indent=2))
    return 0


def _object_data_config(args: argparse.Namespace):
    """(ObjectDataConfig, where it came from): --config, else the training run's config_used.yaml, else defaults."""
    from kp_vo.config import load_config
    from kp_vo.training.recipes.object_keypoints import ObjectKeypointsConfig

    path = Path(args.config) if args.config else Path(args.model).resolve().parent.parent / "config_used.yaml"
    if args.config or path.is_file():
        return load_config(ObjectKeypointsConfig, path).data, str(path)
    return ObjectKeypointsConfig().data, "recipe defaults"


def handle_objects(args: argparse.Namespace) -> int:
    from kp_vo.eval.objects import (
        ObjectKeypointModel,
        evaluate_pairs,
        held_out_pairs,
        no_rotation_baseline,
    )

    data, origin = _object_data_config(args)
    size = args.size if args.size is not None else data.size
    distance = args.distance if args.distance is not None else data.distance
    model = ObjectKeypointModel(args.model, device=args.device)
    pairs = held_out_pairs(args.pairs, size, distance, args.num_objects, args.seed)
    metrics = evaluate_pairs(model.predict, pairs, z_offset=distance)
    header = (f"{model.description}: {len(pairs)} held-out view pairs of {args.num_objects} unseen chairs, "
              f"{size}x{size}, distance {distance:g} (from {origin})")
    if not model.trained:
        header += "; the model is marked UNTRAINED"
    baseline = no_rotation_baseline(pairs)
    print(header)
    print(f"{'':<22} {'pairs':>6} {'mean_deg':>9} {'median_deg':>10} {'<10deg':>7} {'<30deg':>7}")
    for name, m in (("model", metrics), ("no rotation (R = I)", baseline)):
        print(f"{name:<22} {len(pairs):>6d} {m.mean_deg:9.2f} {m.median_deg:10.2f} {m.under[10.0]:7.3f} "
              f"{m.under[30.0]:7.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": metrics.as_dict(),
                                               "no_rotation_baseline": baseline.as_dict(),
                                               "errors_deg": metrics.errors_deg.tolist()}, indent=2))
    return 0
