"""Relocalization metrics of the ViewSynth protocol (§4.1).

- MMA at 0.1 / 0.25 / 0.5 m: a match is correct when the query keypoint's ground-truth 3D world
  point (its depth lifted with the ground-truth pose) lies within the threshold of the matched
  repository point; per query image the fraction of correct matches among matches whose query
  keypoint has valid depth, then the mean over images (images with no such match count 0).
- Localization accuracy at (0.5 m, 2 deg), (1 m, 5 deg), (5 m, 10 deg): fraction of query images
  whose estimated pose is within both thresholds (failed localizations count as wrong).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from kp_vo.geometry.se3 import transform
from kp_vo.reloc.localizer import LocalizationResult, Localizer
from kp_vo.reloc.repository import lift_to_camera
from kp_vo.trajio import write_tum_trajectory
from kp_vo.types import Frame

logger = logging.getLogger(__name__)

MMA_THRESHOLDS_M = (0.1, 0.25, 0.5)
POSE_THRESHOLDS = ((0.5, 2.0), (1.0, 5.0), (5.0, 10.0))  # (metres, degrees)


def pose_error(T_est: np.ndarray, T_gt: np.ndarray) -> tuple[float, float]:
    """(translation error in metres, rotation error in degrees) between two (4, 4) camera poses."""
    dt = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))
    R = T_est[:3, :3].T @ T_gt[:3, :3]
    cos = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    return dt, float(np.degrees(np.arccos(cos)))


def match_correctness(result: LocalizationResult, frame: Frame, points_world_map: np.ndarray) -> np.ndarray:
    """3D distance (M,) float64 between each match's ground-truth query point and its map point (NaN
    where the query keypoint has no valid depth). Needs ``frame.depth`` and ``frame.T_world_cam_gt``."""
    if frame.depth is None or frame.T_world_cam_gt is None or result.features is None or result.num_matches == 0:
        return np.full(result.num_matches, np.nan)
    uv = result.features.keypoints[result.query_indices]
    query_world = transform(frame.T_world_cam_gt, lift_to_camera(uv, frame.depth, frame.camera))
    return np.linalg.norm(query_world - np.asarray(points_world_map)[result.map_ids], axis=1)


def mma(distances: np.ndarray, thresholds: Iterable[float] = MMA_THRESHOLDS_M) -> dict[str, float]:
    """Matching accuracy of one image: fraction of matches (with valid depth) within each threshold."""
    d = np.asarray(distances, np.float64)
    d = d[np.isfinite(d)]
    return {f"{t:g}": float(np.mean(d <= t)) if len(d) else 0.0 for t in thresholds}


def localization_accuracy(errors: list[tuple[float, float] | None],
                          thresholds: Iterable[tuple[float, float]] = POSE_THRESHOLDS) -> dict[str, float]:
    """Fraction of queries within each (metres, degrees) threshold; None entries are failures."""
    out = {}
    for t_m, r_deg in thresholds:
        ok = [e is not None and e[0] <= t_m and e[1] <= r_deg for e in errors]
        out[f"{t_m:g}m_{r_deg:g}deg"] = float(np.mean(ok)) if ok else 0.0
    return out


@dataclass
class RelocEvaluation:
    """Per-query records and the ViewSynth summary."""

    records: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    poses: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> estimated T_world_cam
    stamps_ns: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"summary": self.summary, "queries": self.records}


def evaluate_localizer(localizer: Localizer, frames: Iterable[Frame]) -> RelocEvaluation:
    """Localize every frame and score it against its ground truth (frames without ground truth
    get poses but no error; the summary then covers only frames that have it)."""
    out = RelocEvaluation()
    for frame in frames:
        res = localizer.localize(frame)
        rec = {"frame_index": frame.index, "stamp_ns": int(frame.stamp_ns), "success": res.success,
               "num_matches": res.num_matches, "num_inliers": res.num_inliers, "confidence": res.confidence,
               "method": res.method, "latency_s": res.timings.get("total"),
               "has_ground_truth": frame.T_world_cam_gt is not None}
        if res.success:
            out.poses[frame.index] = res.T_world_cam
            out.stamps_ns[frame.index] = int(frame.stamp_ns)
        if frame.T_world_cam_gt is not None:
            if res.success:
                rec["translation_error_m"], rec["rotation_error_deg"] = pose_error(res.T_world_cam, frame.T_world_cam_gt)
            if frame.depth is not None:
                rec["mma"] = mma(match_correctness(res, frame, localizer.repository.points_world))
        out.records.append(rec)
    out.summary = summarize_records(out.records, len(localizer.repository), localizer.extractor.name)
    return out


def summarize_records(records: list[dict], map_points: int, extractor: str) -> dict:
    """The ViewSynth summary of per-query records (``evaluate_localizer``'s): localization accuracy
    over the queries with ground truth (failures count as wrong), mean MMA over those with depth,
    median errors of the successful ones, median latency."""
    errors = [(r["translation_error_m"], r["rotation_error_deg"]) if "translation_error_m" in r else None
              for r in records if r["has_ground_truth"]]
    ok_errors = [e for e in errors if e is not None]
    mmas = [r["mma"] for r in records if "mma" in r]
    latencies = [r["latency_s"] for r in records if r["latency_s"] is not None]
    return {
        "num_queries": len(records),
        "num_success": int(sum(r["success"] for r in records)),
        "map_points": int(map_points),
        "extractor": extractor,
        "localization_accuracy": localization_accuracy(errors) if errors else None,
        "mma": {k: float(np.mean([m[k] for m in mmas])) for k in mmas[0]} if mmas else None,
        "median_translation_error_m": float(np.median([e[0] for e in ok_errors])) if ok_errors else None,
        "median_rotation_error_deg": float(np.median([e[1] for e in ok_errors])) if ok_errors else None,
        "median_latency_s": float(np.nanmedian(latencies)) if latencies else None,
    }


def pooled_summary(evaluations: list[RelocEvaluation]) -> dict:
    """One summary over the queries of several evaluations (e.g. one per room): every query counts
    once; ``map_points`` is the mean map size; ``rooms`` how many evaluations were pooled."""
    if not evaluations:
        raise ValueError("pooled_summary needs at least one evaluation")
    records = [r for e in evaluations for r in e.records]
    map_points = round(float(np.mean([e.summary["map_points"] for e in evaluations])))
    summary = summarize_records(records, map_points, evaluations[0].summary["extractor"])
    summary["rooms"] = len(evaluations)
    if "top_k" in evaluations[0].summary:
        summary["top_k"] = evaluations[0].summary["top_k"]
    return summary


def map_and_localize(extractor, map_frames: Iterable[Frame], query_frames: Iterable[Frame], top_k: int | None = 300,
                     every: int = 1, config=None, index_config=None) -> RelocEvaluation:
    """The ViewSynth protocol on any frames: map ``map_frames`` (depth + ground-truth poses) with their
    top-``top_k`` keypoints of ``extractor``, then localize and score every query frame against the map."""
    from kp_vo.reloc.localizer import LocalizerConfig
    from kp_vo.reloc.repository import build_repository

    repo = build_repository(map_frames, extractor, top_k=top_k, every=every, index_config=index_config)
    evaluation = evaluate_localizer(Localizer(repo, extractor, config or LocalizerConfig()), query_frames)
    evaluation.summary["top_k"] = top_k
    return evaluation


def with_ground_truth(frames: Iterable[Frame]) -> Iterable[Frame]:
    """The frames that have a finite ground-truth pose (mapping needs one); logs how many were skipped."""
    skipped = 0
    for frame in frames:
        T = frame.T_world_cam_gt
        if T is not None and np.all(np.isfinite(T)):
            yield frame
        else:
            skipped += 1
    if skipped:
        logger.warning("skipped %d frames without ground-truth pose", skipped)


def format_summary_table(summaries: dict[str, dict]) -> str:
    """One row per evaluated extractor (``{name: RelocEvaluation.summary}``): MMA at the three
    thresholds (metres), localization accuracy at the three (metres, degrees) thresholds, median
    errors of the successful queries and the map size."""
    mma_keys = [f"{t:g}" for t in MMA_THRESHOLDS_M]
    acc_keys = [f"{t:g}m_{r:g}deg" for t, r in POSE_THRESHOLDS]
    width = min(60, max([len("extractor")] + [len(name) for name in summaries]))
    head = (f"{'extractor':<{width}} {'queries':>7} {'ok':>4} " + " ".join(f"{'MMA@' + k:>8}" for k in mma_keys)
            + " " + " ".join(f"{k.replace('_', '/'):>10}" for k in acc_keys)
            + f" {'med_t_m':>8} {'med_r_deg':>9} {'points':>7}")

    def num(value, fmt: str) -> str:
        return format(float("nan") if value is None else value, fmt)

    lines = [head]
    for name, s in summaries.items():
        mma_row, acc_row = s.get("mma") or {}, s.get("localization_accuracy") or {}
        lines.append(f"{name[-width:]:<{width}} {s['num_queries']:>7d} {s['num_success']:>4d} "
                     + " ".join(num(mma_row.get(k), "8.3f") for k in mma_keys) + " "
                     + " ".join(num(acc_row.get(k), "10.3f") for k in acc_keys)
                     + f" {num(s.get('median_translation_error_m'), '8.3f')}"
                     + f" {num(s.get('median_rotation_error_deg'), '9.2f')} {s['map_points']:>7d}")
    return "\n".join(lines)


def write_evaluation(evaluation: RelocEvaluation, output_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json`` and ``poses_tum.txt`` (the TUM trajectory of the successful queries)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    metrics = output_dir / "metrics.json"
    metrics.write_text(json.dumps(evaluation.to_json(), indent=2))
    poses = output_dir / "poses_tum.txt"
    queries = sorted(evaluation.poses)
    write_tum_trajectory(poses, np.array([evaluation.stamps_ns[i] for i in queries], np.int64),
                         np.array([evaluation.poses[i] for i in queries]).reshape(-1, 4, 4))
    return {"metrics": metrics, "poses": poses}
