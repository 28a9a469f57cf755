"""The ~/save_map and ~/load_map logic of vo_node, with the real odometry on a rendered room."""

import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import NodeConfig, VoNodeCore
from kp_vo.datasets import SyntheticSequence
from kp_vo.errors import KpVoError, MapFileError
from kp_vo.features import create_extractor
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry

F = factory()


def _feed(core, frame):
    core.on_camera_info(cv.camera_info_msg(F, frame.stamp_ns, "cam", frame.camera))
    core.on_depth(cv.image_msg(F, frame.stamp_ns, "cam", frame.depth, "32FC1"))
    return core.on_image(cv.image_msg(F, frame.stamp_ns, "cam", frame.image, "rgb8"))


def _core():
    vo = VisualOdometry(OdometryConfig(window_size=3), create_extractor("orb", max_keypoints=800))
    return VoNodeCore(NodeConfig(mode="rgbd", approx_sync=False), vo, lambda frame_id: np.eye(4)), vo


def test_saved_map_reloads_and_relocalizes(tmp_path):
    sequence = SyntheticSequence("room", num_frames=24, width=320, height=240, seed=11)
    core, mapper = _core()
    poses = [_feed(core, frame).T_world_cam for frame in sequence]
    path = tmp_path / "room.kpmap"
    assert "saved" in core.save_map(str(path))

    core2, vo2 = _core()
    assert "relocalize" in core2.load_map(str(path))
    out = _feed(core2, sequence[20])
    assert out.state == "tracking" and "relocalized" in out.result.message
    # In the saved map's frame (the mapping run's first camera), not at a new origin.
    np.testing.assert_allclose(out.T_world_cam[:3, 3], poses[20][:3, 3], atol=0.01)
    assert np.linalg.norm(poses[20][:3, 3]) > 0.1


def test_map_path_errors_are_one_line(tmp_path):
    core, _ = _core()
    with pytest.raises(KpVoError, match="map_path is empty"):
        core.load_map("")
    (tmp_path / "junk.kpmap").write_bytes(b"not a map")
    with pytest.raises(MapFileError):
        core.load_map(str(tmp_path / "junk.kpmap"))
    with pytest.raises(KpVoError, match="no map yet"):
        core.save_map(str(tmp_path / "empty.kpmap"))
