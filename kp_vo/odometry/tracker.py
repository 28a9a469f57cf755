"""Frame-to-keyframe visual odometry over a bounded keyframe window (KP3D §3.2 geometry).

One call of ``VisualOdometry.process(frame)`` does, in order:

1. extract keypoints and descriptors;
2. if there is no map yet, initialise it: from the frame's depth (RGB-D or DepthNet), or, for
   monocular input, from two views with enough parallax (essential matrix + triangulation);
3. predict the pose with a constant-velocity motion prior;
4. match the window's 3D points to the frame, guided by the prediction (fall back to plain
   reciprocal descriptor matching against each keyframe when that fails);
5. RANSAC-PnP (with sensor depth also a 3D-3D RANSAC Procrustes of the frame's depth-lifted keypoints,
   weighted by a z^2 depth noise model; the pose that most matches agree with in 2D and in 3D wins,
   and with depth it needs ``min_support_with_depth`` of them) + Gauss-Newton, then a second guided
   matching pass with the solved pose over
   the window points, Gauss-Newton again, and the KP3D Procrustes refinement (kept when it
   does not increase the reprojection error);
6. decide whether the frame becomes a keyframe; if so, give its new keypoints 3D points
   (lifted with depth, or triangulated against the previous keyframes), slide the window, and
   bundle-adjust the window: with sensor depth each observation's measured depth is a residual too
   (weighted by the depth noise model); DepthNet depth is only approximately right and stays out
   (the adjustment keeps its scale and removes its per-keyframe errors).
   Adding the keyframe to the window, triangulation and adjustment run in the mapping worker
   (odometry/mapping_worker.py) while the next frame is extracted, and are joined before that
   frame's pose is solved;
7. when no pose can be solved against the window from the prior or by unguided matching (a fast
   turn, a low frame rate, little texture), localize the frame against the window's keyframes
   through the relocalizer of ``kp_vo.reloc`` (3D-3D with the frame's depth, else PnP) and add
   it to the window; failing that, relocalize against the keyframe archive (every keyframe that
   left the window, or a map loaded with ``load_map``) and resume there; failing that, report
   LOST with the motion prior and an inflated covariance and keep trying.

Ground truth is never read. Poses are ``T_world_cam``; the first keyframe is the world origin.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from kp_vo.config import ConfigError
from kp_vo.errors import InvalidInputError
from kp_vo.features.base import DepthEstimator, Extractor, Features, extract_frame
from kp_vo.geometry.bundle_adjustment import bundle_adjust
from kp_vo.geometry.camera import lift_keypoints, project
from kp_vo.geometry.depth_edges import depth_edge_mask, kinect_depth_sigma
from kp_vo.geometry.matching import match_descriptors
from kp_vo.geometry.pnp import refine_pose_gauss_newton, solve_pnp_ransac
from kp_vo.geometry.procrustes import ransac_procrustes, refine_pose_procrustes
from kp_vo.geometry.se3 import (
    invert,
    make_pose,
    nearest_rotation,
    se3_exp,
    se3_log,
    transform,
)
from kp_vo.geometry.triangulation import triangulate
from kp_vo.odometry.depth import DepthSource
from kp_vo.odometry.guided import GuidedMatcher
from kp_vo.odometry.local_map import LocalMap, new_keyframe
from kp_vo.odometry.mapping_worker import BlasLimit, MappingWorker
from kp_vo.odometry.types import Keyframe, TrackingResult, TrackingState
from kp_vo.reloc.localizer import LocalizationResult, Localizer, LocalizerConfig
from kp_vo.reloc.repository import Repository
from kp_vo.types import Frame

log = logging.getLogger(__name__)


@dataclass
class OdometryConfig:
    """Knobs of the tracker. Pixel thresholds are for the input image resolution."""

    depth_source: str = "auto"          # "auto" | "sensor" | "network" | "triangulation" (see odometry/depth.py)
    network_scale: float = 1.0          # metres per unit of the depth network's output (monocular DepthNet)
    network_every_frame: bool = False   # run the depth network on every frame (the naive baseline), not keyframes only
    window_size: int = 7                # keyframes kept in the window
    match_ratio: float = 0.9            # Lowe ratio for descriptor matching (1.0 disables)
    guided_radius_px: float = 14.0      # search radius around the motion-prior projections (the candidate pairs
                                        # grow with radius^2; the 99th percentile of the final inliers' distance
                                        # to their prior projection stayed below 11 px on every frame of KITTI 00)
    guided_retry_radius_px: float = 20.0  # ... and the wider one tried when that gives too few PnP inliers
                                        # (< 3 x min_inliers)
    guided_max_points: int = 2000       # ... matched there: at most this many window points, the most recently
                                        # observed first
    refine_radius_px: float = 6.0       # search radius around the projections with the solved pose
    refine_max_points: int = 3000       # ... matched there: at most this many window points, most recent first
                                        # (an RGB-D window re-lifts the same surfaces: ~7000 points, the older
                                        # copies add time, not accuracy)
    pnp_threshold_px: float = 2.0       # RANSAC inlier threshold on reprojection error
    pnp_iterations: int = 300           # RANSAC iteration cap
    huber_px: float = 2.0               # Huber threshold of the Gauss-Newton refinement
    min_inliers: int = 15               # fewer inliers than this = pose not trusted (LOST)
    procrustes_refinement: bool = True  # KP3D residual pose correction after PnP + GN
    max_step_ratio: float = 4.0         # a solved step longer than this x the prior's (+ slack) is rejected
    keyframe_inlier_ratio: float = 0.6  # new keyframe when tracked points drop below this share of the last one's
    keyframe_max_interval: int = 8      # ... or after this many frames
    keyframe_min_interval: int = 1      # never two keyframes closer than this many frames
    min_parallax_deg: float = 1.0       # triangulation: minimum angle between the two rays
    max_reprojection_px: float = 2.0    # triangulation: maximum reprojection error in either view
    triangulation_keyframes: int = 2    # previous keyframes new keypoints are triangulated against
    bundle_adjustment: bool = True      # local BA of the window after each keyframe (with sensor depth, its
                                        # measured depths weighed by depth_tolerance_m / 3 + sigma_z)
    ba_fixed_keyframes: int = 2         # oldest window keyframes held fixed (gauge and scale)
    ba_iterations: int = 15
    ba_tolerance: float = 1e-3          # ... stopped once a step lowers the cost by less than this fraction (the
                                        # last 0.1 % took half the iterations on KITTI windows)
    min_depth_m: float = 0.1            # sensor/network depth outside [min, max] is ignored
    max_depth_m: float = 80.0
    depth_noise_per_m2: float = 1.425e-3  # sensor depth noise sigma_z = this x z^2 (m; Kinect v1, Khoshelham &
                                        # Elberink 2012); weights and tolerances of the 3D-3D pose
    depth_tolerance_m: float = 0.02     # a match is 3D-consistent within this + 3 sigma_z of its frame depth
    depth_edge_ratio: float = 0.1       # sensor depth: a keypoint whose depth_edge_window_px window spans more than
                                        # this share of its depth gets no 3D point (0: off; geometry/depth_edges.py;
                                        # a hole in the window alone does not count: 23 % of the TUM cabinet's
                                        # keypoints touch one)
    depth_edge_window_px: int = 5
    min_support_with_depth: int = 30    # matches agreeing in 2D and 3D a pose needs when the frame has sensor
                                        # depth; weaker frames are localized against the window's keyframes
    init_min_matches: int = 80          # monocular initialisation: reciprocal matches needed
    init_min_flow_px: float = 8.0       # ... median optical flow needed (parallax)
    init_min_points: int = 60           # ... triangulated points needed
    init_baseline: float = 1.0          # ... length given to the first baseline (sets the map's unit)
    relocalization: bool = True         # when lost, relocalize against the archive of past keyframes
    archive_points_per_keyframe: int = 300  # best-scoring 3D keypoints archived per keyframe
    archive_max_keyframes: int = 5000   # archive capacity (older keyframes are kept, newer not added) ...
    archive_max_mb: float = 0.0         # ... and its memory bound in MiB, index included (0: none)
    max_lost_frames: int = 30           # after this many LOST frames the map is rebuilt from scratch
    loaded_map_frames: int = 30         # after load_map: frames that only try to relocalize in the loaded map
                                        # before a new map is started at its origin (0: start at once)
    lost_covariance: float = 1.0e3      # variance (m^2, rad^2) reported while LOST / INITIALIZING
    seed: int = 0                       # RANSAC seed (PnP and the monocular essential matrix); reset() restarts it
    blas_threads: int = 1               # numpy BLAS threads while tracking (0 = unchanged): the matrices are
                                        # small, and threaded BLAS on them was 3x slower on a busy 2-core CPU
    async_mapping: bool = True          # triangulate and bundle-adjust a new keyframe in a worker thread while
                                        # the next frame's keypoints are extracted (joined before its pose is
                                        # solved, so the poses are the same as with false: deterministic)

    def __post_init__(self) -> None:
        """One ConfigError naming the first out-of-range knob (NaN fails every check)."""
        rules = [
            ("window_size", self.window_size >= 2, ">= 2"),
            ("network_scale", self.network_scale > 0, "> 0"),
            ("match_ratio", 0 < self.match_ratio <= 1, "in (0, 1]"),
            ("guided_radius_px", self.guided_radius_px > 0, "> 0"),
            ("guided_retry_radius_px", self.guided_retry_radius_px >= 0, ">= 0 (0 = no retry)"),
            ("guided_max_points", self.guided_max_points >= 1, ">= 1"),
            ("refine_radius_px", self.refine_radius_px > 0, "> 0"),
            ("refine_max_points", self.refine_max_points >= 1, ">= 1"),
            ("pnp_threshold_px", self.pnp_threshold_px > 0, "> 0"),
            ("pnp_iterations", self.pnp_iterations >= 1, ">= 1"),
            ("huber_px", self.huber_px > 0, "> 0"),
            ("min_inliers", self.min_inliers >= 4, ">= 4 (a pose needs 4 correspondences)"),
            ("max_step_ratio", self.max_step_ratio > 0, "> 0"),
            ("keyframe_inlier_ratio", self.keyframe_inlier_ratio > 0, "> 0"),
            ("keyframe_max_interval", self.keyframe_max_interval >= 1, ">= 1"),
            ("keyframe_min_interval", 0 <= self.keyframe_min_interval <= self.keyframe_max_interval,
             "in [0, keyframe_max_interval]"),
            ("min_parallax_deg", 0 <= self.min_parallax_deg < 90, "in [0, 90)"),
            ("max_reprojection_px", self.max_reprojection_px > 0, "> 0"),
            ("triangulation_keyframes", self.triangulation_keyframes >= 1, ">= 1"),
            ("ba_fixed_keyframes", 1 <= self.ba_fixed_keyframes < self.window_size, "in [1, window_size)"),
            ("ba_iterations", self.ba_iterations >= 0, ">= 0"),
            ("ba_tolerance", self.ba_tolerance >= 0, ">= 0"),
            ("max_depth_m", self.max_depth_m > 0, "> 0"),
            ("min_depth_m", 0 <= self.min_depth_m < self.max_depth_m, "in [0, max_depth_m)"),
            ("depth_noise_per_m2", self.depth_noise_per_m2 > 0, "> 0"),
            ("depth_tolerance_m", self.depth_tolerance_m > 0, "> 0"),
            ("min_support_with_depth", self.min_support_with_depth >= 3, ">= 3"),
            ("depth_edge_ratio", self.depth_edge_ratio >= 0, ">= 0"),
            ("depth_edge_window_px", self.depth_edge_window_px >= 3 and self.depth_edge_window_px % 2 == 1,
             "odd and >= 3"),
            ("init_min_matches", self.init_min_matches >= 8, ">= 8 (the essential matrix needs them)"),
            ("init_min_flow_px", self.init_min_flow_px >= 0, ">= 0"),
            ("init_min_points", self.init_min_points >= 1, ">= 1"),
            ("init_baseline", self.init_baseline > 0, "> 0"),
            ("archive_points_per_keyframe", self.archive_points_per_keyframe >= 1, ">= 1"),
            ("archive_max_keyframes", self.archive_max_keyframes >= 0, ">= 0"),
            ("archive_max_mb", self.archive_max_mb >= 0, ">= 0 (0 = no bound)"),
            ("max_lost_frames", self.max_lost_frames >= 0, ">= 0"),
            ("loaded_map_frames", self.loaded_map_frames >= 0, ">= 0"),
            ("lost_covariance", self.lost_covariance > 0, "> 0"),
            ("blas_threads", self.blas_threads >= 0, ">= 0"),
            ("seed", self.seed >= 0, ">= 0"),
        ]
        for name, ok, expected in rules:
            if not ok:
                raise ConfigError(f"odometry.{name} must be {expected}, got {getattr(self, name)!r}")
        for field in dataclasses.fields(self):   # no knob takes an infinite value (NaN fails the rules above)
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"odometry.{field.name} must be finite, got {value!r}")


@dataclass
class _PoseSolution:
    T_world_cam: np.ndarray
    covariance: np.ndarray
    point_ids: np.ndarray      # (M,) map point ids of the inlier matches
    keypoints: np.ndarray      # (M,) current keypoint indices of the inlier matches
    keyframe_uv: np.ndarray    # (M, 2) pixels of those map points in their newest observing keyframe
    num_matches: int


class VisualOdometry:
    """Frame-to-keyframe VO. See the module docstring for the per-frame recipe."""

    def __init__(self, config: OdometryConfig | None = None, extractor: Extractor | None = None,
                 depth_estimator: DepthEstimator | None = None):
        if extractor is None:
            raise InvalidInputError("VisualOdometry needs a keypoint extractor")
        self.config = config or OdometryConfig()
        self.extractor = extractor
        self.depth_source = DepthSource(self.config.depth_source, depth_estimator, self.config.network_scale,
                                        self.config.network_every_frame)
        self._map = LocalMap(self.config.window_size)
        self._blas = BlasLimit(self.config.blas_threads)
        self._mapping = MappingWorker(self.config.async_mapping, self._blas)
        self._descriptor_width: int | None = None   # of the extractor's descriptors, from the first frame
        self.reset()

    # -- public state ---------------------------------------------------------------------
    @property
    def keyframes(self) -> list[Keyframe]:
        self.flush()
        return list(self._map.keyframes)

    def flush(self) -> None:
        """Wait for the last keyframe's mapping job (it runs on after ``process`` returns); after it the
        map is complete and numpy's BLAS has its thread count back."""
        self._mapping.wait()

    @property
    def state(self) -> TrackingState:
        return self._state

    def reseed(self, seed: int) -> None:
        """Start over (:meth:`reset`) with RANSAC seed ``seed``: the same frames tracked again with another seed."""
        self.config = dataclasses.replace(self.config, seed=seed)
        self.reset()

    def reset(self) -> None:
        """Forget the map, the archive and the motion; the next frame starts a new trajectory at the origin.

        The RANSAC generator restarts from ``config.seed`` too, so the same frames give the same poses
        whatever ran before (another tracker, a bag loop)."""
        self.flush()
        self._map.clear()
        self._rng = np.random.default_rng(self.config.seed)
        self._archive: Repository | None = None
        self._state = TrackingState.INITIALIZING
        self._init_reference: tuple[Frame, Features] | None = None
        self._T_world_cam = np.eye(4)
        self._velocity = np.eye(4)          # T_prev_cur of the last step (camera motion per frame)
        self._frames_since_keyframe = 0
        self._lost_frames = 0
        self._tracked_at_keyframe = 0
        self._T_origin = np.eye(4)          # pose the map is anchored at after a rebuild
        self._loaded_map_tries = 0          # frames left that may only relocalize in a loaded map

    # -- the step -------------------------------------------------------------------------
    def process(self, frame: Frame) -> TrackingResult:
        """Estimate the pose of ``frame``. Raises InvalidInputError on a bad frame (state untouched)."""
        frame.validate()
        self._blas.acquire()
        try:
            return self._process(frame)
        finally:
            self._blas.release()

    def _process(self, frame: Frame) -> TrackingResult:
        t0 = time.perf_counter()
        features = extract_frame(self.extractor, frame)
        timings = {"extract": time.perf_counter() - t0}
        self._descriptor_width = features.descriptors.shape[1]
        t = time.perf_counter()
        self.depth_source.on_frame(frame)
        timings["depth"] = time.perf_counter() - t
        # The previous keyframe's mapping ran while this frame was extracted; the map is read from here on.
        timings["map"] = self._mapping.wait()

        if self._state == TrackingState.INITIALIZING:
            result = self._initialize(frame, features, timings)
        else:
            result = self._track(frame, features, timings)
        timings["total"] = time.perf_counter() - t0
        result.timings = timings
        return result

    # -- initialisation -------------------------------------------------------------------
    def _initialize(self, frame: Frame, features: Features, timings: dict) -> TrackingResult:
        if self._archive is not None:  # a loaded map or an earlier map: try to continue in its frame
            relocalized = self._relocalize(frame, features)
            if relocalized is not None:
                self._loaded_map_tries = 0
                return relocalized
            if self._loaded_map_tries > 0 and self._archive is not None and self.config.relocalization:
                # A new map started now would sit at the loaded map's origin, not where the camera is: wait.
                self._loaded_map_tries -= 1
                return self._result(frame, TrackingState.INITIALIZING, self._inflated(), features,
                                    message="not relocalized in the loaded map yet")
        t = time.perf_counter()
        depth = self.depth_source.keyframe_depth(frame)
        if depth is not None:
            ok = self._start_map_with_depth(frame, features, depth)
        else:
            ok = self._start_map_two_view(frame, features)
        timings["map"] += time.perf_counter() - t
        if ok:
            self._state = TrackingState.TRACKING
            return self._result(frame, TrackingState.TRACKING, self._pose_covariance_default(), features,
                                is_keyframe=True, message="map initialised")
        return self._result(frame, TrackingState.INITIALIZING, self._inflated(), features,
                            message="waiting for enough texture / parallax to initialise")

    def _start_map_with_depth(self, frame: Frame, features: Features, depth: np.ndarray) -> bool:
        points_cam, valid = self._lift(features, depth, frame)
        if valid.sum() < self.config.init_min_points:
            return False
        kf = new_keyframe(frame.index, frame.stamp_ns, self._T_world_cam, features, depth)
        self._keep_measured_depth(kf, points_cam, valid, frame)
        ids = np.full(len(features), -1, np.int64)
        ids[valid] = self._map.add_points(transform(self._T_world_cam, points_cam[valid]))
        self._add_keyframe(kf, ids)
        self._after_keyframe(int(valid.sum()))
        return True

    def _start_map_two_view(self, frame: Frame, features: Features) -> bool:
        cfg = self.config
        if self._init_reference is None or len(self._init_reference[1]) < cfg.init_min_matches:
            self._init_reference = (frame, features)
            return False
        ref_frame, ref_features = self._init_reference
        K = frame.camera.K
        matches, _ = match_descriptors(ref_features.descriptors, features.descriptors, features.metric,
                                       mutual=True, ratio=cfg.match_ratio)
        if len(matches) < cfg.init_min_matches:
            self._init_reference = (frame, features)  # the scene changed too much: start over from here
            return False
        uv_ref = ref_features.keypoints[matches[:, 0]].astype(np.float64)
        uv_cur = features.keypoints[matches[:, 1]].astype(np.float64)
        if np.median(np.linalg.norm(uv_cur - uv_ref, axis=1)) < cfg.init_min_flow_px:
            return False  # not enough parallax yet: keep the reference, wait for more motion
        cv2.setRNGSeed(int(self._rng.integers(2**31 - 1)))  # OpenCV's RANSAC draws from its thread-global RNG
        E, mask = cv2.findEssentialMat(uv_ref, uv_cur, K, method=cv2.RANSAC, prob=0.999, threshold=1.0)
        if E is None or E.shape != (3, 3):
            return False
        _, R, t, mask = cv2.recoverPose(E, uv_ref, uv_cur, K, mask=mask)
        inl = mask.ravel() > 0
        T_cur_ref = make_pose(R, t.ravel() * cfg.init_baseline)
        points_ref, valid = triangulate(np.eye(4), T_cur_ref, uv_ref[inl], uv_cur[inl], K,
                                        cfg.max_reprojection_px, cfg.min_parallax_deg)
        if valid.sum() < cfg.init_min_points:
            return False
        # The reference keyframe is the world origin; both keyframes observe the new points.
        T_world_ref = self._T_origin
        idx = np.flatnonzero(inl)[valid]
        ids = self._map.add_points(transform(T_world_ref, points_ref[valid]))
        kf_ref = new_keyframe(ref_frame.index, ref_frame.stamp_ns, T_world_ref, ref_features, None)
        ids_ref = np.full(len(ref_features), -1, np.int64)
        ids_ref[matches[idx, 0]] = ids
        self._add_keyframe(kf_ref, ids_ref)
        T_world_cur = T_world_ref @ invert(T_cur_ref)
        kf_cur = new_keyframe(frame.index, frame.stamp_ns, T_world_cur, features, None)
        ids_cur = np.full(len(features), -1, np.int64)
        ids_cur[matches[idx, 1]] = ids
        self._add_keyframe(kf_cur, ids_cur)
        steps = max(1, frame.index - ref_frame.index)
        self._velocity = _fractional_motion(invert(T_cur_ref), 1.0 / steps)
        self._T_world_cam = T_world_cur
        self._init_reference = None
        self._after_keyframe(len(ids))
        log.info("monocular map initialised from frames %d-%d with %d points", ref_frame.index, frame.index, len(ids))
        return True

    # -- tracking -------------------------------------------------------------------------
    def _track(self, frame: Frame, features: Features, timings: dict) -> TrackingResult:
        K = frame.camera.K
        T_pred = _rigid(self._T_world_cam @ self._velocity)
        t = time.perf_counter()
        depth = frame.depth if self.depth_source.kind_for(frame) == "sensor" else None
        solution = self._solve_pose(features, K, T_pred, frame.camera, depth)
        timings["pose"] = time.perf_counter() - t

        if solution is None:
            recovered = self._recover_in_window(frame, features) or self._relocalize(frame, features)
            if recovered is not None:
                return recovered
            return self._handle_lost(frame, features, T_pred)

        self._velocity = _rigid(invert(self._T_world_cam) @ solution.T_world_cam)
        self._T_world_cam = solution.T_world_cam
        self._lost_frames = 0
        self._state = TrackingState.TRACKING
        self._frames_since_keyframe += 1

        t = time.perf_counter()
        is_kf = self._need_keyframe(len(solution.point_ids))
        result = self._result(frame, TrackingState.TRACKING, solution.covariance, features, is_keyframe=is_kf)
        result.num_matches = solution.num_matches
        result.num_inliers = len(solution.point_ids)
        result.matches = np.stack([solution.keypoints, solution.point_ids], axis=1)
        result.match_keyframe_uv = solution.keyframe_uv
        if is_kf:
            self._mapping.submit(self._insert_keyframe(frame, features, solution))
        timings["map"] += time.perf_counter() - t
        return result

    def _solve_pose(self, features: Features, K: np.ndarray, T_pred: np.ndarray, camera,
                    depth: np.ndarray | None = None) -> _PoseSolution | None:
        """Match window points to the frame and solve its pose; None when it cannot be trusted. ``depth``:
        the frame's sensor depth (H, W) metres, which adds 3D-3D pose hypotheses (see :meth:`_hypotheses`)."""
        cfg = self.config
        window = self._map.window_points()
        if len(window) < cfg.min_inliers or len(features) < cfg.min_inliers:
            return None
        uv = features.keypoints.astype(np.float64)
        guided = GuidedMatcher(window, features, K, camera)   # the guided passes below share its searches
        ratio = cfg.match_ratio if cfg.match_ratio < 1.0 else None

        # Candidate match sets, made only when the ones before them gave too few inliers: guided by the
        # motion prior in a narrow, then a wide window; then reciprocal matching against the window's
        # descriptors (no prior).
        candidates = []
        if self._state == TrackingState.TRACKING:
            rows = _most_recent(window, cfg.guided_max_points)
            radii = [cfg.guided_radius_px]
            if cfg.guided_retry_radius_px > cfg.guided_radius_px:
                radii.append(cfg.guided_retry_radius_px)
            candidates = [lambda r=r: guided.match(T_pred, r, ratio, rows) for r in radii]
        candidates.append(lambda: match_descriptors(window.descriptors, features.descriptors, features.metric,
                                                    mutual=True, ratio=ratio)[0])
        best = None   # (T_world_cam, support, number of matches)
        for candidate in candidates:
            matches = candidate()
            if len(matches) < cfg.min_inliers:
                continue
            for T, support in self._hypotheses(window.xyz[matches[:, 0]], uv[matches[:, 1]], K, T_pred, depth):
                if best is None or support > best[1]:
                    best = (T, support, len(matches))
            if best is not None and best[1] >= 3 * cfg.min_inliers:
                break
        if best is None or best[1] < (cfg.min_support_with_depth if depth is not None else cfg.min_inliers):
            return None
        T_world_cam, _, num_matches = best

        # Second pass: the window points (the refine_max_points newest), guided by the solved pose, then
        # GN + Procrustes.
        matches = guided.match(T_world_cam, cfg.refine_radius_px, ratio, _most_recent(window, cfg.refine_max_points))
        if len(matches) < cfg.min_inliers:
            return None
        P, q = window.xyz[matches[:, 0]], uv[matches[:, 1]]
        T_cw, _, _ = refine_pose_gauss_newton(invert(T_world_cam), P, q, K, 10, cfg.huber_px, covariance=False)
        err = _reprojection_errors(T_cw, P, q, K)
        inl = err < cfg.pnp_threshold_px
        if inl.sum() < cfg.min_inliers:
            return None
        T_cw, cov, rmse = refine_pose_gauss_newton(T_cw, P[inl], q[inl], K, 10, cfg.huber_px)
        if cfg.procrustes_refinement:
            T_proc = refine_pose_procrustes(T_cw, P[inl], q[inl], K)
            if _rmse(T_proc, P[inl], q[inl], K) <= _rmse(T_cw, P[inl], q[inl], K):
                T_cw = T_proc
        T_world_cam = _rigid(invert(T_cw))
        if not self._plausible_step(T_world_cam, T_pred):
            log.debug("rejected a pose jump against the motion prior")
            return None
        return _PoseSolution(T_world_cam, cov, window.ids[matches[inl, 0]], matches[inl, 1],
                             window.uv[matches[inl, 0]], num_matches)

    def _hypotheses(self, P: np.ndarray, q: np.ndarray, K: np.ndarray, T_pred: np.ndarray,
                    depth: np.ndarray | None):
        """Poses ``T_world_cam`` for matched window points P (M, 3) seen at pixels q (M, 2), each with its
        support: RANSAC-PnP; with sensor ``depth`` also the 3D-3D RANSAC Procrustes of the frame's
        depth-lifted keypoints onto P (weighted by the depth noise model), unless PnP's support is already
        strong. Support = matches that reproject within pnp_threshold_px and, where the frame has depth,
        lie within the depth tolerance in 3D (both depths agree): a PnP pose fitted to wrong matches finds
        no 3D agreement, a wrong 3D-3D pose no reprojection agreement."""
        cfg = self.config
        pnp = solve_pnp_ransac(P, q, K, cfg.pnp_threshold_px, cfg.pnp_iterations, 0.999, cfg.min_inliers,
                               invert(T_pred), self._rng, final_refinement=False)  # refined by the solved-pose pass
        if depth is None:
            if pnp.success:
                yield invert(pnp.T_cam_world), pnp.num_inliers
            return
        points_cam, tolerance = self._lift_with_tolerance(q, depth, K)
        if pnp.success:
            T = invert(pnp.T_cam_world)
            support = _joint_support(T, P, q, K, cfg.pnp_threshold_px, points_cam, tolerance)
            yield T, support
            if support >= 3 * cfg.min_inliers:
                return
        ok, T, _ = ransac_procrustes(points_cam, P, tolerance, cfg.pnp_iterations, 0.999, cfg.min_inliers, self._rng,
                                     weights=tolerance**-2)
        if ok:
            yield T, _joint_support(T, P, q, K, cfg.pnp_threshold_px, points_cam, tolerance)

    def _lift_with_tolerance(self, q: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera points (M, 3) of pixels q (M, 2) from sensor depth (NaN rows where it is invalid or outside
        [min_depth_m, max_depth_m]) and each one's 3D tolerance (M,) metres, depth_tolerance_m + 3 sigma_z."""
        cfg = self.config
        points_cam, valid = self._lift_in_range(q, depth, K)
        points_cam[~valid] = np.nan
        sigma = kinect_depth_sigma(points_cam[:, 2], cfg.depth_noise_per_m2)
        tolerance = cfg.depth_tolerance_m + 3.0 * np.where(valid, sigma, 0.0)
        return points_cam, tolerance

    def _plausible_step(self, T_world_cam: np.ndarray, T_pred: np.ndarray) -> bool:
        """Reject a solved pose that jumps far beyond the motion prior (a wrong PnP solution)."""
        step = np.linalg.norm((invert(self._T_world_cam) @ T_world_cam)[:3, 3])
        prior = np.linalg.norm(self._velocity[:3, 3])
        scale = max(prior, self._map_scale())
        return step <= self.config.max_step_ratio * scale + 1e-9

    def _map_scale(self) -> float:
        """Typical camera-to-point distance in the window (the unit a plausible step is measured in)."""
        kf = self._map.keyframes[-1]
        pts = kf.points_world[np.isfinite(kf.points_world[:, 0])]
        if len(pts) == 0:
            return 1.0
        return float(np.median(np.linalg.norm(pts - kf.T_world_cam[:3, 3], axis=1))) * 0.25

    # -- keyframes ------------------------------------------------------------------------
    def _need_keyframe(self, num_tracked: int) -> bool:
        cfg = self.config
        if self._frames_since_keyframe < cfg.keyframe_min_interval:
            return False
        return (num_tracked < cfg.keyframe_inlier_ratio * self._tracked_at_keyframe
                or self._frames_since_keyframe >= cfg.keyframe_max_interval)

    def _insert_keyframe(self, frame: Frame, features: Features, solution: _PoseSolution) -> Callable[[], None]:
        """Make the frame a keyframe with its tracked points; return the local-mapping job that gives its
        other keypoints depth-lifted points, adds it to the window and completes it (see
        :meth:`_map_keyframe`)."""
        depth = self.depth_source.keyframe_depth(frame)
        kf = new_keyframe(frame.index, frame.stamp_ns, solution.T_world_cam, features, depth)
        ids = np.full(len(features), -1, np.int64)
        ids[solution.keypoints] = solution.point_ids
        self._after_keyframe(len(solution.point_ids))   # the job counts the keyframe's points when it is done
        return lambda: self._map_keyframe(kf, ids, frame, refine=self.config.bundle_adjustment)

    def _map_keyframe(self, kf: Keyframe, ids: np.ndarray, frame: Frame, refine: bool) -> None:
        """Local mapping of a new keyframe observing point ``ids`` (N,) (-1: none) (runs in the mapping
        worker; nothing else touches the map meanwhile): lift its other keypoints with the keyframe depth,
        add it to the window (archiving the keyframe that leaves), triangulate its new points against the
        previous keyframes when it has no depth, bundle-adjust the window, continue tracking from the
        adjusted keyframe pose, and collect the window's points for the next frame."""
        K = frame.camera.K
        if kf.depth is not None:
            points_cam, valid = self._lift(kf.features, kf.depth, frame)
            self._keep_measured_depth(kf, points_cam, valid, frame)
            fresh = valid & (ids < 0)
            ids[fresh] = self._map.add_points(transform(kf.T_world_cam, points_cam[fresh]))
        self._add_keyframe(kf, ids)
        if kf.depth is None:
            for previous in self._map.keyframes[-1 - self.config.triangulation_keyframes:-1][::-1]:
                self._triangulate_new_points(previous, kf, K)
        if refine:
            self._local_bundle_adjustment(K)
            self._T_world_cam = kf.T_world_cam.copy()
        self._tracked_at_keyframe = int((kf.point_ids >= 0).sum())
        self._map.prepare_window_points()

    def _local_bundle_adjustment(self, K: np.ndarray) -> None:
        """Refine the window's free keyframe poses and its points seen twice or more; drop bad observations."""
        cfg = self.config
        keyframes = self._map.keyframes
        if len(keyframes) <= cfg.ba_fixed_keyframes:
            return
        kf_idx, kp_idx, pid = self._map.observations()
        ids, inverse, counts = np.unique(pid, return_inverse=True, return_counts=True)
        use = counts[inverse] >= 2
        if use.sum() < 3 * cfg.min_inliers:
            return
        ids_used, point_of_obs = np.unique(pid[use], return_inverse=True)
        uv = self._map.gather("keypoints", kf_idx[use], kp_idx[use])
        T_cw = np.stack([invert(kf.T_world_cam) for kf in keyframes])
        fixed = np.arange(len(keyframes)) < cfg.ba_fixed_keyframes
        z, sigma = self._measured_depths(kf_idx[use], kp_idx[use])
        T_cw, points, residual = bundle_adjust(T_cw, self._map.points(ids_used), kf_idx[use], point_of_obs,
                                               uv.astype(np.float64), K, fixed, cfg.huber_px, cfg.ba_iterations,
                                               cfg.ba_tolerance, obs_depth=z, obs_depth_sigma=sigma)
        for kf, T in zip(keyframes, T_cw):
            kf.T_world_cam = _rigid(invert(T))
        self._map.set_points(ids_used, points)
        bad = residual > 2.0 * cfg.pnp_threshold_px
        for w, k in zip(kf_idx[use][bad], kp_idx[use][bad]):
            keyframes[w].point_ids[k] = -1
        self._map.sync_all()

    def _measured_depths(self, keyframe_index: np.ndarray, keypoint_index: np.ndarray
                         ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Sensor depth (M,) metres of the window observations (window keyframe index, keypoint index) and its
        standard deviation (M,), a third of the 3D tolerance (``depth_tolerance_m`` / 3 + sigma_z); NaN depth
        where none was measured. (None, None) when no window keyframe has sensor depth."""
        keyframes = self._map.keyframes
        if all(kf.keypoint_depth is None for kf in keyframes):
            return None, None
        z = self._map.gather_rows([kf.keypoint_depth if kf.keypoint_depth is not None
                                   else np.full(len(kf.features), np.nan) for kf in keyframes],
                                  keyframe_index, keypoint_index)
        sigma = self.config.depth_tolerance_m / 3.0 + kinect_depth_sigma(z, self.config.depth_noise_per_m2)
        return z, sigma

    def _keep_measured_depth(self, kf: Keyframe, points_cam: np.ndarray, valid: np.ndarray, frame: Frame) -> None:
        """Keep the keyframe's sensor depth at its keypoints (``points_cam`` (N, 3) lifted, ``valid`` (N,))
        for the window's bundle adjustment; network depth is not kept (its scale is only a prior)."""
        if self.depth_source.kind_for(frame) == "sensor":
            kf.keypoint_depth = np.where(valid, points_cam[:, 2], np.nan)

    def _triangulate_new_points(self, older: Keyframe, newer: Keyframe, K: np.ndarray) -> None:
        """Match keypoints without a point in both keyframes and triangulate them with the keyframe poses."""
        cfg = self.config
        free_old = np.flatnonzero(older.point_ids < 0)
        free_new = np.flatnonzero(newer.point_ids < 0)
        if len(free_old) < 8 or len(free_new) < 8:
            return
        ratio = cfg.match_ratio if cfg.match_ratio < 1.0 else None
        matches, _ = match_descriptors(older.features.descriptors[free_old], newer.features.descriptors[free_new],
                                       newer.features.metric, mutual=True, ratio=ratio)
        if len(matches) == 0:
            return
        i_old, i_new = free_old[matches[:, 0]], free_new[matches[:, 1]]
        pts, valid = triangulate(invert(older.T_world_cam), invert(newer.T_world_cam),
                                 older.features.keypoints[i_old].astype(np.float64),
                                 newer.features.keypoints[i_new].astype(np.float64), K,
                                 cfg.max_reprojection_px, cfg.min_parallax_deg)
        if valid.sum() == 0:
            return
        ids = self._map.add_points(pts[valid])
        self._map.assign(older, i_old[valid], ids)
        self._map.assign(newer, i_new[valid], ids)

    def _add_keyframe(self, keyframe: Keyframe, point_ids: np.ndarray) -> None:
        """Add to the window; archive the keyframe that leaves it (the map used for relocalization)."""
        dropped = self._map.add_keyframe(keyframe, point_ids)
        if dropped is not None and self.config.relocalization:
            self._archive_keyframe(dropped)

    def _archive_keyframe(self, kf: Keyframe) -> None:
        if self._archive is None:
            self._archive = Repository(kf.features.metric, kf.features.descriptors.shape[1], self.extractor.name,
                                       {"source": "odometry keyframes"}, max_bytes=self._archive_max_bytes())
        if (self._archive.num_frames >= self.config.archive_max_keyframes
                or not self._archive.can_add(self.config.archive_points_per_keyframe)):
            log.debug("keyframe archive full (%d keyframes, %d bytes); not archiving frame %d",
                      self._archive.num_frames, self._archive.nbytes, kf.frame_index)
            return
        self._archive.add_points(kf.points_world, kf.features, kf.frame_index, kf.stamp_ns, kf.T_world_cam,
                                 self.config.archive_points_per_keyframe)

    def _archive_max_bytes(self) -> int | None:
        return int(self.config.archive_max_mb * 2**20) or None

    # -- relocalization -------------------------------------------------------------------
    def export_map(self) -> Repository:
        """The archive plus the current window as one 3D keypoint repository (for ``save_map``)."""
        self.flush()
        window = [kf for kf in self._map.keyframes if np.isfinite(kf.points_world[:, 0]).any()]
        if not window and self._archive is None:
            raise InvalidInputError("no map yet: nothing has been tracked")
        current = Repository.from_keyframes(window, self.config.archive_points_per_keyframe, self.extractor.name) \
            if window else None
        if self._archive is None:
            return current
        return self._archive.merge(current) if current is not None else self._archive

    def check_map(self, repository: Repository) -> None:
        """Raise InvalidInputError when ``repository``'s descriptors are not this extractor's: another
        metric, or another width (known once a frame has been extracted). Changes nothing."""
        if repository.metric != self.extractor.metric:
            raise InvalidInputError(f"the map holds {repository.metric!r} descriptors but extractor "
                                    f"{self.extractor.name!r} gives {self.extractor.metric!r}")
        if self._descriptor_width is not None and repository.descriptor_dim != self._descriptor_width:
            raise InvalidInputError(f"the map holds {repository.descriptor_dim}-wide descriptors but extractor "
                                    f"{self.extractor.name!r} gives {self._descriptor_width}-wide ones")

    def load_map(self, repository: Repository) -> None:
        """Start over inside ``repository``'s world frame: the next frames (up to ``loaded_map_frames``) only
        try to relocalize against it; after them a new map starts at its origin. A map this extractor
        cannot match is refused before anything is reset (:meth:`check_map`)."""
        self.check_map(repository)
        self.reset()
        self._archive = repository
        if self._archive_max_bytes() is not None:
            repository.max_bytes = self._archive_max_bytes()   # later keyframes join it within the bound
        self._loaded_map_tries = self.config.loaded_map_frames

    def _localizer(self, repository: Repository, min_inliers: int) -> Localizer:
        return Localizer(repository, None, LocalizerConfig(threshold_px=self.config.pnp_threshold_px,
                                                           min_inliers=min_inliers))

    def _recover_in_window(self, frame: Frame, features: Features) -> TrackingResult | None:
        """When the window cannot be tracked from the motion prior (a fast turn, a low frame rate), localize
        the frame against the window's keyframes through the relocalizer (3D-3D with the frame's depth,
        else PnP) and add it to the window as a keyframe observing the points it matched; None on failure."""
        cfg = self.config
        keyframes = [kf for kf in self._map.keyframes if np.isfinite(kf.points_world[:, 0]).any()]
        if not cfg.relocalization or not keyframes:
            return None
        window = Repository.from_keyframes(keyframes, None, self.extractor.name)
        depth = self.depth_source.keyframe_depth(frame)
        found = self._localizer(window, cfg.min_inliers).localize_features(features, frame.camera, depth)
        if not found.success:
            return None
        log.debug("frame %d placed against the window's keyframes (%d inliers)", frame.index, found.num_inliers)
        self._continue_at(frame, features, found, window, depth, new_window=False)
        return self._placed_result(frame, features, found,
                                   f"placed against the window with {found.num_inliers} inliers")

    def _relocalize(self, frame: Frame, features: Features) -> TrackingResult | None:
        """Localize against the archive; on success rebuild the window at that pose and resume tracking."""
        cfg = self.config
        if not cfg.relocalization or self._archive is None or len(self._archive) < cfg.min_inliers:
            return None
        try:  # a map loaded before the first frame, when the extractor's width was not known yet
            self.check_map(self._archive)
        except InvalidInputError as exc:
            log.error("dropping the loaded map: %s", exc)
            self._archive = None
            return None
        depth = self.depth_source.keyframe_depth(frame)
        found = self._localizer(self._archive, 2 * cfg.min_inliers).localize_features(features, frame.camera, depth)
        if not found.success:
            return None
        log.info("frame %d relocalized against the keyframe archive (%d inliers)", frame.index, found.num_inliers)
        self._continue_at(frame, features, found, self._archive, depth, new_window=True)
        result = self._placed_result(frame, features, found, f"relocalized with {found.num_inliers} inliers")
        result.relocalized = True
        return result

    def _continue_at(self, frame: Frame, features: Features, found: LocalizationResult, repository: Repository,
                     depth: np.ndarray | None, new_window: bool) -> None:
        """Make the frame a keyframe at its localized pose, observing the ``repository`` points it matched
        (and its depth-lifted keypoints), and track on from it; ``new_window``: in a window of its own."""
        T = _rigid(found.T_world_cam)
        if new_window:
            self._map.clear()
        kf = new_keyframe(frame.index, frame.stamp_ns, T, features, depth)
        ids = np.full(len(features), -1, np.int64)
        rows, map_ids = found.query_indices[found.inliers], found.map_ids[found.inliers]
        ids[rows] = self._map.add_points(np.asarray(repository.points_world)[map_ids])
        if depth is not None:
            points_cam, valid = self._lift(features, depth, frame)
            self._keep_measured_depth(kf, points_cam, valid, frame)
            fresh = valid & (ids < 0)
            ids[fresh] = self._map.add_points(transform(T, points_cam[fresh]))
        self._add_keyframe(kf, ids)
        self._T_world_cam = T
        self._velocity = np.eye(4)          # the motion since the last tracked frame is not a velocity
        self._state = TrackingState.TRACKING
        self._lost_frames = 0
        self._init_reference = None
        self._after_keyframe(int((ids >= 0).sum()))

    def _placed_result(self, frame: Frame, features: Features, found: LocalizationResult,
                       message: str) -> TrackingResult:
        result = self._result(frame, TrackingState.TRACKING, self._inflated() * 1e-6, features, is_keyframe=True,
                              message=message)
        result.num_matches, result.num_inliers = found.num_matches, found.num_inliers
        return result

    def _after_keyframe(self, num_points: int) -> None:
        self._frames_since_keyframe = 0
        self._tracked_at_keyframe = num_points

    # -- loss -----------------------------------------------------------------------------
    def _handle_lost(self, frame: Frame, features: Features, T_pred: np.ndarray) -> TrackingResult:
        self._lost_frames += 1
        self._T_world_cam = T_pred
        self._state = TrackingState.LOST
        if self._lost_frames > self.config.max_lost_frames:
            log.warning("lost for %d frames: rebuilding the map at the predicted pose", self._lost_frames)
            self._rebuild_map_at(T_pred)
            return self._result(frame, TrackingState.INITIALIZING, self._inflated(), features,
                                message="lost too long; re-initialising")
        return self._result(frame, TrackingState.LOST, self._inflated(), features,
                            message=f"tracking lost for {self._lost_frames} frame(s); using the motion prior")

    def _rebuild_map_at(self, T_world_cam: np.ndarray) -> None:
        self._map.clear()
        self._state = TrackingState.INITIALIZING
        self._init_reference = None
        self._T_origin = T_world_cam.copy()
        self._T_world_cam = T_world_cam.copy()
        self._velocity = np.eye(4)
        self._lost_frames = 0

    # -- helpers --------------------------------------------------------------------------
    def _lift(self, features: Features, depth: np.ndarray, frame: Frame) -> tuple[np.ndarray, np.ndarray]:
        """Camera points (N, 3) of the frame's keypoints from keyframe ``depth`` and which are usable (N,):
        depth within [min_depth_m, max_depth_m] and, for sensor depth, not on a depth step
        (``depth_edge_ratio``; such a pixel's depth may belong to either side of the step)."""
        cfg = self.config
        uv = features.keypoints.astype(np.float64)
        points_cam, valid = self._lift_in_range(uv, depth, frame.camera.K)
        if cfg.depth_edge_ratio > 0 and self.depth_source.kind_for(frame) == "sensor":
            valid &= ~depth_edge_mask(depth, uv, cfg.depth_edge_window_px, cfg.depth_edge_ratio,
                                      holes_are_edges=False)
        return points_cam, valid

    def _lift_in_range(self, uv: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera points (N, 3) of pixels uv (N, 2) from ``depth`` and which have a depth (N,) within
        [min_depth_m, max_depth_m]."""
        points_cam, valid = lift_keypoints(uv, depth, K)
        z = points_cam[:, 2]
        valid &= (z >= self.config.min_depth_m) & (z <= self.config.max_depth_m)
        return points_cam, valid

    def _inflated(self) -> np.ndarray:
        return np.eye(6) * self.config.lost_covariance

    def _pose_covariance_default(self) -> np.ndarray:
        return np.eye(6) * 1e-6

    def _result(self, frame: Frame, state: TrackingState, covariance: np.ndarray, features: Features,
                is_keyframe: bool = False, message: str = "") -> TrackingResult:
        return TrackingResult(frame.index, frame.stamp_ns, state, self._T_world_cam.copy(), covariance,
                              is_keyframe=is_keyframe, features=features, message=message)


def _most_recent(window, limit: int) -> np.ndarray | None:
    """Rows (increasing) of the ``limit`` window points whose newest observation is the most recent
    (ties: the window's order); None when the window holds no more than ``limit`` points."""
    if len(window) <= limit:
        return None
    return np.sort(window.by_recency[:limit])


def _joint_support(T_world_cam: np.ndarray, P: np.ndarray, q: np.ndarray, K: np.ndarray, threshold_px: float,
                   points_cam: np.ndarray, tolerance: np.ndarray) -> int:
    """Matches (world points P (M, 3) at pixels q (M, 2)) that reproject within threshold_px under
    ``T_world_cam`` and whose frame-depth camera point (points_cam (M, 3), NaN: no depth) lies within
    ``tolerance`` (M,) metres of P once moved to the world; a match without depth needs the first only."""
    reprojects = _reprojection_errors(invert(T_world_cam), P, q, K) < threshold_px
    offset = np.linalg.norm(transform(T_world_cam, points_cam) - P, axis=1)
    agrees = np.isnan(offset) | (offset < tolerance)
    return int((reprojects & agrees).sum())


def _reprojection_errors(T_cam_world: np.ndarray, P: np.ndarray, uv: np.ndarray, K: np.ndarray) -> np.ndarray:
    proj, in_front = project(transform(T_cam_world, P), K)
    err = np.linalg.norm(proj - uv, axis=1)
    return np.where(in_front, err, np.inf)


def _rmse(T_cam_world: np.ndarray, P: np.ndarray, uv: np.ndarray, K: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.minimum(_reprojection_errors(T_cam_world, P, uv, K), 1e6) ** 2)))


def _rigid(T: np.ndarray) -> np.ndarray:
    """T with its rotation re-orthonormalised (long chains of products accumulate rounding)."""
    return make_pose(nearest_rotation(T[:3, :3]), T[:3, 3])


def _fractional_motion(T: np.ndarray, fraction: float) -> np.ndarray:
    """The rigid motion ``fraction`` of the way along T (used to spread an initial baseline over frames)."""
    return se3_exp(se3_log(T) * fraction)
