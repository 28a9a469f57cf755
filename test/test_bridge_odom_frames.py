"""REP-105 continuity: odom -> base_link never jumps, relocalization lands in map -> odom.

Unit tests of OdomFrames / TransformStamper / body_twist with known answers, then the real tracker on a
rendered room through ``kp-vo bag`` (a camera covered while it stops: LOST, recovered) and through the
node core's ``load_map`` (relocalized into a saved map).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bag_runner import run_bag
from kp_vo.bridge.bagio import factory, read_messages
from kp_vo.bridge.make_bag import default_T_base_cam, write_frames_bag
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.odom_frames import OdomFrames, TransformStamper, body_twist
from kp_vo.datasets import SyntheticSequence
from kp_vo.features import create_extractor
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry

F = factory()
SEC = 1_000_000_000


def pose(x=0.0, y=0.0, z=0.0, yaw=0.0):
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    T[:3, 3] = [x, y, z]
    return T


# ----------------------------------------------------------------------------- OdomFrames

def test_relocalization_jump_goes_to_map_to_odom_and_odom_holds():
    frames = OdomFrames()
    for k in range(3):                                   # tracked: odom = the tracker's world
        T, jumped = frames.update(True, pose(x=0.1 * k))
        np.testing.assert_allclose(T, pose(x=0.1 * k))
        assert not jumped
    T_lost, _ = frames.update(False, pose(x=5.0))        # LOST: the motion prior is ignored, the pose held
    np.testing.assert_allclose(T_lost, pose(x=0.2), atol=1e-12)
    # recovered 1 m further on (the truth after the gap): odom holds, map -> odom takes the difference
    T, jumped = frames.update(True, pose(x=1.2, yaw=0.3))
    assert jumped
    np.testing.assert_allclose(T, pose(x=0.2), atol=1e-12)
    np.testing.assert_allclose(frames.T_map_odom @ T, pose(x=1.2, yaw=0.3), atol=1e-12)
    # then odom moves exactly as the tracker does, and map stays on it
    T2, jumped = frames.update(True, pose(x=1.2, yaw=0.3) @ pose(x=0.1))
    assert not jumped
    np.testing.assert_allclose(T2, pose(x=0.2) @ pose(x=0.1), atol=1e-12)
    np.testing.assert_allclose(frames.T_map_odom @ T2, pose(x=1.2, yaw=0.3) @ pose(x=0.1), atol=1e-12)


def test_relocalized_message_while_tracking_is_a_jump():
    frames = OdomFrames()
    frames.update(True, pose(x=1.0))
    T, jumped = frames.update(True, pose(x=3.0), relocalized=True)
    assert jumped
    np.testing.assert_allclose(T, pose(x=1.0))
    np.testing.assert_allclose(frames.T_map_odom @ T, pose(x=3.0))


def test_entering_a_loaded_map_keeps_odom_and_makes_the_map_frame_the_maps():
    frames = OdomFrames()
    frames.update(True, pose(x=0.5))
    frames.enter_map()
    frames.update(False, np.eye(4))                      # the tracker restarted, not yet placed
    T, jumped = frames.update(True, pose(y=2.0, yaw=1.0))   # placed in the map
    assert jumped
    np.testing.assert_allclose(T, pose(x=0.5), atol=1e-12)
    np.testing.assert_allclose(frames.T_map_odom @ T, pose(y=2.0, yaw=1.0), atol=1e-12)


def test_set_pose_in_odom_and_in_map():
    frames = OdomFrames()
    frames.update(True, pose(x=1.0))
    frames.set_pose("odom", pose(x=7.0, yaw=0.5))        # the tracker restarts at its own origin
    T, _ = frames.update(True, np.eye(4))
    np.testing.assert_allclose(T, pose(x=7.0, yaw=0.5), atol=1e-12)
    np.testing.assert_allclose(frames.T_map_odom, np.eye(4), atol=1e-12)   # map -> odom kept
    T, _ = frames.update(True, pose(x=0.1))
    np.testing.assert_allclose(T, pose(x=7.0, yaw=0.5) @ pose(x=0.1), atol=1e-12)

    frames.set_pose("map", pose(y=-3.0))
    T_held, _ = frames.update(False, np.eye(4))
    T, _ = frames.update(True, np.eye(4))
    np.testing.assert_allclose(T, T_held)                 # odom continuous
    np.testing.assert_allclose(frames.T_map_odom @ T, pose(y=-3.0), atol=1e-12)


def test_map_tf_stamps_are_future_dated_and_strictly_increasing():
    stamper = TransformStamper(0.1)
    assert stamper.stamp(5 * SEC) == 5 * SEC + SEC // 10
    assert stamper.stamp(5 * SEC) == 5 * SEC + SEC // 10 + 1   # tf2 ignores a repeated stamp
    assert stamper.stamp(4 * SEC) == 5 * SEC + SEC // 10 + 2   # never back in time
    assert stamper.stamp(6 * SEC) == 6 * SEC + SEC // 10
    stamper.reset()                                       # a bag loop
    assert stamper.stamp(SEC) == SEC + SEC // 10


def test_body_twist_known_answer():
    T0 = pose(x=1.0, yaw=np.pi / 2)
    T1 = T0 @ pose(x=0.2, yaw=0.1)                        # 0.2 m forward in base_link, 0.1 rad left
    cov = np.diag([1e-4] * 3 + [1e-6] * 3)
    twist, tcov = body_twist(T0, T1, cov, cov, 0.1)
    # the se(3) log of a forward step with a turn: the arc's chord 0.2 m, angle 0.1 rad
    assert twist[2] == pytest.approx(0.0) and twist[5] == pytest.approx(1.0)
    assert np.hypot(twist[0], twist[1]) * 0.1 == pytest.approx(0.2 * 0.1 / (2 * np.sin(0.05)), rel=1e-9)
    assert np.all(np.diag(tcov) >= 2 * np.diag(cov) / 0.01 * 0.99) and np.allclose(tcov, tcov.T)


# ----------------------------------------------------------------------------- the real tracker

def _odometry():
    return VisualOdometry(OdometryConfig(window_size=3), create_extractor("orb", max_keypoints=800))


def _gt_base(frames):
    """Ground-truth base_link poses relative to the first frame (make-bag's camera mount)."""
    B = default_T_base_cam()
    T0 = np.linalg.inv(frames[0].T_world_cam_gt)
    return [B @ T0 @ f.T_world_cam_gt @ np.linalg.inv(B) for f in frames]


def _covered_camera_stops(num_before=12, num_covered=4, num_after=10):
    """A rendered room: the camera moves, is covered (black) while it stands still, then moves on. The
    tracker's motion prior keeps going while the camera stands: the published odom must not."""
    room = list(SyntheticSequence("room", num_frames=num_before + num_after, width=320, height=240, seed=3))
    still = room[num_before - 1]
    covered = [dataclasses.replace(still, image=np.zeros_like(still.image)) for _ in range(num_covered)]
    frames = room[:num_before] + covered + room[num_before:]
    return [dataclasses.replace(f, index=k, stamp_ns=SEC + k * SEC // 10) for k, f in enumerate(frames)]


def _tf_by_log_time(path, parent, child):
    return [(t, cv.transform_msg_to_pose(tr.transform)) for _, _, t, m in read_messages(path, ["/tf"])
            for tr in m.transforms if tr.header.frame_id == parent and tr.child_frame_id == child]


def test_bag_with_tracking_lost_and_recovered_keeps_odom_continuous_and_map_on_ground_truth(tmp_path):
    frames = _covered_camera_stops()
    write_frames_bag(frames, tmp_path / "in")
    summary = run_bag(tmp_path / "in", tmp_path / "out", _odometry(), NodeConfig())
    states = [s for seg in summary.segments for s in seg.states]
    assert states[12:16] == ["lost"] * 4 and all(s == "tracking" for s in states[16:])
    odom_msgs = [(t, m) for _, _, t, m in read_messages(tmp_path / "out", ["/odom"])]
    assert len(odom_msgs) == len(frames)
    odom = [cv.pose_msg_to_pose(m.pose.pose) for _, m in odom_msgs]
    gt = _gt_base(frames)

    # odom: no step larger than the true motion between the two frames (plus 1 cm of tracking error)
    for k in range(1, len(frames)):
        step = np.linalg.norm(odom[k][:3, 3] - odom[k - 1][:3, 3])
        true_step = np.linalg.norm(gt[k][:3, 3] - gt[k - 1][:3, 3])
        assert step <= true_step + 0.01, (k, step, true_step)
    # no TF odom -> base_link while LOST (ros.lost_tf: none); twist unknown there and at the recovery
    assert len(_tf_by_log_time(tmp_path / "out", "odom", "base_link")) == len(frames) - 4
    assert [m.twist.covariance[0] for _, m in odom_msgs[12:17]] == [-1.0] * 5
    assert odom_msgs[20][1].twist.covariance[0] > 0

    # map: the latest map -> odom at each /odom composes onto the ground truth
    map_odom = _tf_by_log_time(tmp_path / "out", "map", "odom")
    for k, (t, _) in enumerate(odom_msgs):
        T_map_odom = [T for tt, T in map_odom if tt <= t][-1]
        err = np.linalg.norm((T_map_odom @ odom[k])[:3, 3] - gt[k][:3, 3])
        assert err < 0.02, (k, err)       # metres, as the tracker's own recovery test
    # the correction is the motion odom missed: from the last tracked frame (11) to the recovery (16)
    correction = np.linalg.norm(map_odom[-1][1][:3, 3])
    assert correction > 0.01 and correction == pytest.approx(np.linalg.norm(gt[16][:3, 3] - gt[11][:3, 3]),
                                                             abs=0.005)


def test_load_map_relocalizes_into_the_map_frame_without_an_odom_jump(tmp_path):
    room = list(SyntheticSequence("room", num_frames=24, width=320, height=240, seed=11))
    mapper = VoNodeCore(NodeConfig(mode="rgbd", approx_sync=False), _odometry())
    map_poses = [_feed(mapper, f).T_odom_base for f in room]      # the map frame: the mapping run's odom
    mapper.save_map(str(tmp_path / "room.kpmap"))

    core = VoNodeCore(NodeConfig(mode="rgbd", approx_sync=False), _odometry())
    outs = [_feed(core, f, stamp_ns=100 * SEC + k * SEC // 10) for k, f in enumerate(room[12:16])]
    np.testing.assert_allclose(outs[0].T_odom_base, np.eye(4))   # a new odom origin at frame 12
    core.load_map(str(tmp_path / "room.kpmap"))
    for k, f in enumerate(room[16:21]):
        outs.append(_feed(core, f, stamp_ns=101 * SEC + k * SEC // 10))
    assert "relocalized" in outs[4].result.message
    steps = [np.linalg.norm(b.T_odom_base[:3, 3] - a.T_odom_base[:3, 3]) for a, b in zip(outs, outs[1:])]
    true_steps = [np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in zip(map_poses[12:20], map_poses[13:21])]
    assert max(np.subtract(steps, true_steps)) < 0.01, (steps, true_steps)
    for out, truth in zip(outs[4:], map_poses[16:21]):
        np.testing.assert_allclose((out.T_map_odom @ out.T_odom_base)[:3, 3], truth[:3, 3], atol=0.01)
    assert np.linalg.norm(outs[-1].T_map_odom[:3, 3]) > 0.1   # map -> odom carries the map's frame


def test_lost_tf_hold_republishes_the_last_tracked_pose(tmp_path):
    frames = _covered_camera_stops(num_before=8, num_covered=2, num_after=3)
    core = VoNodeCore(NodeConfig(mode="rgbd", approx_sync=False, lost_tf="hold"), _odometry())
    outs = [_feed(core, f) for f in frames]
    assert [o.state for o in outs[8:10]] == ["lost", "lost"]
    assert all(o.publish_tf for o in outs)
    np.testing.assert_array_equal(outs[9].T_odom_base, outs[7].T_odom_base)


def _feed(core, frame, stamp_ns=None):
    stamp = frame.stamp_ns if stamp_ns is None else stamp_ns
    core.on_camera_info(cv.camera_info_msg(F, stamp, "cam", frame.camera))
    core.on_depth(cv.image_msg(F, stamp, "cam", frame.depth, "32FC1"))
    return core.on_image(cv.image_msg(F, stamp, "cam", frame.image, "rgb8"))
