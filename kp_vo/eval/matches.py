"""Match precision on real sequences with ground-truth poses: how far matched keypoints lie from the
epipolar geometry the ground truth gives, with no pose estimation in between.

For frame pairs (i, i + gap), i = start, start + every, ..., of a sequence with ground-truth poses,
both frames' keypoints are matched as the tracker does without a map (mutual nearest neighbours
with Lowe's ratio), and each match is scored by the distance (px) of its keypoint in the second
frame from the epipolar line of its keypoint in the first:

    (R, t) = T_cam2_cam1 (ground truth),   F = K^-T [t]x R K^-1,   d = |x2^T F x1| / ||(F x1)_{0:2}||

This measures keypoint localization across the epipolar lines and wrong matches (far from their
line) on real images. It is blind to errors along the line (the homography benchmark of
``kp_vo.eval.keypoints`` sees those) and undefined without a baseline, so pairs whose cameras are
less than ``min_baseline_m`` apart are skipped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Extractor, Features
from kp_vo.geometry.matching import match_descriptors
from kp_vo.geometry.se3 import skew
from kp_vo.types import Frame


@dataclass
class MatchPrecision:
    """One extractor at one frame gap, over all scored pairs."""

    extractor: str
    gap: int
    pairs: int
    matches_per_pair: float
    median_px: float        # median epipolar distance of the matches
    within_1px: float       # share of matches closer than 1 px to their epipolar line
    beyond_3px: float       # share farther than 3 px: wrong matches, mostly

    def as_row(self) -> dict:
        return asdict(self)


def epipolar_distances(uv1: np.ndarray, uv2: np.ndarray, T_cam2_cam1: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(N,) distance (px) of each uv2 from the epipolar line of uv1 in camera 2.

    uv1, uv2: (N, 2) pixels of the same points in cameras 1 and 2; T_cam2_cam1: (4, 4) maps camera-1
    coordinates into camera 2; K: (3, 3) intrinsics of both."""
    K_inv = np.linalg.inv(K)
    F = K_inv.T @ skew(T_cam2_cam1[:3, 3]) @ T_cam2_cam1[:3, :3] @ K_inv
    x1 = np.column_stack([uv1, np.ones(len(uv1))])
    x2 = np.column_stack([uv2, np.ones(len(uv2))])
    lines = x1 @ F.T                                   # (N, 3) epipolar lines a u + b v + c = 0 in camera 2
    return np.abs(np.sum(x2 * lines, axis=1)) / np.maximum(np.linalg.norm(lines[:, :2], axis=1), 1e-12)


def evaluate_match_precision(extractor: Extractor, frames: Sequence[Frame], gaps: Sequence[int], every: int = 5,
                             ratio: float = 0.9, min_baseline_m: float = 0.05, label: str | None = None
                             ) -> list[MatchPrecision]:
    """One MatchPrecision per gap for ``extractor`` on ``frames`` (a list or a dataset sequence, read by
    index; every frame of a pair needs T_world_cam_gt). Each frame's features are extracted once."""
    if any(g < 1 for g in gaps) or every < 1:
        raise InvalidInputError(f"frame gaps and --every must be at least 1, got gaps {list(gaps)}, every {every}")
    cache: dict[int, Features] = {}

    def features(frame: Frame) -> Features:
        if frame.index not in cache:
            cache[frame.index] = extractor.extract(frame.image)
        return cache[frame.index]

    rows = []
    for gap in gaps:
        distances, counts = [], []
        for i in range(0, len(frames) - gap, every):
            first, second = frames[i], frames[i + gap]
            if first.T_world_cam_gt is None or second.T_world_cam_gt is None:
                raise InvalidInputError("match precision needs ground-truth poses for every frame")
            T_cam2_cam1 = np.linalg.inv(second.T_world_cam_gt) @ first.T_world_cam_gt
            if np.linalg.norm(T_cam2_cam1[:3, 3]) < min_baseline_m:
                continue
            a, b = features(first), features(second)
            matches, _ = match_descriptors(a.descriptors, b.descriptors, b.metric, mutual=True,
                                           ratio=ratio if ratio < 1.0 else None)
            counts.append(len(matches))
            distances.append(epipolar_distances(a.keypoints[matches[:, 0]].astype(np.float64),
                                                b.keypoints[matches[:, 1]].astype(np.float64),
                                                T_cam2_cam1, first.camera.K))
        d = np.concatenate(distances) if distances else np.zeros(0)
        if len(d) == 0:
            raise InvalidInputError(f"gap {gap}: no pair with a baseline of {min_baseline_m} m and any match")
        rows.append(MatchPrecision(label or extractor.name, gap, len(counts), float(np.mean(counts)),
                                   float(np.median(d)), float(np.mean(d < 1.0)), float(np.mean(d > 3.0))))
    return rows


def format_table(rows: list[MatchPrecision]) -> str:
    lines = [(f"{'extractor':44s} {'gap':>4s} {'pairs':>6s} {'matches':>8s} {'median px':>10s} {'<1 px':>7s} "
              f"{'>3 px':>7s}")]
    for r in rows:
        lines.append(f"{r.extractor:44s} {r.gap:4d} {r.pairs:6d} {r.matches_per_pair:8.0f} {r.median_px:10.3f} "
                     f"{r.within_1px:7.3f} {r.beyond_3px:7.3f}")
    return "\n".join(lines)
