"""The offline pipeline: frames in, trajectory + metrics + plots out.

The same ``VisualOdometry`` object the ROS node drives is built here from one typed config;
``run_frames`` feeds it any iterable of ``Frame`` (a dataset, a bag, a synthetic sequence) and
``write_outputs`` writes what ``kp-vo run`` promises:

    trajectory_kitti.txt  KITTI 12-value poses, one line per processed frame
    trajectory_tum.txt    TUM "t tx ty tz qx qy qz qw"
    metrics.json          ATE / RPE / KITTI drift against ground truth when there is some, timings
    config.yaml           the configuration actually used
    trajectory.png        top view, estimate vs ground truth
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from kp_vo.config import save_config
from kp_vo.errors import InvalidInputError
from kp_vo.features import create_extractor
from kp_vo.features.base import Extractor, Features, create_depth_estimator
from kp_vo.fileio import atomic_path
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry
from kp_vo.settings import parse_spec
from kp_vo.types import Frame

log = logging.getLogger(__name__)

STAGES = ("decode", "extract", "depth", "pose", "map", "total")


@dataclass
class ExtractorConfig:
    name: str = "orb"                               # registry name: orb, sift, keypointnet, ...
    options: dict = field(default_factory=dict)     # keyword options of the extractor factory


@dataclass
class DepthConfig:
    estimator: str = ""                             # registry name of a depth network ("" = none)
    options: dict = field(default_factory=dict)     # keyword options of its factory (model_path, ...)


@dataclass
class PipelineConfig:
    extractor: ExtractorConfig = field(default_factory=ExtractorConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    odometry: OdometryConfig = field(default_factory=OdometryConfig)


def _register_learned_components() -> None:
    """Import the runtime package, which registers the learned extractors and depth networks."""
    try:
        importlib.import_module("kp_vo.runtime")
    except ImportError as exc:  # a core-only install without torch / onnxruntime
        log.debug("learned extractors unavailable: %s", exc)


def build_extractor(config: ExtractorConfig) -> Extractor:
    """The extractor named in ``config``: classical, or learned (registered by ``kp_vo.runtime``)."""
    _register_learned_components()
    return create_extractor(config.name, **config.options)


def extractor_config_from_spec(spec: str, max_keypoints: int, device: str = "cpu") -> ExtractorConfig:
    """The ExtractorConfig of a text spec: "orb", "sift", "keypointnet:PATH", "keypointnet_vgg:PATH" or
    "viewsynth:PATH" (PATH .onnx -> ONNX Runtime, .safetensors -> torch, on ``device``), optionally
    followed by ",key=value" extractor options (YAML values), e.g. "keypointnet:kpn.onnx,scale=0.5,cell_nms=true",
    keeping ``max_keypoints``."""
    name, path, options = parse_spec(spec)
    if name in ("keypointnet", "keypointnet_vgg", "viewsynth"):
        if not path:
            raise InvalidInputError(f"{spec!r}: give the model file as {name}:PATH")
        backend = "onnx" if path.endswith(".onnx") else "torch"
        if backend == "torch" and name != "viewsynth":
            options.setdefault("kind", name)
        extractor = "viewsynth" if name == "viewsynth" else "keypointnet"   # an .onnx file declares its kind
        return ExtractorConfig(extractor, {"model_path": path, "backend": backend, "max_keypoints": max_keypoints,
                                           "device": device, **options})
    if path:
        raise InvalidInputError(f"{spec!r}: extractor {name!r} takes no model path")
    return ExtractorConfig(name, {"max_keypoints": max_keypoints, **options})


def extractor_from_spec(spec: str, max_keypoints: int, device: str = "cpu") -> Extractor:
    """The extractor of a text spec (``extractor_config_from_spec``)."""
    return build_extractor(extractor_config_from_spec(spec, max_keypoints, device))


def build_odometry(config: PipelineConfig, extractor: Extractor | None = None) -> VisualOdometry:
    """The VisualOdometry described by ``config`` (extractor and optional depth network included);
    ``extractor``, when given, is used instead of building ``config.extractor`` (e.g. a MemoizedExtractor
    of it)."""
    extractor = extractor or build_extractor(config.extractor)
    estimator = create_depth_estimator(config.depth.estimator, **config.depth.options) if config.depth.estimator else None
    return VisualOdometry(config.odometry, extractor, estimator)


class MemoizedExtractor:
    """``extractor`` with its features remembered per input image (by content digest), so a rerun of the
    tracker over the same frames (``kp-vo run --seeds``) skips the network. Memory grows with the
    number of distinct images: about 0.5 MB per frame for 2000 keypoints with 64-D float descriptors."""

    def __init__(self, extractor: Extractor):
        self.inner = extractor
        self.name = extractor.name
        self.metric = extractor.metric
        self.input_kind = getattr(extractor, "input_kind", "image")
        self._features: dict[bytes, Features] = {}

    def extract(self, image: np.ndarray) -> Features:
        key = hashlib.blake2b(np.ascontiguousarray(image).view(np.uint8).data, digest_size=16).digest() \
            + repr((image.shape, image.dtype.str)).encode()
        if key not in self._features:
            self._features[key] = self.inner.extract(image)
        return self._features[key]


@dataclass
class RunResult:
    """Per processed frame (bad frames are skipped and counted): indices, stamps, poses, states."""

    frame_indices: np.ndarray
    stamps_ns: np.ndarray
    T_world_cam: np.ndarray
    states: list[str]
    T_world_cam_gt: np.ndarray | None
    timings: list[dict]
    monocular: bool
    skipped_frames: list[int] = field(default_factory=list)


def _timed(frames: Iterable[Frame]) -> Iterator[tuple[Frame, float]]:
    """Yield each frame with the seconds spent producing it (reading + decoding)."""
    iterator = iter(frames)
    while True:
        t = time.perf_counter()
        try:
            frame = next(iterator)
        except StopIteration:
            return
        yield frame, time.perf_counter() - t


def run_frames(frames: Iterable[Frame], odometry: VisualOdometry, total: int | None = None,
               progress: bool = True) -> RunResult:
    """Track every frame; a frame the odometry rejects is logged in one line and skipped."""
    from tqdm import tqdm

    indices, stamps, poses, states, gts, timings, skipped = [], [], [], [], [], [], []
    monocular = True
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True)
    for frame, decode_s in _timed(frames):
        bar.update(1)
        try:
            result = odometry.process(frame)
        except InvalidInputError as exc:
            log.error("skipping frame %d: %s", frame.index, exc)
            skipped.append(frame.index)
            continue
        monocular = monocular and odometry.depth_source.kind_for(frame) == "triangulation"
        indices.append(frame.index)
        stamps.append(frame.stamp_ns)
        poses.append(result.T_world_cam)
        states.append(result.state.value)
        gts.append(frame.T_world_cam_gt)
        timings.append({"decode": decode_s, **result.timings})
        bar.set_postfix(state=result.state.value, inliers=result.num_inliers, refresh=False)
    odometry.flush()
    bar.close()
    known = [g is not None and bool(np.isfinite(g).all()) for g in gts]
    has_gt = bool(gts) and all(known)
    if not has_gt and any(g is not None for g in gts):
        log.warning("ground truth missing for %d of %d frames (e.g. beyond the loader's gap tolerance): "
                    "trajectories are written without metrics", known.count(False), len(known))
    return RunResult(np.array(indices, np.int64), np.array(stamps, np.int64),
                     np.array(poses).reshape(-1, 4, 4), states,
                     np.array(gts).reshape(-1, 4, 4) if has_gt else None, timings, monocular, skipped)


def timing_summary(timings: list[dict]) -> dict:
    """Mean milliseconds per stage and frames per second over a run."""
    summary = {}
    for stage in STAGES:
        values = [t.get(stage, 0.0) for t in timings]
        summary[f"{stage}_ms"] = 1e3 * float(np.mean(values)) if values else 0.0
    per_frame = summary["decode_ms"] + summary["total_ms"]
    summary["fps"] = 1e3 / per_frame if per_frame > 0 else 0.0
    return summary


def compute_metrics(result: RunResult) -> dict:
    """Trajectory metrics against ground truth (when present), tracking statistics and timings."""
    from kp_vo.eval.trajectory import evaluate_trajectory

    metrics: dict = {"num_frames": len(result.frame_indices), "skipped_frames": result.skipped_frames,
                     "monocular": result.monocular,
                     "states": {s: result.states.count(s) for s in sorted(set(result.states))}}
    if result.T_world_cam_gt is not None and len(result.frame_indices) >= 3:
        # Poses relative to the first processed frame, as the estimate is.
        gt = result.T_world_cam_gt
        gt = np.linalg.inv(gt[0]) @ gt
        metrics.update(evaluate_trajectory(result.T_world_cam, gt, monocular=result.monocular))
    metrics["timing"] = timing_summary(result.timings)
    return metrics


SEED_METRICS = ("drift_t_rel_percent", "drift_r_rel_deg_per_100m", "ate_rmse_m", "rpe_trans_rmse_m", "rpe_rot_rmse_deg")


def seed_spread(seeds: list[int], metrics: list[dict]) -> dict:
    """Per-seed values, mean and standard deviation of the trajectory metrics of reruns that differ
    only in the tracker's RANSAC seed (metrics a run lacks, e.g. drift on a short run, are left out)."""
    spread: dict = {"seeds": list(seeds)}
    for key in SEED_METRICS:
        values = [m[key] for m in metrics if m.get(key) is not None]
        if len(values) == len(metrics):
            spread[key] = {"values": values, "mean": float(np.mean(values)), "std": float(np.std(values))}
    return spread


