"""Fault injection through the node core: every bad message a ROS node can receive gives one log line
(or, for the service-like calls ``set_pose`` / ``load_map``, one ``KpVoError`` line), never an exception
out of the core, and the next good message is tracked as if the bad one had never come.

Each case builds a fresh ``VoNodeCore`` in RGB-D mode over the real ORB ``VisualOdometry``, tracks two
good frames of the synthetic room (320x240), feeds the bad input(s), then the third good frame, which
must be tracked without a reset of the odometry, at a pose close to its ground truth relative to the
first frame.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.errors import KpVoError

F = factory()
FRAME_ID = "camera_optical_frame"


@pytest.fixture(scope="module")
def room():
    """The first three frames of the synthetic room at 320x240 (rendered once)."""
    from kp_vo.datasets.synthetic import SyntheticSequence

    seq = SyntheticSequence("room", num_frames=300, width=320, height=240)
    return seq.camera, [seq[i] for i in range(3)]


@pytest.fixture(scope="module")
def good_map(tmp_path_factory, room):
    """A map file saved by a core that tracked the room frames (for load_map of a truncated copy)."""
    core, _ = _core(room)
    for frame in room[1]:
        assert core.on_pair(*_pair(frame)) is not None
    path = tmp_path_factory.mktemp("map") / "room.kpmap"
    core.save_map(str(path))
    return path


def _stamp(frame) -> int:
    return int(frame.stamp_ns) + 1_000_000_000   # not zero for the first frame


def _pair(frame, stamp_ns: int | None = None):
    stamp_ns = _stamp(frame) if stamp_ns is None else stamp_ns
    return (cv.image_msg(F, stamp_ns, FRAME_ID, frame.image, "rgb8"),
            cv.image_msg(F, stamp_ns, FRAME_ID, frame.depth, "32FC1"))


def _core(room, **config):
    from kp_vo.pipeline import PipelineConfig, build_odometry

    camera, _ = room
    odometry = build_odometry(PipelineConfig())
    resets = []
    inner_reset = odometry.reset
    odometry.reset = lambda: (resets.append(1), inner_reset())[1]
    core = VoNodeCore(NodeConfig(mode="rgbd", **config), odometry, lambda frame_id: np.eye(4))
    core.on_camera_info(cv.camera_info_msg(F, 0, FRAME_ID, camera))
    return core, resets


# ----------------------------------------------------------------------------- bad inputs
# Each maker gets (core, the next good frame, tmp_path, good map path) and feeds its bad input(s) to the core
# (RGB-D pairs through on_pair, single messages through on_image / on_depth / on_camera_info).
# ``stamp`` is the next good frame's stamp; bad messages use earlier-than-never-seen stamps between the
# previous good frame and it so that a dropped message does not make the next frame "out of order".

def _bad_stamp(frame) -> int:
    return _stamp(frame) - 1_000   # after the previous good frame (33 ms before), before this one


def _image_fields(frame, **override):
    msg = cv.image_msg(F, _bad_stamp(frame), FRAME_ID, frame.image, "rgb8")
    for key, value in override.items():
        setattr(msg, key, value)
    return msg


def _depth_fields(frame, array=None, true_encoding="32FC1", **override):
    """A depth Image of ``array`` (default: the frame's float32 depth) in ``true_encoding``, then ``override``."""
    array = frame.depth if array is None else array
    msg = cv.image_msg(F, _bad_stamp(frame), FRAME_ID, array, true_encoding)
    for key, value in override.items():
        setattr(msg, key, value)
    return msg


def _good_depth(frame):
    return cv.image_msg(F, _bad_stamp(frame), FRAME_ID, frame.depth, "32FC1")


def _pair_with_image(core, frame, image_msg, depth_msg=None):
    core.on_pair(image_msg, depth_msg if depth_msg is not None else _good_depth(frame))


def mono8_on_rgb8_data(core, frame):          # rgb8 bytes, declared mono8 (step of a mono8 row)
    h, w = frame.image.shape[:2]
    _pair_with_image(core, frame, _image_fields(frame, encoding="mono8", step=w))


def mono8_on_rgb8_rows(core, frame):          # rgb8 bytes and step, declared mono8: 2/3 of each row "padding"
    _pair_with_image(core, frame, _image_fields(frame, encoding="mono8"))


def rgb8_on_mono8_data(core, frame):          # mono8 bytes, declared rgb8
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    msg = cv.image_msg(F, _bad_stamp(frame), FRAME_ID, grey, "mono8")
    msg.encoding = "rgb8"
    _pair_with_image(core, frame, msg)


def rgb8_on_mono8_step(core, frame):          # mono8 bytes and step, declared rgb8 with the rgb8 step
    grey = cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    msg = cv.image_msg(F, _bad_stamp(frame), FRAME_ID, grey, "mono8")
    msg.encoding, msg.step = "rgb8", 3 * msg.width
    _pair_with_image(core, frame, msg)


def depth_16uc1_on_32fc1_data(core, frame):   # float32 bytes declared 16UC1 (step of a 16UC1 row)
    w = frame.depth.shape[1]
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, encoding="16UC1", step=2 * w))


