"""HPatches-style keypoint metrics (KP2D / KP3D appendix protocol) for any registered extractor.

For an image pair (image_a, image_b) related by a known homography ``H_b_a`` (pixels of a -> b):
- repeatability: keypoints of each image that land inside the other (warped by the GT homography)
  and have a keypoint of the other image within ``eps`` px, over all such visible keypoints of both.
- localization error: mean distance (px) of those repeated nearest-neighbour pairs.
- correctness @ 1/3/5 px (homography accuracy): mutual-nearest-neighbour descriptor matches ->
  RANSAC homography; the mean distance of the four image corners warped by estimated and GT
  homographies below the threshold (a pair with no estimate counts as wrong).
- matching score: mutual-NN matches whose warped keypoint lies within ``eps`` px of its match,
  over the number of visible keypoints, averaged over both directions.
Standard settings: 300 keypoints at 240x320, 1000 at 480x640, eps = 3 px.

Pairs: ``homography_pairs`` makes held-out pairs from a photo folder (the photos the
``keypointnet_homography`` recipe never trains on: sorted index i with i % holdout_every == 0),
each warped by a random homography (+ photometric jitter) drawn deterministically from ``seed``;
``hpatches_pairs`` reads an HPatches folder (``<seq>/1.ppm .. 6.ppm``, ``H_1_k``), resized.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from kp_vo.datasets.augment import HomographyConfig, PhotometricConfig, sample_homography, warp_image
from kp_vo.datasets.augment import photometric as jitter
from kp_vo.datasets.photos import list_photos, split_photos
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.features.base import Features
from kp_vo.geometry.matching import match_descriptors
from kp_vo.pipeline import extractor_from_spec

log = logging.getLogger(__name__)

CORRECTNESS_PX = (1.0, 3.0, 5.0)


@dataclass
class HomographyPair:
    """image_a, image_b: (H, W, 3) uint8 RGB; H_b_a (3, 3) float64 maps pixels of a into b."""
    image_a: np.ndarray
    image_b: np.ndarray
    H_b_a: np.ndarray
    name: str = ""


@dataclass
class PairMetrics:
    repeatability: float          # NaN when no keypoint is visible in the other image
    localization_error: float     # px, NaN when nothing repeated
    correct: dict[float, bool]    # threshold px -> homography within it
    matching_score: float
    num_keypoints: tuple[int, int]
    num_matches: int


@dataclass
class KeypointMetrics:
    """Means over pairs (NaN-aware) of an extractor's ``PairMetrics``."""
    extractor: str
    pairs: int
    repeatability: float
    localization_error: float
    correctness: dict[float, float] = field(default_factory=dict)
    matching_score: float = float("nan")
    mean_keypoints: float = 0.0

    def as_row(self) -> dict[str, float | str | int]:
        row = {"extractor": self.extractor, "pairs": self.pairs, "repeatability": self.repeatability,
               "localization_error": self.localization_error}
        row.update({f"correct_{t:g}px": v for t, v in self.correctness.items()})
        row.update({"matching_score": self.matching_score, "mean_keypoints": self.mean_keypoints})
        return row


