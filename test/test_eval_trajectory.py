"""Trajectory metrics: alignment, ATE, RPE, path length, KITTI drift, the metrics bundle, plots."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from kp_vo.errors import InvalidInputError
from kp_vo.eval import (
    align_se3,
    align_sim3,
    ate_rmse,
    cumulative_distances,
    default_segment_lengths,
    evaluate_trajectory,
    kitti_drift,
    path_length,
    plot_trajectory_top_view,
    rpe,
)
from kp_vo.odometry.types import TrackingState
from kp_vo.trajio import quaternion_to_rotation, read_kitti_poses

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


# ---------------------------------------------------------------------------------- helpers
def rot_y(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def pose(R=np.eye(3), t=(0, 0, 0)):
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def random_walk(rng, n, step=1.0):
    """(n, 4, 4) smooth random trajectory: heading changes a little, moves forward (z) each frame."""
    T = [np.eye(4)]
    for _ in range(n - 1):
        R = quaternion_to_rotation(np.r_[rng.normal(scale=0.03, size=3), 1.0])
        T.append(T[-1] @ pose(R, (rng.normal(scale=0.1), rng.normal(scale=0.05), step)))
    return np.stack(T)


def compose_steps(n, step_pose):
    """(n, 4, 4) trajectory starting at identity, each pose = previous @ step_pose."""
    T = [np.eye(4)]
    for _ in range(n - 1):
        T.append(T[-1] @ step_pose)
    return np.stack(T)


def similarity(T, scale, R0, t0):
    """Apply p -> scale R0 p + t0 to the positions and R0 to the rotations of every pose."""
    out = T.copy()
    out[:, :3, :3] = R0 @ T[:, :3, :3]
    out[:, :3, 3] = scale * T[:, :3, 3] @ R0.T + t0
    return out


# ---------------------------------------------------------------------------------- alignment / ATE
def test_sim3_alignment_recovers_scaled_moved_trajectory_exactly():
    rng = np.random.default_rng(0)
    gt = random_walk(rng, 60)
    R0 = quaternion_to_rotation([0.3, -0.5, 0.2, 0.7])
    t0 = np.array([10.0, -4.0, 2.5])
    est = similarity(gt, 3.0, R0, t0)          # estimated 3x too large, in another world frame

    aligned, scale, T_gt_est = align_sim3(est, gt)
    assert scale == pytest.approx(1.0 / 3.0, rel=1e-12)   # scale multiplies est lengths
    np.testing.assert_allclose(aligned, gt, atol=1e-9)    # rotations and positions both
    np.testing.assert_allclose(T_gt_est[:3, :3], R0.T, atol=1e-12)
    np.testing.assert_allclose(T_gt_est[:3, 3], -R0.T @ t0 / 3.0, atol=1e-9)

    ate = ate_rmse(est, gt, align="sim3")
    assert ate["rmse"] < 1e-9 and ate["max"] < 1e-9 and ate["scale"] == pytest.approx(1 / 3)
    assert ate_rmse(est, gt, align="none")["rmse"] > 1.0
    # rigid alignment cannot undo the scale
    assert ate_rmse(est, gt, align="se3")["rmse"] > 1.0


def test_se3_alignment_recovers_rigid_motion_with_scale_one():
    rng = np.random.default_rng(1)
    gt = random_walk(rng, 40)
    est = similarity(gt, 1.0, rot_y(2.0), np.array([1.0, 2.0, 3.0]))
    aligned, scale, _ = align_se3(est, gt)
    assert scale == 1.0
    np.testing.assert_allclose(aligned, gt, atol=1e-9)
    ate = ate_rmse(est, gt, align="se3")
    assert ate["rmse"] < 1e-9 and ate["scale"] == 1.0


def test_ate_statistics_known_answer():
    gt = compose_steps(4, pose(t=(0, 0, 1)))
    est = gt.copy()
    est[:, 0, 3] += [0.0, 1.0, 2.0, 3.0]          # lateral errors 0, 1, 2, 3 m, no alignment
    ate = ate_rmse(est, gt, align="none")
    assert ate["rmse"] == pytest.approx(math.sqrt(14 / 4))
    assert ate["mean"] == pytest.approx(1.5)
    assert ate["median"] == pytest.approx(1.5)
    assert ate["max"] == pytest.approx(3.0)
    assert ate["scale"] == 1.0


def test_ate_and_rpe_match_evo(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))   # evo writes ~/.evo on import
    from evo.core import metrics
    from evo.core.trajectory import PoseTrajectory3D

    rng = np.random.default_rng(7)
    gt = random_walk(rng, 80)
    est = similarity(random_walk(np.random.default_rng(8), 80), 0.4, rot_y(0.7), np.array([3.0, 1.0, -2.0]))
    stamps = np.arange(80, dtype=float) * 0.1

    ref_evo = PoseTrajectory3D(poses_se3=list(gt), timestamps=stamps)
    est_evo = PoseTrajectory3D(poses_se3=list(est), timestamps=stamps)
    _, _, s_evo = est_evo.align(ref_evo, correct_scale=True)
    ape = metrics.APE(metrics.PoseRelation.translation_part)
    ape.process_data((ref_evo, est_evo))
    rmse_evo = ape.get_statistic(metrics.StatisticsType.rmse)

    ours = ate_rmse(est, gt, align="sim3")
    assert rmse_evo > 0.5                       # a real error, not a trivial match
    assert ours["rmse"] == pytest.approx(rmse_evo, rel=1e-9)
    assert ours["scale"] == pytest.approx(s_evo, rel=1e-9)
    assert ours["median"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.median), rel=1e-9)
    assert ours["max"] == pytest.approx(ape.get_statistic(metrics.StatisticsType.max), rel=1e-9)

    aligned, _, _ = align_sim3(est, gt)
    for relation, key in ((metrics.PoseRelation.translation_part, "trans_rmse"),
                          (metrics.PoseRelation.rotation_angle_deg, "rot_rmse")):
        rpe_evo = metrics.RPE(relation, delta=1, delta_unit=metrics.Unit.frames)
        rpe_evo.process_data((ref_evo, est_evo))
        assert rpe(aligned, gt, delta=1)[key] == pytest.approx(rpe_evo.get_statistic(metrics.StatisticsType.rmse),
                                                                rel=1e-7)


# ---------------------------------------------------------------------------------- RPE
def test_rpe_known_answers():
    rng = np.random.default_rng(2)
    gt = random_walk(rng, 30)
    zero = rpe(gt, gt, delta=3)
    assert zero["trans_rmse"] < 1e-12 and zero["rot_rmse"] < 1e-6 and zero["num_pairs"] == 27

    gt = compose_steps(20, pose(t=(0, 0, 1.0)))
    est = compose_steps(20, pose(rot_y(math.radians(0.5)), (0, 0, 1.1)))
    out = rpe(est, gt, delta=1)
    assert out["trans_rmse"] == pytest.approx(0.1, rel=1e-9)   # 1.1 m estimated for 1.0 m
    assert out["rot_rmse"] == pytest.approx(0.5, rel=1e-9)     # 0.5 deg yaw per frame
    assert rpe(est, gt, delta=2)["rot_rmse"] == pytest.approx(1.0, rel=1e-9)


# ---------------------------------------------------------------------------------- distances / drift
def test_path_length_and_cumulative_distances():
    gt = compose_steps(11, pose(t=(0, 0, 0.5)))
    np.testing.assert_allclose(cumulative_distances(gt), np.arange(11) * 0.5)
    assert path_length(gt) == pytest.approx(5.0)
    T = np.tile(np.eye(4), (3, 1, 1))
    T[1, :3, 3] = (3, 4, 0)                          # 5 m out, 5 m back
    assert path_length(T) == pytest.approx(10.0)


def test_default_segment_lengths():
    assert default_segment_lengths(compose_steps(301, pose(t=(0, 0, 1)))) == (100.0, 200.0)
    assert default_segment_lengths(compose_steps(91, pose(t=(0, 0, 1)))) == tuple(float(L) for L in range(10, 81, 10))
    assert default_segment_lengths(compose_steps(36, pose(t=(0, 0, 1)))) == (10.0, 20.0, 30.0)
    assert default_segment_lengths(compose_steps(6, pose(t=(0, 0, 1)))) == ()


STEP = 0.65  # metres per frame: no segment length 10..80 is a multiple of it, so j is unambiguous
LENGTHS = tuple(float(L) for L in range(10, 81, 10))


def expected_frames(L):
    """Frames a segment of length L spans on a straight path with STEP metres per frame."""
    return math.ceil(L / STEP)


def segments(n_frames, step=10):
    """(first frame, L) of every segment that fits on the straight path."""
    return [(i, L) for i in range(0, n_frames, step) for L in LENGTHS
            if i + expected_frames(L) < n_frames]


def test_kitti_drift_constant_scale_drift():
    n = 200                                          # 129 m straight path
    gt = compose_steps(n, pose(t=(0, 0, STEP)))
    est = compose_steps(n, pose(t=(0, 0, STEP * 1.01)))   # every step 1 % too long
    out = kitti_drift(est, gt, lengths=LENGTHS)
    segs = segments(n)
    assert out["num_segments"] == len(segs)
    # |t_err| = 1 % of the travelled distance n*STEP, divided by L
    expected = np.mean([1.0 * expected_frames(L) * STEP / L for _, L in segs])
    assert out["t_rel_percent"] == pytest.approx(expected, rel=1e-9)
    assert 1.0 < out["t_rel_percent"] < 1.0 * (1 + STEP / 10)   # "about 1 %"
    assert out["r_rel_deg_per_100m"] < 1e-6
    t10, r10 = out["per_length"][10.0]
    assert t10 == pytest.approx(expected_frames(10) * STEP / 10, rel=1e-9)
    assert out["lengths"] == list(LENGTHS)


def test_kitti_drift_pure_yaw_bias():
    n = 200
    bias = math.radians(0.05)                        # 0.05 deg of spurious yaw per frame
    gt = compose_steps(n, pose(t=(0, 0, STEP)))
    est = compose_steps(n, pose(rot_y(bias), (0, 0, STEP)))
    out = kitti_drift(est, gt, lengths=LENGTHS)
    segs = segments(n)
    expected = np.mean([math.degrees(expected_frames(L) * bias) / L * 100 for _, L in segs])
    assert out["r_rel_deg_per_100m"] == pytest.approx(expected, rel=1e-9)
    # about 0.05 deg / 0.65 m = 7.7 deg per 100 m
    assert out["r_rel_deg_per_100m"] == pytest.approx(0.05 / STEP * 100, rel=0.07)
    assert out["t_rel_percent"] > 0.0                # the curved estimate also drifts sideways


def test_kitti_drift_identical_and_no_segment():
    gt = random_walk(np.random.default_rng(3), 90)    # about 90 m: segments of 10..80 m
    out = kitti_drift(gt, gt)
    assert out["lengths"] == list(default_segment_lengths(gt)) == list(LENGTHS)
    assert out["num_segments"] > 0
    assert out["t_rel_percent"] < 1e-9 and out["r_rel_deg_per_100m"] < 1e-6
    short = compose_steps(5, pose(t=(0, 0, 1)))
    out = kitti_drift(short, short)
    assert out["num_segments"] == 0 and math.isnan(out["t_rel_percent"]) and out["per_length"] == {}


# ---------------------------------------------------------------------------------- bundle
def test_evaluate_trajectory_monocular_bundle():
    rng = np.random.default_rng(4)
    gt = random_walk(rng, 90)
    est = similarity(gt, 0.2, rot_y(1.0), np.array([5.0, 0.0, 1.0]))
    m = evaluate_trajectory(est, gt, monocular=True)
    json.dumps(m, allow_nan=False)                 # JSON-friendly as it is
    assert m["alignment"] == "sim3" and m["scale"] == pytest.approx(5.0)
    assert m["ate_rmse_m"] < 1e-9 and m["rpe_trans_rmse_m"] < 1e-9 and m["drift_t_rel_percent"] < 1e-9
    assert m["num_frames"] == 90 and m["drift_kind"] == "short"
    assert m["path_length_est_m"] == pytest.approx(m["path_length_gt_m"])
    assert len(m["drift_per_length_t_rel_percent"]) == len(m["drift_lengths_m"]) == 8

    metric = evaluate_trajectory(est, gt, monocular=False)
    assert metric["alignment"] == "se3" and metric["scale"] == 1.0 and metric["ate_rmse_m"] > 1.0


def test_evaluate_trajectory_without_drift_segments_is_json_safe():
    gt = compose_steps(6, pose(t=(0, 0, 1)))
    m = evaluate_trajectory(gt, gt, monocular=False)
    assert m["drift_num_segments"] == 0 and m["drift_t_rel_percent"] is None
    json.dumps(m, allow_nan=False)


def test_bad_input():
    gt = compose_steps(10, pose(t=(0, 0, 1)))
    with pytest.raises(InvalidInputError, match="gt has 10"):
        ate_rmse(gt[:5], gt)
    with pytest.raises(InvalidInputError, match="at least 3"):
        align_sim3(gt[:2], gt[:2])
    with pytest.raises(InvalidInputError, match="do not move"):
        align_sim3(np.tile(np.eye(4), (10, 1, 1)), gt)
    with pytest.raises(InvalidInputError, match="unknown alignment"):
        ate_rmse(gt, gt, align="sim2")
    with pytest.raises(InvalidInputError, match="delta"):
        rpe(gt, gt, delta=10)
    with pytest.raises(InvalidInputError, match=r"shape \(N, 4, 4\)"):
        path_length(np.eye(4))
    bad = gt.copy()
    bad[3, 1, 1] = np.nan
    with pytest.raises(InvalidInputError, match=r"est\[3\]"):
        kitti_drift(bad, gt)


# ---------------------------------------------------------------------------------- real data
def test_real_kitti_07_ground_truth():
    path = DATA / "kitti" / "poses" / "07.txt"
    if not path.exists():
        pytest.skip(f"real KITTI data not found at {path}")
    gt = read_kitti_poses(path)
    assert path_length(gt) == pytest.approx(90.6, abs=1.5)
    assert default_segment_lengths(gt) == LENGTHS
    # a monocular-like estimate: GT at a wrong scale with a small yaw drift
    est = np.stack([g @ pose(rot_y(math.radians(0.01) * i)) for i, g in enumerate(gt)])
    est[:, :3, 3] *= 0.3
    m = evaluate_trajectory(est, gt, monocular=True)
    assert m["scale"] == pytest.approx(1 / 0.3, rel=0.01)
    assert m["drift_num_segments"] > 0 and 0 < m["drift_r_rel_deg_per_100m"] < 5
    json.dumps(m, allow_nan=False)


# ---------------------------------------------------------------------------------- plots
def test_plot_writes_png(tmp_path):
    gt = random_walk(np.random.default_rng(5), 50)
    est = gt.copy()
    est[:, :3, 3] += np.random.default_rng(6).normal(scale=0.2, size=(50, 3))
    states = [TrackingState.TRACKING] * 50
    states[20:25] = [TrackingState.LOST] * 5
    states[0] = "initializing"
    out = plot_trajectory_top_view(tmp_path / "plots" / "traj.png", est, gt, "test run", states=states)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    only_est = plot_trajectory_top_view(tmp_path / "est.png", est, None, "")
    assert only_est.stat().st_size > 1000
    with pytest.raises(InvalidInputError, match="states"):
        plot_trajectory_top_view(tmp_path / "x.png", est, gt, "", states=states[:10])