def depth_16uc1_on_32fc1_rows(core, frame):   # float32 bytes and step declared 16UC1: half of each row "padding"
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, encoding="16UC1"))


def depth_32fc1_on_16uc1_data(core, frame):   # millimetre uint16 declared 32FC1
    mm = (frame.depth * 1000).astype(np.uint16)
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, mm, "16UC1", encoding="32FC1"))


def depth_32fc1_on_16uc1_step(core, frame):   # uint16 bytes with a 32FC1 step
    mm = (frame.depth * 1000).astype(np.uint16)
    w = mm.shape[1]
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, mm, "16UC1", encoding="32FC1", step=4 * w))


def step_smaller_than_row(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, step=frame.image.shape[1]))


def step_padding_without_bytes(core, frame):  # step says 8 padding bytes per row, the data has none
    _pair_with_image(core, frame, _image_fields(frame, step=3 * frame.image.shape[1] + 8))


def data_longer_than_declared(core, frame):   # one extra row of bytes
    msg = _image_fields(frame)
    msg.data = np.concatenate([msg.data, msg.data[: msg.step]])
    _pair_with_image(core, frame, msg)


def zero_width(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, width=0))


def zero_height_depth(core, frame):
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, height=0))


def nan_size(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, width=float("nan")))


def negative_size(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, height=-240))


def huge_size(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, width=2 ** 31, height=2 ** 31, step=3 * 2 ** 31))


def truncated_image(core, frame):
    msg = _image_fields(frame)
    msg.data = msg.data[: len(msg.data) // 2]
    _pair_with_image(core, frame, msg)


def truncated_depth(core, frame):
    msg = _depth_fields(frame)
    msg.data = msg.data[:-1]
    _pair_with_image(core, frame, _image_fields(frame), msg)


def empty_data(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, data=np.zeros(0, np.uint8)))


def data_not_bytes(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, data=None))


def unknown_encoding(core, frame):
    _pair_with_image(core, frame, _image_fields(frame, encoding="yuv422"))


def colour_as_depth(core, frame):
    _pair_with_image(core, frame, _image_fields(frame), _image_fields(frame))


def depth_size_mismatch(core, frame):
    half = np.ascontiguousarray(frame.depth[::2, ::2])
    _pair_with_image(core, frame, _image_fields(frame), _depth_fields(frame, half))


def image_size_differs_from_camera_info(core, frame):
    small = np.ascontiguousarray(frame.image[::2, ::2])
    msg = cv.image_msg(F, _bad_stamp(frame), FRAME_ID, small, "rgb8")
    half = np.ascontiguousarray(frame.depth[::2, ::2])
    _pair_with_image(core, frame, msg, _depth_fields(frame, half))


def camera_info_zero_K(core, frame):
    msg = cv.camera_info_msg(F, 0, FRAME_ID, core.camera)
    msg.k = np.zeros(9)
    msg.p = np.zeros(12)
    core.on_camera_info(msg)


def camera_info_nan_K(core, frame):
    msg = cv.camera_info_msg(F, 0, FRAME_ID, core.camera)
    msg.k = np.full(9, np.nan)
    core.on_camera_info(msg)


def camera_info_nan_size(core, frame):
    msg = cv.camera_info_msg(F, 0, FRAME_ID, core.camera)
    msg.width = float("nan")
    core.on_camera_info(msg)


def camera_info_huge_size(core, frame):
    msg = cv.camera_info_msg(F, 0, FRAME_ID, core.camera)
    msg.width, msg.height = 2 ** 31, 2 ** 31
    core.on_camera_info(msg)