def warp(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(N, 2) -> (N, 2) points mapped by a 3x3 homography."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((len(p), 1))], 1) @ H.T
    z = q[:, 2:3]
    z = np.where(np.abs(z) < 1e-12, 1e-12, z)
    return q[:, :2] / z


def _inside(p: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return (p[:, 0] >= 0) & (p[:, 0] <= w - 1) & (p[:, 1] >= 0) & (p[:, 1] <= h - 1)


def _nearest(p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of p (N, 2): (distance, index) of the nearest of q (M, 2); inf/-1 if q is empty."""
    if len(q) == 0 or len(p) == 0:
        return np.full(len(p), np.inf), np.full(len(p), -1)
    d = np.linalg.norm(p[:, None, :] - q[None, :, :], axis=-1)
    idx = d.argmin(1)
    return d[np.arange(len(p)), idx], idx


def repeatability(kp_a: np.ndarray, kp_b: np.ndarray, H_b_a: np.ndarray, shape_a: tuple[int, int],
                  shape_b: tuple[int, int], eps: float = 3.0) -> tuple[float, float]:
    """(repeatability, localization error px) of keypoints kp_a (N, 2) and kp_b (M, 2) (see module doc)."""
    H_a_b = np.linalg.inv(H_b_a)
    a_in_b = warp(kp_a, H_b_a)
    b_in_a = warp(kp_b, H_a_b)
    vis_a = _inside(a_in_b, shape_b)
    vis_b = _inside(b_in_a, shape_a)
    d_ab, _ = _nearest(a_in_b[vis_a], np.asarray(kp_b, np.float64)[vis_b])
    d_ba, _ = _nearest(b_in_a[vis_b], np.asarray(kp_a, np.float64)[vis_a])
    total = int(vis_a.sum() + vis_b.sum())
    if total == 0:
        return float("nan"), float("nan")
    good = np.concatenate([d_ab[d_ab <= eps], d_ba[d_ba <= eps]])
    rep = len(good) / total
    return float(rep), float(good.mean()) if len(good) else float("nan")


def corner_error(H_est: np.ndarray, H_gt: np.ndarray, shape: tuple[int, int]) -> float:
    """Mean distance (px) of the four corners of an image of ``shape`` warped by H_est and H_gt."""
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    return float(np.linalg.norm(warp(corners, H_est) - warp(corners, H_gt), axis=1).mean())


def evaluate_pair(fa: Features, fb: Features, pair: HomographyPair, eps: float = 3.0,
                  thresholds: tuple[float, ...] = CORRECTNESS_PX) -> PairMetrics:
    """All metrics for one pair given the features of both images."""
    shape_a, shape_b = pair.image_a.shape[:2], pair.image_b.shape[:2]
    H = np.asarray(pair.H_b_a, np.float64)
    rep, loc = repeatability(fa.keypoints, fb.keypoints, H, shape_a, shape_b, eps)
    correct = dict.fromkeys(thresholds, False)
    ms, n_matches = 0.0, 0
    if len(fa) and len(fb):
        matches, _ = match_descriptors(fa.descriptors, fb.descriptors, fa.metric, mutual=True)
        n_matches = len(matches)
        pa = np.asarray(fa.keypoints, np.float64)[matches[:, 0]]
        pb = np.asarray(fb.keypoints, np.float64)[matches[:, 1]]
        if n_matches >= 4:
            H_est, _ = cv2.findHomography(pa, pb, cv2.RANSAC, 3.0, maxIters=2000, confidence=0.999)
            if H_est is not None:
                err = corner_error(H_est, H, shape_a)
                correct = {t: err <= t for t in thresholds}
        # matching score, both directions: correct matches / visible keypoints of that image
        ok_ab = np.linalg.norm(warp(pa, H) - pb, axis=1) <= eps
        ok_ba = np.linalg.norm(warp(pb, np.linalg.inv(H)) - pa, axis=1) <= eps
        vis_a = _inside(warp(fa.keypoints, H), shape_b).sum()
        vis_b = _inside(warp(fb.keypoints, np.linalg.inv(H)), shape_a).sum()
        scores = [ok.sum() / v for ok, v in ((ok_ab, vis_a), (ok_ba, vis_b)) if v > 0]
        ms = float(np.mean(scores)) if scores else 0.0
    return PairMetrics(rep, loc, correct, ms, (len(fa), len(fb)), n_matches)


def summarize(name: str, results: list[PairMetrics], thresholds: tuple[float, ...] = CORRECTNESS_PX
              ) -> KeypointMetrics:
    def nanmean(values):
        v = np.asarray(values, np.float64)
        return float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")

    return KeypointMetrics(
        extractor=name, pairs=len(results),
        repeatability=nanmean([r.repeatability for r in results]),
        localization_error=nanmean([r.localization_error for r in results]),
        correctness={t: float(np.mean([r.correct[t] for r in results])) if results else float("nan")
                     for t in thresholds},
        matching_score=nanmean([r.matching_score for r in results]),
        mean_keypoints=float(np.mean([sum(r.num_keypoints) / 2 for r in results])) if results else 0.0)


def default_num_keypoints(height: int, width: int) -> int:
    """The protocol's keypoint budget: 300 at 240x320, 1000 at 480x640 (by area in between)."""
    return 300 if height * width <= 240 * 320 else 1000


# --- pairs -----------------------------------------------------------------------------------------

def _load_rgb_u8(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def homography_pairs(folder: str | Path, num_pairs: int, size_hw: tuple[int, int] = (240, 320), seed: int = 0,
                     holdout_every: int = 5, held_out_only: bool = True, photometric: bool = True
                     ) -> Iterator[HomographyPair]:
    """``num_pairs`` pairs from the held-out photos of ``folder`` (cycled), resized to ``size_hw``;
    pair i warps photo i % n by a homography drawn from rng(seed, i) (scale, rotation, perspective,
    translation as in training), with independent photometric jitter on both sides."""
    files = list_photos(folder)
    if held_out_only:
        files = split_photos(files, holdout_every, "eval")
    h, w = size_hw
    pcfg = PhotometricConfig(p=0.5, noise_std=0.01, blur_sigma=0.8, grayscale_p=0.0)
    for i in range(int(num_pairs)):
        rng = np.random.default_rng([int(seed), i])
        path = files[i % len(files)]
        img = cv2.resize(_load_rgb_u8(path), (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        H = sample_homography(h, w, rng, HomographyConfig())
        a = jitter(img, rng, pcfg) if photometric else img
        b = jitter(img, rng, pcfg) if photometric else img
        b, _ = warp_image(b, H)
        yield HomographyPair((a * 255 + 0.5).astype(np.uint8), (b * 255 + 0.5).astype(np.uint8), H,
                             f"{path.name}#{i}")


def hpatches_pairs(folder: str | Path, size_hw: tuple[int, int] = (240, 320)) -> Iterator[HomographyPair]:
    """HPatches sequences (``<seq>/1.ppm`` with ``k.ppm`` and ``H_1_k`` for k = 2..6), resized to size_hw
    with the homographies adjusted."""
    root = Path(folder)
    seqs = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not seqs:
        raise DatasetError(f"no HPatches sequences in {root}")
    h, w = size_hw
    for seq in seqs:
        ref = next((p for p in sorted(seq.glob("1.*")) if p.suffix.lower() in (".ppm", ".png", ".jpg")), None)
        if ref is None:
            continue
        a = _load_rgb_u8(ref)
        Sa = np.diag([w / a.shape[1], h / a.shape[0], 1.0])
        for k in range(2, 7):
            hfile = seq / f"H_1_{k}"
            other = next((p for p in sorted(seq.glob(f"{k}.*")) if p.suffix.lower() in (".ppm", ".png", ".jpg")), None)
            if other is None or not hfile.is_file():
                continue
            b = _load_rgb_u8(other)
            Sb = np.diag([w / b.shape[1], h / b.shape[0], 1.0])
            H = Sb @ np.loadtxt(hfile).reshape(3, 3) @ np.linalg.inv(Sa)
            yield HomographyPair(cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA),
                                 cv2.resize(b, (w, h), interpolation=cv2.INTER_AREA), H / H[2, 2],
                                 f"{seq.name}/1-{k}")


def evaluate_extractors(specs: list[str], pairs: list[HomographyPair], max_keypoints: int, eps: float = 3.0
                        ) -> list[KeypointMetrics]:
    """Run every extractor on the same pairs; one KeypointMetrics per spec, in order."""
    if not pairs:
        raise InvalidInputError("no image pairs to evaluate")
    out = []
    for spec in specs:
        ex = extractor_from_spec(spec, max_keypoints)
        if getattr(ex, "input_kind", "image") != "image":
            raise InvalidInputError(f"{spec!r} works on depth images; homography pairs are colour images")
        results = [evaluate_pair(ex.extract(p.image_a), ex.extract(p.image_b), p, eps) for p in pairs]
        out.append(summarize(spec, results))
        log.info("%s: %s", spec, out[-1].as_row())
    return out


def format_table(rows: list[KeypointMetrics]) -> str:
    head = f"{'extractor':<40} {'pairs':>5} {'rep':>6} {'loc px':>7} {'c@1':>5} {'c@3':>5} {'c@5':>5} {'MS':>6} {'kp':>6}"
    lines = [head]
    for r in rows:
        c = r.correctness
        lines.append(f"{r.extractor[-40:]:<40} {r.pairs:>5d} {r.repeatability:6.3f} {r.localization_error:7.3f} "
                     f"{c.get(1.0, float('nan')):5.2f} {c.get(3.0, float('nan')):5.2f} {c.get(5.0, float('nan')):5.2f} "
                     f"{r.matching_score:6.3f} {r.mean_keypoints:6.0f}")
    return "\n".join(lines)
