"""nav_msgs/Path is built with one batched rotation conversion: the same poses as pose_msg, pose by pose."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.errors import InvalidInputError

F = factory()


def _poses(n):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=i).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        out.append(T)
    rot180 = np.diag([1.0, -1.0, -1.0, 1.0])   # w = 0: the canonical sign matters
    return out + [np.eye(4), rot180]


def test_path_poses_equal_pose_msg():
    poses = _poses(200)
    msg = cv.path_msg(F, "odom", list(range(1, len(poses) + 1)), poses)
    assert len(msg.poses) == len(poses) and msg.header.stamp.nanosec == len(poses)
    for stamp, T, item in zip(range(1, len(poses) + 1), poses, msg.poses):
        ref = cv.pose_msg(F, T)
        assert item.header.stamp.nanosec == stamp and item.header.frame_id == "odom"
        got = item.pose
        np.testing.assert_allclose([got.orientation.x, got.orientation.y, got.orientation.z, got.orientation.w],
                                   [ref.orientation.x, ref.orientation.y, ref.orientation.z, ref.orientation.w],
                                   atol=1e-12)
        np.testing.assert_allclose([got.position.x, got.position.y, got.position.z], T[:3, 3])


def test_empty_path_and_non_rotation():
    assert cv.path_msg(F, "odom", [], []).poses == []
    bad = np.eye(4)
    bad[0, 0] = 3.0
    with pytest.raises(InvalidInputError):
        cv.path_msg(F, "odom", [1], [bad])