def camera_info_short_K(core, frame):
    msg = cv.camera_info_msg(F, 0, FRAME_ID, core.camera)
    msg.k = np.ones(4)
    core.on_camera_info(msg)


def zero_stamp(core, frame):                  # header never filled in: must not read as a bag loop
    core.on_pair(*_pair(frame, stamp_ns=0))


def repeated_stamp(core, frame):              # the previous good frame again
    core.on_pair(*_pair(frame, stamp_ns=core.last_output.stamp_ns))


def out_of_order_stamp(core, frame):
    core.on_pair(*_pair(frame, stamp_ns=core.last_output.stamp_ns - 10_000_000))


def nan_stamp(core, frame):
    image_msg, depth_msg = _pair(frame, stamp_ns=_bad_stamp(frame))
    image_msg.header.stamp.sec = float("nan")
    core.on_pair(image_msg, depth_msg)


def nanosec_out_of_range(core, frame):
    image_msg, depth_msg = _pair(frame, stamp_ns=_bad_stamp(frame))
    image_msg.header.stamp.nanosec = 5_000_000_000
    core.on_pair(image_msg, depth_msg)


def bad_stamp_in_sync_queue(core, frame):     # a depth with a NaN stamp waits in the sync queue
    depth_msg = _good_depth(frame)
    depth_msg.header.stamp.sec = float("nan")
    core.on_depth(depth_msg)


def compressed_garbage(core, frame):
    core.config.image_transport = "compressed"
    msg = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, _bad_stamp(frame), FRAME_ID),
                                               format="jpeg", data=np.frombuffer(b"\xff\xd8not a jpeg", np.uint8))
    try:
        _pair_with_image(core, frame, msg)
    finally:
        core.config.image_transport = "raw"


def compressed_empty(core, frame):
    core.config.image_transport = "compressed"
    msg = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, _bad_stamp(frame), FRAME_ID),
                                               format="png", data=np.zeros(0, np.uint8))
    try:
        _pair_with_image(core, frame, msg)
    finally:
        core.config.image_transport = "raw"


def compressed_wrong_size(core, frame):       # a good PNG of another size than camera_info's
    core.config.image_transport = "compressed"
    ok, png = cv2.imencode(".png", frame.image[::2, ::2, ::-1])
    msg = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, _bad_stamp(frame), FRAME_ID),
                                               format="png", data=png.reshape(-1))
    try:
        _pair_with_image(core, frame, msg)
    finally:
        core.config.image_transport = "raw"


BAD_MESSAGES = [mono8_on_rgb8_data, mono8_on_rgb8_rows, rgb8_on_mono8_data, rgb8_on_mono8_step,
                depth_16uc1_on_32fc1_data, depth_16uc1_on_32fc1_rows, depth_32fc1_on_16uc1_data,
                depth_32fc1_on_16uc1_step, step_smaller_than_row, step_padding_without_bytes,
                data_longer_than_declared, zero_width, zero_height_depth, nan_size, negative_size, huge_size,
                truncated_image, truncated_depth, empty_data, data_not_bytes, unknown_encoding, colour_as_depth,
                depth_size_mismatch, image_size_differs_from_camera_info, camera_info_zero_K, camera_info_nan_K,
                camera_info_nan_size, camera_info_huge_size, camera_info_short_K, zero_stamp, repeated_stamp,
                out_of_order_stamp, nan_stamp, nanosec_out_of_range, bad_stamp_in_sync_queue, compressed_garbage,
                compressed_empty, compressed_wrong_size]


def _pose(frame, first):
    return np.linalg.inv(first.T_world_cam_gt) @ frame.T_world_cam_gt


def _track_good(core, resets, frames, index, path_length=None):
    out = core.on_pair(*_pair(frames[index]))
    assert out is not None, "the good frame after the bad input was dropped"
    assert out.state == "tracking", out.status
    assert not resets, "the bad input reset the odometry"
    expected = _pose(frames[index], frames[0])
    assert np.abs(out.T_world_cam[:3, 3] - expected[:3, 3]).max() < 0.01
    assert len(out.path_poses) == (index + 1 if path_length is None else path_length)
    return out


