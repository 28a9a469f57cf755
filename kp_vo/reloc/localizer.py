"""Localize one query frame against a 3D keypoint repository, with no pose hint.

Recipe (``Localizer.localize``):
1. extract the query's keypoints (top ``query_top_k`` by score; from the depth image for depth
   extractors such as ViewSynth);
2. match them to map descriptors through the repository's FAISS index ("mutual" nearest
   neighbours, Lowe "ratio" test against the nearest neighbour that is a *different* 3D point,
   or "topk": the k nearest map points of every query keypoint all go to RANSAC);
3. solve the pose:
   - query with depth: lift the matched keypoints to 3D, RANSAC over minimal 3-point weighted
     Procrustes fits (3D-3D), then refit on the inliers and finish with PnP Gauss-Newton on the
     same inliers (reprojection error is what depth noise affects least);
   - query without depth: RANSAC-PnP with Gauss-Newton refinement;
4. report the pose with inlier count and a confidence in [0, 1].
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Extractor, Features, extract_frame
from kp_vo.geometry.se3 import transform
from kp_vo.reloc.repository import Repository, lift_to_camera
from kp_vo.types import CameraIntrinsics, Frame

logger = logging.getLogger(__name__)

MATCH_MODES = ("mutual", "ratio", "topk")


@dataclass
class LocalizerConfig:
    query_top_k: int | None = None   # query keypoints used (highest scores first); None = all
    match_mode: str = "mutual"       # "mutual" | "ratio" | "topk"
    ratio: float = 0.9               # Lowe ratio (on descriptor distances) for "ratio"; also applied in "mutual" when < 1
    ratio_radius_m: float = 0.05     # second neighbour must lie this far (3D) from the first to count in the ratio
    candidates: int = 4              # neighbours fetched per query keypoint (>= 2); "topk" keeps all of them
    max_distance: float | None = None  # reject matches farther than this (L2 distance or Hamming bits)
    use_depth: bool = True           # use query depth (3D-3D RANSAC) when the frame has it
    threshold_px: float = 3.0        # PnP inlier threshold (reprojection, pixels)
    threshold_m: float = 0.05        # 3D-3D inlier threshold (metres)
    iterations: int = 500            # RANSAC iterations (upper bound; adaptive stop at `confidence`)
    confidence: float = 0.999        # RANSAC stop confidence
    min_inliers: int = 12            # fewer inliers = localization failure
    seed: int = 0                    # RANSAC random seed (deterministic results)


@dataclass
class LocalizationResult:
    """Outcome of one query.

    T_world_cam: (4, 4) float64 camera pose in the map's world frame, None when ``success`` is False.
    query_indices, map_ids: (M,) int64 matched query keypoint rows and repository point rows.
    inliers: (M,) bool RANSAC inliers among the matches.
    confidence: in [0, 1], 0 on failure: inlier ratio x saturating inlier count.
    """

    success: bool
    T_world_cam: np.ndarray | None
    num_matches: int
    num_inliers: int
    confidence: float
    method: str
    features: Features | None = None
    query_indices: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    map_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    reprojection_rmse: float = float("nan")
    timings: dict = field(default_factory=dict)
    message: str = ""


def _distances_to_queries(map_desc: np.ndarray, query_desc: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """For each map descriptor (M, D), the nearest query descriptor: (distance (M,), query row (M,))."""
    import faiss  # lazy: imported with the tracker, FAISS is needed only once a map is searched
    if metric == "l2":
        index = faiss.IndexFlatL2(query_desc.shape[1])
        index.add(np.ascontiguousarray(query_desc, np.float32))
        d, i = index.search(np.ascontiguousarray(map_desc, np.float32), 1)
    else:
        index = faiss.IndexBinaryFlat(query_desc.shape[1] * 8)
        index.add(np.ascontiguousarray(query_desc))
        d, i = index.search(np.ascontiguousarray(map_desc), 1)
    return d[:, 0], i[:, 0]


def match_to_repository(features: Features, repository: Repository, config: LocalizerConfig
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match query features to map points: (query rows (M,), map ids (M,), descriptor distance (M,)).

    Distances are L2 (not squared) for "l2" and bit counts for "hamming".
    """
    if config.match_mode not in MATCH_MODES:
        raise InvalidInputError(f"unknown match mode {config.match_mode!r}; expected one of {MATCH_MODES}")
    if features.metric != repository.metric:
        raise InvalidInputError(f"query features use {features.metric!r} descriptors but the map holds {repository.metric!r}")
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    if len(features) == 0 or len(repository) == 0:
        return empty
    k = max(2, int(config.candidates))
    dist, ids = repository.index.search(features.descriptors, min(k, len(repository)))
    if repository.metric == "l2":
        dist = np.sqrt(np.maximum(dist, 0))
    if config.match_mode == "topk":
        q, col = np.nonzero(ids >= 0)
        keep = np.ones(len(q), bool) if config.max_distance is None else dist[q, col] <= config.max_distance
        return q[keep].astype(np.int64), ids[q, col][keep], dist[q, col][keep]
    best, best_d = ids[:, 0], dist[:, 0]
    keep = best >= 0
    if config.max_distance is not None:
        keep &= best_d <= config.max_distance
    if config.match_mode == "ratio" or config.ratio < 1.0:
        # Second neighbour = the nearest one at a different 3D point (map views of one point are not rivals).
        points = np.asarray(repository.points_world)
        second = np.full(len(best), np.inf, np.float32)
        for col in range(1, ids.shape[1]):
            cand = ids[:, col]
            ok = (cand >= 0) & np.isinf(second) & keep
            if not ok.any():
                continue
            far = np.linalg.norm(points[cand[ok]] - points[best[ok]], axis=1) > config.ratio_radius_m
            rows = np.flatnonzero(ok)[far]
            second[rows] = dist[rows, col]
        keep &= best_d <= config.ratio * second
    query_rows = np.flatnonzero(keep)
    if config.match_mode == "mutual" and len(query_rows):
        map_ids = best[query_rows]
        unique_ids, inverse = np.unique(map_ids, return_inverse=True)
        _, back = _distances_to_queries(np.asarray(repository.descriptors)[unique_ids], features.descriptors,
                                        repository.metric)
        query_rows = query_rows[back[inverse] == query_rows]
    return query_rows.astype(np.int64), best[query_rows].astype(np.int64), best_d[query_rows].astype(np.float32)


