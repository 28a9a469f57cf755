"""The ~/save_map and ~/load_map logic of vo_node, with the real odometry on a rendered room."""

import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
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


def test_a_refused_map_leaves_the_running_odometry_untouched(tmp_path):
    """A map of other descriptors (here 64-byte binary ones against ORB's 32 bytes) is refused with one
    line before anything is reset: the trajectory goes on where it was."""
    from kp_vo.errors import InvalidInputError
    from kp_vo.reloc.repository import Repository

    sequence = list(SyntheticSequence("room", num_frames=8, width=320, height=240, seed=11))
    core, vo = _core()
    outputs = [_feed(core, frame) for frame in sequence[:6]]
    keyframes_before = [kf.frame_index for kf in vo.keyframes]
    other = Repository("hamming", 64)
    other.add_points(np.zeros((20, 3)), _binary_features(20, 64), 0, 0, np.eye(4), 20)
    path = tmp_path / "other.kpmap"
    other.save(path)
    with pytest.raises(InvalidInputError, match="64-wide descriptors"):
        core.load_map(str(path))
    assert [kf.frame_index for kf in vo.keyframes] == keyframes_before
    nxt = _feed(core, sequence[6])
    assert nxt.state == "tracking" and len(nxt.path_poses) == len(outputs) + 1
    step = np.linalg.norm(nxt.T_world_cam[:3, 3] - outputs[-1].T_world_cam[:3, 3])
    assert step < 0.1  # continues from the last pose, not from a new origin


def _binary_features(n, width):
    from kp_vo.features.base import Features

    rng = np.random.default_rng(0)
    return Features(rng.uniform(0, 100, (n, 2)).astype(np.float32), np.ones(n, np.float32),
                    rng.integers(0, 256, (n, width), dtype=np.uint8), "hamming")


def test_a_map_of_another_width_loaded_before_any_frame_is_dropped_at_the_first(tmp_path, caplog):
    from kp_vo.reloc.repository import Repository

    other = Repository("hamming", 64)
    other.add_points(np.zeros((20, 3)), _binary_features(20, 64), 0, 0, np.eye(4), 20)
    vo = VisualOdometry(OdometryConfig(), create_extractor("orb", max_keypoints=800))
    vo.load_map(other)   # the extractor's width is not known before its first frame
    frame = next(iter(SyntheticSequence("room", num_frames=1, width=320, height=240, seed=11)))
    with caplog.at_level("ERROR"):
        result = vo.process(frame)
    assert "dropping the loaded map" in caplog.text
    assert result.state.value == "tracking"   # the map starts from this frame's depth instead