@pytest.mark.parametrize("bad", BAD_MESSAGES, ids=lambda f: f.__name__)
def test_bad_message_is_one_line_and_tracking_continues(bad, room, caplog):
    camera, frames = room
    core, resets = _core(room)
    for i in range(2):
        _track_good(core, resets, frames, i)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="kp_vo"):
        bad(core, frames[2])   # must not raise
    assert "internal_error" not in core.problems, "the bad input escaped as an unexpected exception"
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    record = lines[0]
    assert record.exc_info is None and "\n" not in record.getMessage(), record.getMessage()
    assert sum(core.problems.values()) >= 1
    assert core.camera == camera               # a bad camera_info never replaces the good one
    _track_good(core, resets, frames, 2)


# ----------------------------------------------------------------------------- service-like calls

def _pose_msg(frame_id="odom", q=(0.0, 0.0, 0.0, 1.0), t=(0.0, 0.0, 0.0)):
    pose = SimpleNamespace(position=SimpleNamespace(x=t[0], y=t[1], z=t[2]),
                           orientation=SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3]))
    return SimpleNamespace(header=SimpleNamespace(frame_id=frame_id), pose=SimpleNamespace(pose=pose))


SET_POSE = {
    "zero_quaternion": _pose_msg(q=(0, 0, 0, 0)),
    "nan_quaternion": _pose_msg(q=(np.nan, 0, 0, 1)),
    "unnormalised_quaternion": _pose_msg(q=(0, 0, 0, 2)),
    "inf_position": _pose_msg(t=(np.inf, 0, 0)),
    "unknown_frame": _pose_msg(frame_id="world"),
    "string_quaternion": _pose_msg(q=("a", 0, 0, 1)),
}


def _one_line_error(call) -> str:
    with pytest.raises(KpVoError) as info:
        call()
    text = str(info.value)
    assert text and "\n" not in text
    return text


@pytest.mark.parametrize("case", SET_POSE, ids=str)
def test_bad_set_pose_is_refused_in_one_line(case, room):
    _, frames = room
    core, resets = _core(room)
    for i in range(2):
        _track_good(core, resets, frames, i)
    _one_line_error(lambda: core.set_pose(SET_POSE[case]))
    _track_good(core, resets, frames, 2)


