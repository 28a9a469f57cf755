#!/usr/bin/env python3
"""Plant a fixed list of one-line bugs in the core, one at a time, and see whether the tests catch them.

Each mutant is an exact text substitution (the original must occur exactly once in its file) in a
*copy* of the project: by default ``git archive HEAD`` unpacked into a temporary folder, so the shared
working tree is never touched (other people may be editing or testing it) and uncommitted edits do not
leak in (``--worktree`` copies the working tree's kp_vo/, test/, config/, scripts/ instead). Per mutant
the copy's file is rewritten, pytest runs the mutant's test files there (``-x``, PYTHONPATH = the copy),
and the file is restored in a ``finally``. A non-zero pytest exit = caught; exit 0 = survived; a
timeout counts as caught (and is marked). The unmutated tests run first: if they fail, nothing is
reported (a mutant "caught" by an already failing test would mean nothing).

Real data: the copy's parent folder gets a ``shared`` link to this repository's ``../shared`` so the
tests that read ``../shared/data`` run as they do in the working tree.

    .venv/bin/python scripts/mutants.py                  # all mutants, table + outputs/mutants.json
    .venv/bin/python scripts/mutants.py --list           # the mutants and their test files
    .venv/bin/python scripts/mutants.py --only tracker-kf-max-interval reloc-pose-error-t0
    .venv/bin/python scripts/mutants.py --check          # every original line still found exactly once?

Cost: ~25 min on 2 busy cores for the whole list (the tracker mutants run the KITTI end-to-end runs).
The score, the command and the equivalent mutants (with why no test can kill them): docs/mutation.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

GEOM_TRI = ["test/test_geometry_procrustes_triangulation.py", "test/test_core_guards.py"]
GEOM_PNP = ["test/test_geometry_pnp.py", "test/test_core_guards.py"]
GEOM_MATCH = ["test/test_geometry_matching.py"]
GEOM_SE3 = ["test/test_geometry_se3_camera.py"]
GEOM_BA = ["test/test_geometry_bundle_adjustment.py"]
TRACKER = ["test/test_odometry.py", "test/test_odometry_mapping.py", "test/test_end_to_end_bounds.py",
           "test/test_kitti_end_to_end.py"]
RELOC = ["test/test_core_guards.py", "test/test_reloc_localizer.py", "test/test_bridge_reloc.py",
         "test/test_reloc_map_file.py"]
BRIDGE = ["test/test_bridge_node_core.py", "test/test_bridge_reloc.py", "test/test_bridge_conversions.py",
          "test/test_bridge_odom_frames.py", "test/test_bridge_camera_model.py"]
TUM = ["test/test_datasets_tum.py", "test/test_datasets_open.py"]
CAMERA = ["test/test_geometry_se3_camera.py", "test/test_reloc_localizer.py"]
ODOMETRY = ["test/test_odometry_mapping.py", "test/test_odometry.py", "test/test_bridge_node_core.py"]
RGBD = ["test/test_odometry_rgbd_pose.py", "test/test_odometry_tum_cabinet.py", "test/test_odometry_wide_baseline.py"]
GUIDED = ["test/test_odometry_guided.py", "test/test_odometry.py"]
RELOC_EVAL = ["test/test_reloc_localizer.py", "test/test_eval_viewsynth.py", "test/test_reloc_cli.py"]


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str        # file, relative to the project root
    old: str         # exact text, found exactly once in the file
    new: str
    tests: tuple     # test files run against it (fastest first: pytest stops at the first failure)
    note: str = ""


def M(id, path, old, new, tests, note=""):  # noqa: N802  (a table reads better with a short name)
    return Mutant(id, path, old, new, tuple(tests), note)


MUTANTS: list[Mutant] = [
    # --- the survivors listed in issue 24 --------------------------------------------------------
    M("tracker-kf-max-interval", "kp_vo/odometry/tracker.py",
      "or self._frames_since_keyframe >= cfg.keyframe_max_interval)",
      "or self._frames_since_keyframe > cfg.keyframe_max_interval)", TRACKER, "issue 24 survivor: off by one"),
    M("tracker-kf-min-interval", "kp_vo/odometry/tracker.py",
      "if self._frames_since_keyframe < cfg.keyframe_min_interval:",
      "if self._frames_since_keyframe <= cfg.keyframe_min_interval:", TRACKER, "issue 24 survivor: off by one"),
    M("reloc-pose-error-t0", "kp_vo/reloc/evaluation.py",
      "dt = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]))", "dt = 0.0", RELOC,
      "issue 24 survivor: translation error dropped"),
    M("pnp-no-t-init", "kp_vo/geometry/pnp.py",
      "None if T_init is None else _to_poselib(T_fallback))", "None)", GEOM_PNP,
      "issue 24 survivor: the motion prior never scored"),
    M("triangulation-one-view-check", "kp_vo/geometry/triangulation.py",
      "for T, uv in ((T1, uv1), (T2, uv2)):", "for T, uv in ((T1, uv1),):", GEOM_TRI,
      "issue 24 survivor: second view's reprojection check dropped"),
    M("triangulation-other-view-check", "kp_vo/geometry/triangulation.py",
      "for T, uv in ((T1, uv1), (T2, uv2)):", "for T, uv in ((T2, uv2),):", GEOM_TRI,
      "first view's reprojection check dropped"),
    M("procrustes-scale-ignores-reflection", "kp_vo/geometry/procrustes.py",
      "scale = float((sig * D).sum() / var_s)", "scale = float(sig.sum() / var_s)", GEOM_TRI,
      "issue 24 survivor"),
    # --- geometry ---------------------------------------------------------------------------------
    M("procrustes-no-reflection-fix", "kp_vo/geometry/procrustes.py",
      "d = 1.0 if np.linalg.det(U) * np.linalg.det(Vt) >= 0 else -1.0", "d = 1.0", GEOM_TRI),
    M("triangulation-no-parallax-check", "kp_vo/geometry/triangulation.py",
      "valid &= par >= min_parallax_deg", "valid &= par >= 0.0 * min_parallax_deg", GEOM_TRI),
    M("triangulation-no-cheirality", "kp_vo/geometry/triangulation.py",
      "valid &= front & (Pc[:, 2] > MIN_DEPTH) & (np.nan_to_num(err, nan=np.inf) <= max_reprojection_px)",
      "valid &= np.nan_to_num(err, nan=np.inf) <= max_reprojection_px", GEOM_TRI,
      "equivalent: camera.project gives NaN pixels behind the camera, so the reprojection check rejects them"),
    M("pnp-loose-final-inliers", "kp_vo/geometry/pnp.py",
      "mask = _squared_errors(T, P, q, K) < threshold_px**2", "mask = _squared_errors(T, P, q, K) < (3 * threshold_px)**2",
      GEOM_PNP),
    M("matching-ratio-ignored", "kp_vo/geometry/matching.py",
      "passes &= best < ratio * second", "passes &= best <= second", GEOM_MATCH),
    M("matching-not-mutual", "kp_vo/geometry/matching.py",
      "cand = np.flatnonzero(best <= column_min[nn_ab])", "cand = np.flatnonzero(best <= np.inf)", GEOM_MATCH),
    M("projection-matching-ratio-ignored", "kp_vo/geometry/matching.py",
      "keep &= d[best] < ratio * second", "keep &= d[best] <= second", GEOM_MATCH),
    M("se3-invert-translation", "kp_vo/geometry/se3.py",
      "out[:3, 3] = -R.T @ T[:3, 3]", "out[:3, 3] = -T[:3, 3]", GEOM_SE3),
    M("so3-log-near-pi-sign", "kp_vo/geometry/se3.py",
      "if float(axis @ vee) < 0.0:", "if float(axis @ vee) > 0.0:", GEOM_SE3),
    M("nearest-rotation-no-det-fix", "kp_vo/geometry/se3.py",
      "D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])", "D = np.eye(3)", GEOM_SE3),
    M("check-pose-accepts-reflection", "kp_vo/geometry/se3.py",
      "if np.linalg.det(R) < 0:", "if np.linalg.det(R) < -2:", GEOM_SE3),
    M("ba-no-huber", "kp_vo/geometry/robust.py",
      "return np.where(error_px <= huber_px, 1.0, huber_px / np.maximum(error_px, 1e-12))",
      "return np.ones_like(error_px, dtype=np.float64)", GEOM_BA + GEOM_PNP),
    M("ba-moves-fixed-cameras", "kp_vo/geometry/bundle_adjustment.py",
      "Jc_w = Jc * (w * is_free[:, None, None])", "Jc_w = Jc * w", GEOM_BA,
      "equivalent: the fixed cameras' rows and columns are dropped from the Schur system (keep) anyway"),
    M("ransac-iterations-off-by-one", "kp_vo/geometry/ransac.py",
      "return min(max_iterations, int(math.ceil(math.log(max(1.0 - confidence, 1e-300)) / denom)))",
      "return min(max_iterations, int(math.floor(math.log(max(1.0 - confidence, 1e-300)) / denom)))",
      ["test/test_core_guards.py", "test/test_geometry_pnp.py", "test/test_geometry_procrustes_triangulation.py"]),
    # --- tracker ----------------------------------------------------------------------------------
    M("tracker-no-bundle-adjustment", "kp_vo/odometry/tracker.py",
      "frame, refine=self.config.bundle_adjustment)",
      "frame, refine=False)", TRACKER),
    M("tracker-ba-one-more-fixed", "kp_vo/odometry/tracker.py",
      "fixed = np.arange(len(keyframes)) < cfg.ba_fixed_keyframes",
      "fixed = np.arange(len(keyframes)) <= cfg.ba_fixed_keyframes", TRACKER),
    M("tracker-ba-keeps-outliers", "kp_vo/odometry/tracker.py",
      "bad = residual > 2.0 * cfg.pnp_threshold_px", "bad = residual > 20.0 * cfg.pnp_threshold_px", TRACKER),
    M("tracker-no-step-check", "kp_vo/odometry/tracker.py",
      "return step <= self.config.max_step_ratio * scale + 1e-9", "return True", TRACKER),
    M("tracker-min-inliers-dropped", "kp_vo/odometry/tracker.py",
      "        inl = err < cfg.pnp_threshold_px\n        if inl.sum() < cfg.min_inliers:",
      "        inl = err < cfg.pnp_threshold_px\n        if inl.sum() < 4:", TRACKER,
      "guarded: refining-pass inliers moved 4 px leave fewer than min_inliers (test_odometry)"),
    M("tracker-procrustes-accepts-worse", "kp_vo/odometry/tracker.py",
      "if _rmse(T_proc, P[inl], q[inl], K) <= _rmse(T_cw, P[inl], q[inl], K):",
      "if _rmse(T_proc, P[inl], q[inl], K) >= _rmse(T_cw, P[inl], q[inl], K):", TRACKER),
    M("tracker-kf-inlier-ratio-flipped", "kp_vo/odometry/tracker.py",
      "return (num_tracked < cfg.keyframe_inlier_ratio * self._tracked_at_keyframe",
      "return (num_tracked > cfg.keyframe_inlier_ratio * self._tracked_at_keyframe", TRACKER),
    M("tracker-init-no-flow-check", "kp_vo/odometry/tracker.py",
      "if np.median(np.linalg.norm(uv_cur - uv_ref, axis=1)) < cfg.init_min_flow_px:",
      "if np.median(np.linalg.norm(uv_cur - uv_ref, axis=1)) < 0.0:", TRACKER),
    # --- relocalization ---------------------------------------------------------------------------
    M("localizer-min-inliers-dropped", "kp_vo/reloc/localizer.py",
      "success = success and num_inliers >= cfg.min_inliers", "success = success", RELOC,
      "guarded: the PnP polish after 3D-3D can end below min_inliers (test_core_guards)"),
    M("localizer-ratio-ignored", "kp_vo/reloc/localizer.py",
      "keep &= best_d <= config.ratio * second", "keep &= best_d <= second", RELOC),
    M("localizer-not-mutual", "kp_vo/reloc/localizer.py",
      "query_rows = query_rows[back[inverse] == query_rows]", "query_rows = query_rows", RELOC),
    M("localizer-3d3d-loose-reselect", "kp_vo/reloc/localizer.py",
      "sel = idx[residual < cfg.threshold_m]", "sel = idx[residual < 10 * cfg.threshold_m]", RELOC,
      "guarded: the 3D-3D result stands when the polish finds too few inliers (test_core_guards)"),
    M("localizer-confidence-no-ratio", "kp_vo/reloc/localizer.py",
      "ratio = num_inliers / num_matches", "ratio = 1.0", RELOC),
    M("localizer-ratio-rivals-same-point", "kp_vo/reloc/localizer.py",
      "far = np.linalg.norm(points[cand[ok]] - points[best[ok]], axis=1) > config.ratio_radius_m",
      "far = np.linalg.norm(points[cand[ok]] - points[best[ok]], axis=1) >= 0.0", RELOC),
    M("map-file-checksum-skipped", "kp_vo/reloc/map_file.py",
      "if _file_sha256(path, size - _DIGEST) != fh.read(_DIGEST):", "if False:", RELOC),
    # --- bridge (node glue) -----------------------------------------------------------------------
    M("reloc-core-forgets-last-pose", "kp_vo/bridge/reloc_core.py",
      "cov = np.eye(6) * self.config.failed_variance",
      "cov = np.eye(6) * self.config.failed_variance; self._last = np.eye(4)", BRIDGE),
    M("reloc-core-covariance-inverted", "kp_vo/bridge/reloc_core.py",
      "scale = config.reference_inliers / max(int(num_inliers), 1)",
      "scale = max(int(num_inliers), 1) / config.reference_inliers", BRIDGE),
    M("reloc-core-publishes-tf", "kp_vo/bridge/reloc_core.py",
      "node_config = replace(node_config, frames=frames, publish_tf=False, publish_map_tf=False)",
      "node_config = replace(node_config, frames=frames, publish_map_tf=False)", BRIDGE),
    M("reloc-core-odom-frame", "kp_vo/bridge/reloc_core.py",
      "frames = replace(node_config.frames, odom=node_config.frames.map)", "frames = node_config.frames", BRIDGE),
    M("node-core-accepts-repeated-stamp", "kp_vo/bridge/node_core.py",
      "if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:",
      "if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:", BRIDGE),
    M("node-core-loop-reset-flipped", "kp_vo/bridge/node_core.py",
      "if back_s > self.config.loop_reset_threshold:", "if back_s < self.config.loop_reset_threshold:", BRIDGE),
    M("node-core-no-extrinsic-conjugation", "kp_vo/bridge/node_core.py",
      "T_odom_base = T_base_cam @ T_world_cam @ T_cam_base", "T_odom_base = T_base_cam @ T_world_cam", BRIDGE),
    M("node-core-adjoint-no-translation", "kp_vo/geometry/se3.py",
      "A[:3, 3:] = skew(t) @ R", "A[:3, 3:] = 0.0 * R", GEOM_SE3 + BRIDGE),
    M("node-core-no-lost-inflation", "kp_vo/bridge/node_core.py",
      "if tracking_state is TrackingState.LOST:", "if False:", BRIDGE),
    M("node-core-sync-slop-ignored", "kp_vo/bridge/node_core.py",
      "if dt <= slop_ns and (best is None or dt < best[0]):",
      "if dt <= slop_ns + 10**9 and (best is None or dt < best[0]):", BRIDGE),
    M("camera-info-accepts-zero-focal", "kp_vo/bridge/camera_model.py",
      "if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):",
      "if not np.isfinite([fx, fy, cx, cy]).all():", BRIDGE,
      "equivalent: a P without positive fx, fy counts as absent (has_P) and K's are checked when it is read, "
      "so _pinhole never sees a non-positive focal length"),
    M("depth-16uc1-not-millimetres", "kp_vo/bridge/conversions.py",
      "return sanitize_depth(arr.astype(np.float32) * np.float32(0.001))",
      "return sanitize_depth(arr.astype(np.float32))", BRIDGE),
    # --- TUM loader -------------------------------------------------------------------------------
    M("tum-depth-scale-1000", "kp_vo/datasets/tum.py",
      "max_time_diff: float = 0.02, depth_scale: float = 5000.0,",
      "max_time_diff: float = 0.02, depth_scale: float = 1000.0,", TUM),
    M("tum-fr3-fx-fy-swapped", "kp_vo/datasets/tum.py",
      '"fr3": (535.4, 539.2, 320.1, 247.6),', '"fr3": (539.2, 535.4, 320.1, 247.6),', TUM),
    M("tum-gt-gap-ignored", "kp_vo/datasets/tum.py",
      "ok = (stamps >= gt_stamps[0]) & (stamps <= gt_stamps[-1]) & (t1 - t0 <= max_gap)",
      "ok = (stamps >= gt_stamps[0]) & (stamps <= gt_stamps[-1])", TUM),
    M("tum-gt-first-sample-excluded", "kp_vo/datasets/tum.py",
      "ok = (stamps >= gt_stamps[0]) & (stamps <= gt_stamps[-1]) & (t1 - t0 <= max_gap)",
      "ok = (stamps > gt_stamps[0]) & (stamps <= gt_stamps[-1]) & (t1 - t0 <= max_gap)", TUM),
    M("tum-association-window-ignored", "kp_vo/datasets/tum.py",
      "best[np.abs(reference[best] - query) > max_diff] = -1",
      "best[np.abs(reference[best] - query) > 1e9] = -1", TUM),
    M("tum-association-tie-to-right", "kp_vo/datasets/tum.py",
      "best = np.where(np.abs(reference[left] - query) <= np.abs(reference[right] - query), left, right)",
      "best = np.where(np.abs(reference[left] - query) < np.abs(reference[right] - query), left, right)", TUM,
      "guarded: a query exactly halfway takes the earlier stamp (test_datasets_tum)"),
    M("tum-stamps-floor", "kp_vo/datasets/tum.py",
      "self._set_frames(rgb_ns, poses, start, stride, max_frames)",
      "self._set_frames(np.round(rgb_t * 1e9).astype(np.int64), poses, start, stride, max_frames)", TUM,
      "stamps through float64 seconds: 1341841278.842683 s becomes ...683136 ns (test_datasets_tum)"),
    M("tum-rgb-not-converted", "kp_vo/datasets/base.py",
      "image = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)", "image = image[:, :, :3].copy()", TUM),
    # --- chosen afresh, after the ones above were guarded (measure the suite on bugs it was not fitted to) --
    M("huber-cost-tail-offset", "kp_vo/geometry/robust.py",
      "huber_px * (error_px - 0.5 * huber_px)", "huber_px * (error_px - huber_px)", GEOM_PNP + GEOM_BA,
      "the Huber loss beyond its threshold loses its continuity offset"),
    M("sample-depth-nearest-floor", "kp_vo/geometry/camera.py",
      "ui[finite] = np.rint(uv[finite, 0]).astype(np.int64)", "ui[finite] = np.floor(uv[finite, 0]).astype(np.int64)",
      CAMERA, "nearest depth pixel: u truncated instead of rounded"),
    M("lift-zero-depth-valid", "kp_vo/geometry/camera.py",
      "    valid = d > 0\n", "    valid = d >= 0\n", CAMERA, "missing depth lifted to the camera centre"),
    M("se3-adjoint-order-swapped", "kp_vo/geometry/se3.py",
      "A[:3, 3:] = skew(t) @ R", "A[:3, 3:] = R @ skew(t)", GEOM_SE3 + BRIDGE, "[t]x R written as R [t]x"),
    M("local-map-window-one-short", "kp_vo/odometry/local_map.py",
      "if len(self.keyframes) <= self.window_size:", "if len(self.keyframes) < self.window_size:", ODOMETRY,
      "off by one: the window keeps window_size - 1 keyframes"),
    M("depth-network-cache-any-frame", "kp_vo/odometry/depth.py",
      "if self._cached is not None and self._cached[0] == frame.stamp_ns:", "if self._cached is not None:", ODOMETRY,
      "dropped check: a keyframe gets the network depth of an earlier frame"),
    M("reloc-accuracy-rotation-ignored", "kp_vo/reloc/evaluation.py",
      "ok = [e is not None and e[0] <= t_m and e[1] <= r_deg for e in errors]",
      "ok = [e is not None and e[0] <= t_m for e in errors]", RELOC_EVAL, "dropped check: rotation threshold"),
    M("repository-top-k-lowest-scores", "kp_vo/reloc/repository.py",
      'valid = valid[np.argsort(-features.scores[valid], kind="stable")]',
      'valid = valid[np.argsort(features.scores[valid], kind="stable")]', RELOC + ["test/test_reloc_archive_growth.py"],
      "wrong sign: a map keeps the top_k lowest-scoring keypoints"),
    M("image-bgr-not-reordered", "kp_vo/bridge/conversions.py",
      "return np.ascontiguousarray(arr[:, :, 2::-1])", "return np.ascontiguousarray(arr[:, :, :3])", BRIDGE,
      "bgr8 / bgra8 images passed on as RGB"),
    M("scale-auto-mono-claims-metric", "kp_vo/bridge/scale.py",
      'if depth_mode == "network" or (depth_mode == "auto" and has_estimator):',
      'if depth_mode == "network" or depth_mode == "auto":', BRIDGE,
      "dropped check: monocular 'auto' without a depth network reported metric"),
    M("projection-matching-not-one-to-one", "kp_vo/geometry/matching.py",
      "best, _ = _best_per_group(ib, d, ia)", "best = np.arange(len(ib))", GEOM_MATCH,
      "dropped check: one keypoint may take several map points"),
    M("hamming-distance-half-cross-term", "kp_vo/geometry/matching.py",
      "        d *= -2.0\n", "        d *= -1.0\n", GEOM_MATCH, "wrong constant in |a|+|b|-2 a.b"),
    M("body-twist-angular-first", "kp_vo/bridge/odom_frames.py",
      "twist = np.concatenate([omega_rho[3:], omega_rho[:3]]) / dt_s",
      "twist = np.concatenate([omega_rho[:3], omega_rho[3:]]) / dt_s", BRIDGE,
      "wrong axis order: (wx, wy, wz, vx, vy, vz) published as (vx, ...)"),
    M("odom-frames-relocalization-not-a-jump", "kp_vo/bridge/odom_frames.py",
      "                  or relocalized)", "                  or False)", BRIDGE,
      "dropped check: a relocalized frame moves odom instead of map -> odom"),
    M("tf-stamper-repeats-stamp", "kp_vo/bridge/odom_frames.py",
      "if self._last_ns is not None and stamp_ns <= self._last_ns:",
      "if self._last_ns is not None and stamp_ns < self._last_ns:", BRIDGE, "off by one: one stamp sent twice"),
    M("tracker-velocity-world-frame", "kp_vo/odometry/tracker.py",
      "self._velocity = _rigid(invert(self._T_world_cam) @ solution.T_world_cam)",
      "self._velocity = _rigid(solution.T_world_cam @ invert(self._T_world_cam))", TRACKER,
      "wrong frame: the motion prior composed in the world frame"),
    M("se3-left-jacobian-sign", "kp_vo/geometry/se3.py",
      "return np.eye(3) + b * W + c * (W @ W)", "return np.eye(3) + b * W - c * (W @ W)", GEOM_SE3,
      "wrong sign: se3_exp translation"),
    M("guided-reuse-ignores-radius", "kp_vo/odometry/guided.py",
      "inside = shift + radius_px <= previous.radius * (1.0 - _CONTAINMENT_MARGIN)",
      "inside = shift <= previous.radius * (1.0 - _CONTAINMENT_MARGIN)", GUIDED,
      "wrong bound: a row reuses candidates whose ball does not contain the new one"),
    M("guided-reuse-skips-open-pairs", "kp_vo/odometry/guided.py",
      "open_question = np.flatnonzero(~inside & (v - s <= radius_px))",
      "open_question = np.flatnonzero(~inside & (v + s <= radius_px))", GUIDED,
      "wrong bound: pairs the triangle inequality leaves open are dropped"),
    M("rgbd-support-ignores-3d", "kp_vo/odometry/tracker.py",
      "agrees = np.isnan(offset) | (offset < tolerance)", "agrees = np.isnan(offset) | (offset < 10 * tolerance)", RGBD,
      "loose check: matches far apart in 3D count as support"),
    M("rgbd-no-3d3d-hypothesis", "kp_vo/odometry/tracker.py",
      "        if ok:\n            yield T, _joint_support(", "        if False:\n            yield T, _joint_support(", RGBD,
      "dropped hypothesis: the 3D-3D pose is never tried"),
    M("rgbd-min-support-ignored", "kp_vo/odometry/tracker.py",
      "(cfg.min_support_with_depth if depth is not None else cfg.min_inliers)", "cfg.min_inliers", RGBD,
      "dropped check: a depth frame's pose trusted with min_inliers agreeing matches"),
    M("rgbd-edges-not-applied", "kp_vo/odometry/tracker.py",
      "valid &= ~depth_edge_mask(", "valid &= depth_edge_mask(", RGBD,
      "flipped mask: only keypoints on depth steps are lifted"),
    M("depth-edge-absolute-threshold", "kp_vo/geometry/depth_edges.py",
      "edge = step > rel_threshold", "edge = step > 10 * rel_threshold", ["test/test_geometry_depth_edges.py"],
      "loose check: depth steps under 10x the threshold pass"),
    M("rgbd-ba-depth-dropped", "kp_vo/odometry/tracker.py",
      "cfg.ba_tolerance, obs_depth=z, obs_depth_sigma=sigma)", "cfg.ba_tolerance)", RGBD + ["test/test_end_to_end_bounds.py"],
      "dropped term: the window's bundle adjustment ignores the measured depths"),
    M("rgbd-ba-depth-misindexed", "kp_vo/odometry/tracker.py",
      "                                  keyframe_index, keypoint_index)",
      "                                  keyframe_index, keypoint_index - 1)", RGBD,
      "off by one: each observation gets its neighbour keypoint's depth"),
    M("ba-depth-jacobian-sign", "kp_vo/geometry/bundle_adjustment.py",
      "Jc[:, 2, 0], Jc[:, 2, 1], Jc[:, 2, 2] = Y * inv_sigma, -X * inv_sigma, 0.0",
      "Jc[:, 2, 0], Jc[:, 2, 1], Jc[:, 2, 2] = -Y * inv_sigma, X * inv_sigma, 0.0", GEOM_BA,
      "flipped sign: the depth row's rotation Jacobian"),
    M("ba-depth-sigma-ignored", "kp_vo/geometry/bundle_adjustment.py",
      "np.where(has, 1.0 / np.where(has, sigma, 1.0), 0.0)", "np.where(has, 1.0, 0.0)", GEOM_BA,
      "dropped weight: depth errors counted in metres, not sigmas"),
    M("localizer-max-distance-ignored", "kp_vo/reloc/localizer.py",
      "keep &= best_d <= config.max_distance", "keep &= best_d <= np.inf", RELOC,
      "dropped check: descriptor distance bound"),
]


def check(mutants: list[Mutant], root: Path) -> list[str]:
    """Problems: an original text not found exactly once, or a duplicate id."""
    problems, seen = [], set()
    for m in mutants:
        if m.id in seen:
            problems.append(f"{m.id}: duplicate id")
        seen.add(m.id)
        path = root / m.path
        if not path.is_file():
            problems.append(f"{m.id}: {m.path} not found")
            continue
        n = path.read_text().count(m.old)
        if n != 1:
            problems.append(f"{m.id}: original text found {n} times in {m.path}")
        for t in m.tests:
            if not (root / t).is_file():
                problems.append(f"{m.id}: test file {t} not found")
    return problems


def make_copy(workdir: Path, worktree: bool) -> Path:
    """The project copy the mutants are planted in: <workdir>/main, with <workdir>/shared -> ../shared."""
    copy = workdir / "main"
    if worktree:
        copy.mkdir()
        for name in ("kp_vo", "test", "config", "scripts", "models", "launch", "resource"):
            if (ROOT / name).exists():
                shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("setup.py", "setup.cfg", "package.xml", "requirements.txt", "requirements-dev.txt", "LICENSE",
                     "README.md", ".github"):
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, copy / name)
            elif src.is_file():
                shutil.copy2(src, copy / name)
    else:
        archive = workdir / "head.tar"
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", "-o", str(archive), "HEAD"], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(copy, filter="data")
        archive.unlink()
    shared = ROOT.parent / "shared"
    if shared.exists():
        (workdir / "shared").symlink_to(shared)
    return copy


def run_tests(copy: Path, tests: tuple, timeout: float) -> tuple[str, float, str]:
    """('failed' | 'passed' | 'timeout', seconds, last lines of the output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KP_VO_REQUIRE_ROS", "PYTEST_ADDOPTS")}
    env["PYTHONPATH"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return "timeout", time.monotonic() - t0, out[-1500:]
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-6:])
    return ("failed" if done.returncode != 0 else "passed"), time.monotonic() - t0, tail


