"""Depth benchmark: several depth models scored on the same images, median-scaled and at fixed scale.

Images come as ``DepthSample``s: from any sequence with depth images, or from a KITTI raw drive,
where the ground truth is the projected LiDAR of the frames that have a velodyne scan and the
rectified right image makes the stereo baseline possible. Models come from specs:

    constant                      one depth everywhere: the no-information baseline (median-scaled only)
    depthnet[:PATH][,key=value]   DepthNetEstimator (no PATH: the shipped models/depthnet.onnx); its
                                  ``scale`` option (metres per network unit), when given, is its fixed scale
    stereo[,key=value]            OpenCV StereoSGBM on the rectified pair (``depth_stereo``), metric;
                                  options num_disparities, block_size

Each model is scored with per-image median scaling ("median") and, where it has a scale, as it is
("fixed": a depthnet's given scale, 1 for stereo; none for constant).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.eval.depth import METRICS, constant_depth, depth_errors, summarize
from kp_vo.settings import parse_spec

log = logging.getLogger(__name__)

SCALINGS = ("median", "fixed")


@dataclass
class DepthSample:
    """One image with ground truth: image (H, W) or (H, W, 3) uint8, depth (H, W) float32 metres
    (0 = none); right (H, W[, 3]) uint8, fx (px) and baseline_m of a rectified stereo pair, or None."""

    name: str
    image: np.ndarray
    depth: np.ndarray
    right: np.ndarray | None = None
    fx: float | None = None
    baseline_m: float | None = None


@dataclass
class DepthModel:
    """predict(sample) -> (H, W) depth; fixed_scale: the scale of its "fixed" row (None: no such row)."""

    spec: str
    predict: Callable[[DepthSample], np.ndarray]
    fixed_scale: float | None


def samples_from_sequence(sequence) -> list[DepthSample]:
    """The sequence's frames with ground-truth depth; a KITTI raw drive gives its frames with a LiDAR
    scan (depth projected into its camera) and their stereo pairs."""
    from kp_vo.datasets.kitti_raw import KittiRaw

    if isinstance(sequence, KittiRaw):
        return [DepthSample(f"{sequence.name}:{i}", sequence[i].image, sequence.lidar_depth(i), sequence.right_image(i),
                            sequence.camera.fx, sequence.stereo_baseline_m)
                for i in range(len(sequence)) if sequence.has_scan(i)]
    return [DepthSample(f"{sequence.name}:{f.index}", f.image, f.depth) for f in sequence if f.depth is not None]


def _stereo(options: dict) -> Callable[[DepthSample], np.ndarray]:
    from kp_vo.eval.depth_stereo import stereo_depth

    def predict(sample: DepthSample) -> np.ndarray:
        if sample.right is None:
            raise InvalidInputError(f"{sample.name}: the stereo baseline needs rectified stereo pairs (KITTI raw)")
        return stereo_depth(sample.image, sample.right, sample.fx, sample.baseline_m, **options)

    return predict


def depth_model_from_spec(spec: str, device: str = "cpu", depthnet_options: dict | None = None) -> DepthModel:
    """The model of a spec (module docstring); ``depthnet_options`` (e.g. a config's depth.options) are
    the defaults of a plain ``depthnet``, under its ,key=value options."""
    name, path, options = parse_spec(spec)
    if name == "constant" and not path and not options:
        return DepthModel(spec, lambda sample: constant_depth(sample.image), None)
    if name == "stereo" and not path:
        if set(options) - {"num_disparities", "block_size"} or not all(type(v) is int for v in options.values()):
            raise InvalidInputError(f"{spec!r}: stereo takes integer options num_disparities and block_size")
        return DepthModel(spec, _stereo(options), 1.0)
    if name != "depthnet":
        raise InvalidInputError(f"{spec!r}: expected constant, stereo[,key=value...] or depthnet[:PATH][,key=value...]")
    from kp_vo.runtime.extractors import DepthNetEstimator

    if not path:
        options = {**(depthnet_options or {}), **options}
        path = str(options.pop("model_path", None) or "")
    backend = options.pop("backend", "torch" if path.endswith(".safetensors") else "onnx")
    options["device"] = device
    estimator = DepthNetEstimator(model_path=path or None, backend=backend, **options)
    return DepthModel(spec, lambda sample: estimator.estimate(sample.image),
                      estimator.scale if "scale" in options else None)


def benchmark_depth(models: list[DepthModel], samples: list[DepthSample], scalings=SCALINGS,
                    min_depth: float = 1e-3, max_depth: float = 80.0, mask: np.ndarray | None = None) -> list[dict]:
    """One row per model and scaling: {"model", "scaling", "fixed_scale", the ``summarize`` keys}.
    Every model predicts each sample once; ``mask`` (H, W) bool restricts the scored pixels."""
    if not samples:
        raise InvalidInputError("no images with ground-truth depth to evaluate")
    rows = []
    for model in models:
        predictions = [model.predict(s) for s in samples]
        for scaling in scalings:
            if scaling == "fixed" and model.fixed_scale is None:
                if model.spec != "constant":
                    log.warning("%s has no fixed scale (give depthnet,scale=S or depth.options.scale): "
                                "no fixed-scale row", model.spec)
                continue
            per_image = [depth_errors(p, s.depth, min_depth, max_depth, scaling == "median", mask)
                         for p, s in zip(predictions, samples)]
            rows.append({"model": model.spec, "scaling": scaling,
                         "fixed_scale": model.fixed_scale if scaling == "fixed" else None, **summarize(per_image)})
    return rows


def format_depth_table(rows: list[dict]) -> str:
    """The rows as a text table; ``gt/pred`` is the mean +- std of the per-image median ratio (the
    scale median scaling applied), ``fixed`` the scale of a fixed-scale row."""
    lines = [f"{'model':32s} {'scaling':>13s} " + " ".join(f"{m:>8s}" for m in METRICS)
             + f" {'coverage':>8s} {'gt/pred':>12s}"]
    for r in rows:
        scaling = "median" if r["scaling"] == "median" else f"fixed {r['fixed_scale']:g}"
        ratio = f"{r['scale_mean']:6.2f}+-{r['scale_std']:<4.2f}" if r["scaling"] == "median" else ""
        lines.append(f"{r['model']:32s} {scaling:>13s} " + " ".join(f"{r[m]:8.3f}" for m in METRICS)
                     + f" {r['coverage']:8.3f} {ratio:>12s}")
    return "\n".join(lines)