def _confidence(num_inliers: int, num_matches: int, min_inliers: int) -> float:
    """Inlier ratio times a count term that is 0 at ``min_inliers`` and saturates towards 1."""
    if num_matches == 0 or num_inliers < min_inliers:
        return 0.0
    ratio = num_inliers / num_matches
    return float(np.clip(ratio * (1.0 - np.exp(-(num_inliers - min_inliers + 1) / min_inliers)), 0.0, 1.0))


class Localizer:
    """Localizes frames against ``repository`` using ``extractor`` (must match the map's descriptors)."""

    def __init__(self, repository: Repository, extractor: Extractor | None = None,
                 config: LocalizerConfig | None = None):
        if extractor is not None and extractor.metric != repository.metric:
            raise InvalidInputError(
                f"extractor {extractor.name!r} gives {extractor.metric!r} descriptors but the map holds {repository.metric!r}")
        if extractor is not None and repository.extractor and repository.extractor != extractor.name:
            logger.warning("map was built with extractor %r, localizing with %r", repository.extractor, extractor.name)
        self.repository = repository
        self.extractor = extractor
        self.config = config or LocalizerConfig()
        self._rng = np.random.default_rng(self.config.seed)

    def localize(self, frame: Frame) -> LocalizationResult:
        """Pose of ``frame`` in the map's world frame (see the module docstring for the recipe)."""
        if self.extractor is None:
            raise InvalidInputError("this localizer has no extractor: use localize_features")
        frame.validate()
        t0 = time.perf_counter()
        features = extract_frame(self.extractor, frame)
        result = self.localize_features(features, frame.camera, frame.depth)
        result.timings["extract"] = time.perf_counter() - t0 - result.timings["total"]
        result.timings["total"] = time.perf_counter() - t0
        return result

    def localize_features(self, features: Features, camera: CameraIntrinsics,
                          depth: np.ndarray | None = None) -> LocalizationResult:
        """Steps 2-4 of the recipe for already extracted query ``features`` (depth: optional (H, W) metres)."""
        cfg = self.config
        t1 = time.perf_counter()
        if cfg.query_top_k is not None:
            features = features.subset(np.argsort(-features.scores, kind="stable")[: cfg.query_top_k])
        q, ids, _ = match_to_repository(features, self.repository, cfg)
        t2 = time.perf_counter()
        uv = features.keypoints[q].astype(np.float64)
        points_world = np.asarray(self.repository.points_world)[ids]
        K = camera.K
        if cfg.use_depth and depth is not None:
            method = "procrustes"
            points_cam = lift_to_camera(uv, depth, camera)
            success, T_world_cam, inliers, rmse = self._solve_3d3d(points_cam, points_world, uv, K)
        else:
            method = "pnp"
            success, T_world_cam, inliers, rmse = self._solve_pnp(points_world, uv, K)
        t3 = time.perf_counter()
        num_inliers = int(inliers.sum())
        success = success and num_inliers >= cfg.min_inliers
        timings = {"match": t2 - t1, "pose": t3 - t2, "total": t3 - t1}
        message = "" if success else f"localization failed: {num_inliers} inliers of {len(q)} matches"
        logger.debug("%s, %d/%d inliers", method, num_inliers, len(q))
        return LocalizationResult(success, T_world_cam if success else None, len(q), num_inliers,
                                  _confidence(num_inliers, len(q), cfg.min_inliers) if success else 0.0, method,
                                  features, q, ids, inliers, rmse, timings, message)

    # ------------------------------------------------------------------ pose solvers
    def _solve_pnp(self, points_world: np.ndarray, uv: np.ndarray, K: np.ndarray, T_init: np.ndarray | None = None
                   ) -> tuple[bool, np.ndarray | None, np.ndarray, float]:
        """RANSAC-PnP + Gauss-Newton: (success, T_world_cam, inlier mask (M,), reprojection RMSE px)."""
        from kp_vo.geometry.pnp import solve_pnp_ransac
        from kp_vo.geometry.se3 import invert

        cfg = self.config
        if len(uv) < 4:
            return False, None, np.zeros(len(uv), bool), float("nan")
        res = solve_pnp_ransac(points_world, uv, K, threshold_px=cfg.threshold_px, iterations=cfg.iterations,
                               confidence=cfg.confidence, min_inliers=cfg.min_inliers, T_init=T_init, rng=self._rng)
        mask = np.zeros(len(uv), bool)
        if res.inliers is not None and len(res.inliers):
            inl = np.asarray(res.inliers)
            mask[inl if inl.dtype != bool else np.flatnonzero(inl)] = True
        if not res.success:
            return False, None, mask, float("nan")
        return True, invert(res.T_cam_world), mask, float(res.reprojection_rmse)

    def _solve_3d3d(self, points_cam: np.ndarray, points_world: np.ndarray, uv: np.ndarray, K: np.ndarray
                    ) -> tuple[bool, np.ndarray | None, np.ndarray, float]:
        """3D-3D RANSAC Procrustes, inlier refit, then PnP refinement seeded with it; falls back to
        plain PnP when too few matched keypoints have depth."""
        from kp_vo.geometry.procrustes import ransac_procrustes, weighted_procrustes

        cfg = self.config
        has_depth = np.all(np.isfinite(points_cam), axis=1)
        idx = np.flatnonzero(has_depth)
        if len(idx) < max(cfg.min_inliers, 3):
            logger.debug("only %d matches have query depth; using PnP", len(idx))
            return self._solve_pnp(points_world, uv, K)
        ok, T_world_cam, inl = ransac_procrustes(points_cam[idx], points_world[idx], cfg.threshold_m,
                                                 iterations=cfg.iterations, confidence=cfg.confidence,
                                                 min_inliers=max(3, cfg.min_inliers), rng=self._rng)
        if not ok:
            return False, None, np.zeros(len(uv), bool), float("nan")
        inl = np.asarray(inl)
        sel = idx[inl] if inl.dtype == bool else idx[inl.astype(np.int64)]
        # Refit on the inliers, then re-select inliers with the refined pose (one round is enough).
        T_world_cam, _ = weighted_procrustes(points_cam[sel], points_world[sel])
        residual = np.linalg.norm(transform(T_world_cam, points_cam[idx]) - points_world[idx], axis=1)
        sel = idx[residual < cfg.threshold_m]
        if len(sel) >= 3:
            T_world_cam, _ = weighted_procrustes(points_cam[sel], points_world[sel])
        # Polish with reprojection error over all matches (depth-less ones too), seeded by the 3D-3D pose.
        success, T_pnp, mask, rmse = self._refine_pnp(T_world_cam, points_world, uv, K)
        if success:
            return True, T_pnp, mask, rmse
        mask = np.zeros(len(uv), bool)
        mask[sel] = True
        return True, T_world_cam, mask, float("nan")

    def _refine_pnp(self, T_world_cam: np.ndarray, points_world: np.ndarray, uv: np.ndarray, K: np.ndarray
                    ) -> tuple[bool, np.ndarray | None, np.ndarray, float]:
        """Gauss-Newton PnP on the matches that reproject within the threshold under ``T_world_cam``."""
        from kp_vo.geometry.pnp import refine_pose_gauss_newton
        from kp_vo.geometry.se3 import invert

        T_cam_world = invert(T_world_cam)
        p = transform(T_cam_world, points_world)
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = (p[:, :2] / p[:, 2:3]) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        err = np.linalg.norm(proj - uv, axis=1)
        mask = (p[:, 2] > 0) & (err < self.config.threshold_px)
        if mask.sum() < self.config.min_inliers:
            return False, None, mask, float("nan")
        T_refined = refine_pose_gauss_newton(T_cam_world, points_world[mask], uv[mask], K)
        T_refined = T_refined[0] if isinstance(T_refined, tuple) else T_refined
        p = transform(T_refined, points_world)
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = (p[:, :2] / p[:, 2:3]) * np.array([K[0, 0], K[1, 1]]) + K[:2, 2]
        err = np.linalg.norm(proj - uv, axis=1)
        mask = (p[:, 2] > 0) & (err < self.config.threshold_px)
        rmse = float(np.sqrt(np.mean(err[mask] ** 2))) if mask.any() else float("nan")
        return True, invert(T_refined), mask, rmse