def _first_failure(tail: str) -> str:
    for line in tail.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            return line.split(" - ")[0].replace("FAILED ", "").replace("ERROR ", "")
    return tail.splitlines()[-1] if tail else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="ID", help="run these mutants only")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--check", action="store_true", help="check every original text is found once, then exit")
    parser.add_argument("--worktree", action="store_true",
                        help="copy the working tree (uncommitted edits included) instead of git HEAD")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant's test run (default 600)")
    parser.add_argument("--json", default=str(ROOT / "outputs" / "mutants.json"), help="where to write the results")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = parser.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.id for m in MUTANTS}
        if unknown:
            parser.error(f"unknown mutant ids: {', '.join(sorted(unknown))}")
        mutants = [m for m in MUTANTS if m.id in args.only]
    if args.list:
        for m in mutants:
            print(f"{m.id:40s} {m.path}: {m.old.strip()!r} -> {m.new.strip()!r}\n{'':40s} tests: {' '.join(m.tests)}")
        return 0

    workdir = Path(tempfile.mkdtemp(prefix="kpvo-mutants-"))
    try:
        copy = make_copy(workdir, args.worktree)
        problems = check(mutants, copy)
        if problems or args.check:
            print("\n".join(problems) or f"all {len(mutants)} mutants apply")
            return 1 if problems else 0
        files = sorted({t for m in mutants for t in m.tests})
        print(f"copy: {copy} ({'working tree' if args.worktree else 'git HEAD'}); baseline: {len(files)} test files")
        outcome, secs, tail = run_tests(copy, tuple(files), args.timeout * 3)
        if outcome != "passed":
            print(f"baseline {outcome} in {secs:.0f} s; fix the tests before judging mutants:\n{tail}")
            return 2
        print(f"baseline passed in {secs:.0f} s")
        results = []
        for i, m in enumerate(mutants, 1):
            path = copy / m.path
            original = path.read_text()
            try:
                path.write_text(original.replace(m.old, m.new, 1))
                outcome, secs, tail = run_tests(copy, m.tests, args.timeout)
            finally:
                path.write_text(original)
            verdict = {"failed": "caught", "timeout": "caught (timeout)", "passed": "SURVIVED"}[outcome]
            results.append({**asdict(m), "tests": list(m.tests), "verdict": verdict, "seconds": round(secs, 1),
                            "caught_by": _first_failure(tail) if outcome == "failed" else "", "output_tail": tail})
            print(f"[{i:2d}/{len(mutants)}] {verdict:16s} {secs:6.1f} s  {m.id}", flush=True)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    caught = sum(r["verdict"].startswith("caught") for r in results)
    width = max(len(r["id"]) for r in results)
    print(f"\n{'mutant':{width}s}  verdict           s      caught by")
    for r in results:
        print(f"{r['id']:{width}s}  {r['verdict']:16s} {r['seconds']:6.1f}  {r['caught_by'] or r['note']}")
    print(f"\ncaught {caught} of {len(results)} ({100.0 * caught / len(results):.0f} %)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    commit = "" if args.worktree else subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                                      text=True).stdout.strip()
    out.write_text(json.dumps({"source": "worktree" if args.worktree else f"HEAD {commit}", "caught": caught,
                               "total": len(results), "mutants": results}, indent=1) + "\n")
    print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