def _garbage_paths(tmp_path, good_map):
    folder = tmp_path / "folder.kpmap"
    folder.mkdir()
    (tmp_path / "empty.kpmap").write_bytes(b"")
    (tmp_path / "text.kpmap").write_text("not a map\n")
    data = good_map.read_bytes()
    (tmp_path / "cut.kpmap").write_bytes(data[: len(data) // 2])
    return {"empty_parameter": "", "missing": str(tmp_path / "none" / "x.kpmap"), "directory": str(folder),
            "empty_file": str(tmp_path / "empty.kpmap"), "text_file": str(tmp_path / "text.kpmap"),
            "truncated_map": str(tmp_path / "cut.kpmap"), "nul_byte": str(tmp_path / "a\0b.kpmap"),
            "too_long_name": str(tmp_path / ("x" * 300 + ".kpmap")), "dev_null": "/dev/null"}


LOAD_MAP_CASES = ["empty_parameter", "missing", "directory", "empty_file", "text_file", "truncated_map",
                  "nul_byte", "too_long_name", "dev_null", "other_descriptor_width"]


@pytest.mark.parametrize("case", LOAD_MAP_CASES, ids=str)
def test_bad_load_map_is_refused_in_one_line(case, room, good_map, tmp_path):
    from kp_vo.reloc.repository import Repository
    from kp_vo.features.base import Features

    _, frames = room
    core, resets = _core(room)
    for i in range(2):
        _track_good(core, resets, frames, i)
    if case == "other_descriptor_width":   # a 64-byte binary map into the 32-byte ORB odometry
        repo = Repository("hamming", 64, "other")
        n = 50
        features = Features(np.random.default_rng(0).uniform(0, 300, (n, 2)).astype(np.float32),
                            np.ones(n, np.float32), np.zeros((n, 64), np.uint8), "hamming")
        repo.add_points(np.ones((n, 3)), features, 0, 0, np.eye(4))
        path = tmp_path / "wide.kpmap"
        repo.save(path)
    else:
        path = _garbage_paths(tmp_path, good_map)[case]
    _one_line_error(lambda: core.load_map(str(path)))
    _track_good(core, resets, frames, 2)


# ----------------------------------------------------------------------------- extrinsic from TF

def _tf(q):
    r = SimpleNamespace(x=q[0], y=q[1], z=q[2], w=q[3])
    return SimpleNamespace(translation=SimpleNamespace(x=0.0, y=0.0, z=0.0), rotation=r)


@pytest.mark.parametrize("q", [(0, 0, 0, 0), (np.nan, 0, 0, 1), (0, 0, 0, 5)], ids=["zero", "nan", "unnormalised"])
def test_bad_extrinsic_quaternion_is_refused(q, room, caplog):
    """A TF / tf_static base_link -> camera with a bad quaternion: a one-line error, frames wait for a good one."""
    _, frames = room
    with pytest.raises(KpVoError) as info:
        cv.transform_msg_to_pose(_tf(q))
    assert "\n" not in str(info.value)
    core, resets = _core(room)
    answers = iter([_tf(q), _tf((0, 0, 0, 1))])
    core.lookup_extrinsic = lambda frame_id: cv.transform_msg_to_pose(next(answers))
    with caplog.at_level(logging.WARNING, logger="kp_vo"):
        assert core.on_pair(*_pair(frames[0])) is None
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and lines[0].exc_info is None, [r.getMessage() for r in lines]
    assert "internal_error" not in core.problems
    for i in range(1, 3):
        out = core.on_pair(*_pair(frames[i]))
        assert out is not None and out.state == "tracking"


def test_non_rigid_extrinsic_is_refused(room, caplog):
    _, frames = room
    core, _ = _core(room)
    bad = np.eye(4)
    bad[0, 0] = 2.0
    answers = iter([bad, np.full((4, 4), np.nan), np.eye(4)])
    core.lookup_extrinsic = lambda frame_id: next(answers)
    with caplog.at_level(logging.WARNING, logger="kp_vo"):
        assert core.on_pair(*_pair(frames[0])) is None
        assert core.on_pair(*_pair(frames[1])) is None
    assert core.problems["bad_extrinsic"] == 2 and "internal_error" not in core.problems
    assert core.on_pair(*_pair(frames[2])) is not None


# ----------------------------------------------------------------------------- the last resort

def test_unexpected_exception_is_logged_counted_and_the_node_keeps_running(room, caplog):
    """A bug (an exception that is not a KpVoError) inside processing: logged with its traceback, counted as
    ``internal_error`` in the diagnostics, the frame dropped, and the next frame processed."""
    _, frames = room
    core, resets = _core(room)
    _track_good(core, resets, frames, 0)
    inner = core.odometry.process
    core.odometry.process = lambda frame: 1 / 0
    with caplog.at_level(logging.ERROR, logger="kp_vo"):
        assert core.on_pair(*_pair(frames[1])) is None
    assert core.problems["internal_error"] == 1
    assert core.diagnostics().values["dropped_internal_error"] == 1
    assert any(r.exc_info for r in caplog.records)
    core.odometry.process = inner
    _track_good(core, resets, frames, 2, path_length=2)


def test_zero_stamp_of_the_first_frame_is_processed(room):
    """A bag whose clock starts at 0 (``kp-vo make-bag`` of a synthetic sequence) keeps its first frame."""
    _, frames = room
    core, resets = _core(room)
    out = core.on_pair(*_pair(frames[0], stamp_ns=0))
    assert out is not None and out.stamp_ns == 0
    assert core.on_pair(*_pair(frames[1], stamp_ns=int(frames[1].stamp_ns))) is not None and not resets


def test_bag_with_a_zero_quaternion_in_tf_static_is_one_line(tmp_path):
    from kp_vo.bridge.bag_runner import static_transforms
    from kp_vo.bridge.bagio import BagWriter
    from kp_vo.errors import DatasetError

    with BagWriter(tmp_path / "bag") as bag:
        f = bag.factory
        static = cv.transform_stamped_msg(f, 1, "base_link", FRAME_ID, np.eye(4))
        static.transform.rotation.w = 0.0
        bag.write("/tf_static", cv.tf_message(f, [static]), 1)
    with pytest.raises(DatasetError) as info:
        static_transforms(tmp_path / "bag")
    assert "/tf_static base_link -> camera_optical_frame" in str(info.value) and "\n" not in str(info.value)