def write_outputs(result: RunResult, output_dir: str | Path, config: PipelineConfig,
                  reruns: dict[int, RunResult] | None = None) -> dict:
    """Write trajectories, metrics.json, config.yaml and trajectory.png into ``output_dir``; return the metrics.

    ``result`` is the run with ``config.odometry.seed``; ``reruns`` (seed -> result) are the same frames
    tracked with other RANSAC seeds, summarised under ``metrics["seed_spread"]``.
    Everything that can fail is computed before the first file is written, and every file is
    replaced atomically: a failed run leaves the previous results of ``output_dir`` as they were."""
    from kp_vo.eval.plots import plot_trajectory_top_view
    from kp_vo.eval.trajectory import align_se3, align_sim3
    from kp_vo.trajio import write_kitti_poses, write_tum_trajectory

    out = Path(output_dir)
    if len(result.frame_indices) == 0:
        raise InvalidInputError(f"no frame was tracked: nothing written to {out}")
    if out.exists() and not out.is_dir():
        raise InvalidInputError(f"output {out} exists and is not a folder")
    metrics = compute_metrics(result)
    if reruns:
        metrics["seed_spread"] = seed_spread([config.odometry.seed, *reruns],
                                             [metrics, *(compute_metrics(r) for r in reruns.values())])
    metrics_text = json.dumps(metrics, indent=2, default=_json_default)
    out.mkdir(parents=True, exist_ok=True)
    with ExitStack() as replace_last:
        if len(result.frame_indices) >= 3:   # the plot is rendered before any file is replaced
            gt, est, label = None, result.T_world_cam, "estimate"
            if result.T_world_cam_gt is not None:
                gt = np.linalg.inv(result.T_world_cam_gt[0]) @ result.T_world_cam_gt
                est, scale, _ = (align_sim3 if result.monocular else align_se3)(est, gt)
                label = f"estimate (Sim(3)-aligned, scale {scale:.3g})" if result.monocular else \
                    "estimate (SE(3)-aligned)"
            title = f"{config.extractor.name} {'monocular' if result.monocular else 'RGB-D'}"
            png = replace_last.enter_context(atomic_path(out / "trajectory.png"))
            plot_trajectory_top_view(png, est, gt, title, states=result.states, est_label=label)
        write_kitti_poses(out / "trajectory_kitti.txt", result.T_world_cam)
        write_tum_trajectory(out / "trajectory_tum.txt", result.stamps_ns, result.T_world_cam)
        with atomic_path(out / "config.yaml") as tmp:
            save_config(config, tmp)
        with atomic_path(out / "metrics.json") as tmp:
            tmp.write_text(metrics_text)
    if len(result.frame_indices) < 3:
        (out / "trajectory.png").unlink(missing_ok=True)  # a previous run's plot would not match
    return metrics


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
