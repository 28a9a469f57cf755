"""Bags end to end without ROS: make-bag, the node core over a bag with bad messages, evo reading
the output, and (where the pieces exist) equality of ``kp-vo bag`` with ``run_frames``."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bag_runner import chain_transform, choose_topics, run_bag, static_transforms
from kp_vo.bridge.bagio import BagWriter, bag_topics, read_messages
from kp_vo.bridge.make_bag import default_T_base_cam, write_frames_bag
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.errors import DatasetError
from kp_vo.types import CameraIntrinsics, Frame

from test_bridge_node_core import FakeOdometry  # noqa: E402  (test helper)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAM = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
SEC = 1_000_000_000


def frames(n, depth=False, start_ns=SEC):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        T = np.eye(4)
        T[2, 3] = 0.1 * i
        img = rng.integers(1, 255, (48, 64, 3) if depth else (48, 64), dtype=np.uint8)
        d = np.full((48, 64), 2.0, np.float32) if depth else None
        out.append(Frame(i, start_ns + i * SEC // 10, img, CAM, depth=d, T_world_cam_gt=T))
    return out


def read_all(path, topic):
    return [m for _, _, _, m in read_messages(path, [topic])]


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_make_bag_then_run_bag_mono(tmp_path, storage):
    src = tmp_path / "in"
    assert write_frames_bag(frames(6), src, storage=storage) == 6
    topics = bag_topics(src)
    assert topics["/camera/image_raw"] == "sensor_msgs/msg/Image"
    assert topics["/camera/camera_info"] == "sensor_msgs/msg/CameraInfo"
    assert topics["/tf_static"] == "tf2_msgs/msg/TFMessage" and "/ground_truth" in topics
    edges = static_transforms(src)
    np.testing.assert_allclose(chain_transform(edges, "base_link", "camera_optical_frame"), default_T_base_cam())
    np.testing.assert_allclose(chain_transform(edges, "camera_optical_frame", "base_link"),
                               np.linalg.inv(default_T_base_cam()))

    odo = FakeOdometry()
    summary = run_bag(src, tmp_path / "out", odo, storage=storage)
    assert summary.frames_processed == 6 and summary.topics.depth is None and not summary.problems
    np.testing.assert_array_equal(odo.frames[3].image, frames(6)[3].image)   # pixels survive the bag
    assert odo.frames[3].camera == CAM and odo.frames[3].stamp_ns == frames(6)[3].stamp_ns
    seg = summary.segments[0]
    np.testing.assert_allclose(np.stack(seg.T_world_cam_gt), np.stack([f.T_world_cam_gt for f in frames(6)]),
                               atol=1e-12)
    odom = read_all(tmp_path / "out", "/odom")
    assert len(odom) == 6
    # the fake camera moved 6 x 0.1 m along its optical z = base_link x (REP-103 static TF of make-bag)
    np.testing.assert_allclose(cv.pose_msg_to_pose(odom[-1].pose.pose)[:3, 3], [0.6, 0, 0], atol=1e-12)
    assert len(read_all(tmp_path / "out", "/path")[-1].poses) == 6
    assert read_all(tmp_path / "out", "/vo/status")[0].data.startswith("tracking")
    tf = [t for m in read_all(tmp_path / "out", "/tf") for t in m.transforms]
    assert sum(t.child_frame_id == "base_link" for t in tf) == 6
    map_odom = [t for t in tf if t.header.frame_id == "map" and t.child_frame_id == "odom"]
    assert len(map_odom) >= 5   # the node's 10 Hz timer over 0.5 s of bag (identity: nothing relocalized)
    np.testing.assert_allclose(cv.transform_msg_to_pose(map_odom[-1].transform), np.eye(4), atol=1e-12)
    assert len(read_all(tmp_path / "out", "/diagnostics")) == 6


def test_evo_reads_output_bag(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))   # evo writes ~/.evo
    from evo.tools import file_interface
    from rosbags.rosbag2 import Reader

    write_frames_bag(frames(5), tmp_path / "in")
    run_bag(tmp_path / "in", tmp_path / "out", FakeOdometry())
    with Reader(tmp_path / "out") as reader:
        traj = file_interface.read_bag_trajectory(reader, "/odom")
        # (evo's "/tf:odom.base_link" reading needs ROS's tf2_py, absent here)
    assert traj.num_poses == 5
    np.testing.assert_allclose(traj.positions_xyz[:, 0], [0.1, 0.2, 0.3, 0.4, 0.5], atol=1e-9)
    np.testing.assert_allclose(traj.timestamps, [1.0, 1.1, 1.2, 1.3, 1.4])


def write_bad_bag(path):
    """An RGB-D bag with a problem per stretch; returns the stamps of the frames that should pass."""
    good = []
    with BagWriter(path) as bag:
        f = bag.factory

        def img(t, enc="rgb8", arr=None):
            return cv.image_msg(f, t, "cam", np.full((48, 64, 3), 100, np.uint8) if arr is None else arr, enc)

        def dep(t, v=2.0):
            return cv.image_msg(f, t, "cam", np.full((48, 64), v, np.float32), "32FC1")

        def pair(image, depth, t, t_depth=None):
            """The image at bag time ``t``, then the depth at ``t_depth`` (default ``t``)."""
            bag.write("/rgb/image", image, t)
            bag.write("/depth/image", depth, t if t_depth is None else t_depth)

        info = cv.camera_info_msg(f, 0, "cam", CAM)
        zero = cv.camera_info_msg(f, 0, "cam", CAM)
        zero.k, zero.p = np.zeros(9), np.zeros(12)
        t = SEC
        # 1. image + depth before any camera_info: waits
        pair(img(t), dep(t), t)
        # 2. camera_info with zero K: ignored, still waiting
        t += SEC // 10
        bag.write("/rgb/camera_info", zero, t)
        pair(img(t), dep(t), t)
        bag.write("/rgb/camera_info", info, t)
        for _ in range(3):   # good frames, depth 5 ms after the image (within slop)
            t += SEC // 10
            pair(img(t), dep(t + 5_000_000), t, t + 5_000_000)
            good.append(t)
        # 3. unknown encoding, 4. empty image
        t += SEC // 10
        bad = img(t)
        bad.encoding = "yuv422"
        pair(bad, dep(t), t)
        t += SEC // 10
        empty = img(t)
        empty.height = empty.width = empty.step = 0
        empty.data = np.zeros(0, np.uint8)
        pair(empty, dep(t), t)
        # 5. NaN depth: processed (all invalid depth), 6. a repeated stamp: dropped
        t += SEC // 10
        pair(img(t), dep(t, np.nan), t)
        good.append(t)
        pair(img(t), dep(t), t + 1)
        # 7. the bag loops: stamps go 10 s back -> reset, then good frames again
        for k in range(2):
            t2 = k * SEC // 10 + 1
            pair(img(t2), dep(t2), t + SEC + k)
            good.append(t2)
    return good


def test_bad_messages_run_to_the_end(tmp_path, caplog):
    good = write_bad_bag(tmp_path / "bad")
    odo = FakeOdometry()
    with caplog.at_level(logging.INFO):
        summary = run_bag(tmp_path / "bad", tmp_path / "out", odo, NodeConfig(sync_slop=0.02))
    assert summary.topics.image == "/rgb/image" and summary.topics.depth == "/depth/image"
    assert summary.topics.camera_info == "/rgb/camera_info"
    processed = [s for seg in summary.segments for s in seg.stamps_ns]
    assert processed == good
    assert len(summary.segments) == 2 and odo.resets == 1
    p = summary.problems
    assert p["camera_info_missing"] == 2 and p["bad_camera_info"] == 1 and p["bad_encoding"] == 1
    assert p["bad_frame"] == 1 and p["stamp_order"] == 1 and p["loop_reset"] == 1 and p["invalid_depth"] == 1
    text = [r.getMessage() for r in caplog.records]
    for needle in ("waiting for camera_info", "invalid K", "yuv422", "empty image", "repeated stamp",
                   "time jumped back", "no valid pixel"):
        assert sum(needle in line for line in text) == 1, needle
    nan_frame = [f for f in odo.frames if f.stamp_ns == good[3]][0]
    assert np.all(nan_frame.depth == 0)
    assert len(read_all(tmp_path / "out", "/odom")) == len(good)


def test_choose_topics_errors():
    topics = {"/a/image": "sensor_msgs/msg/Image", "/b/image": "sensor_msgs/msg/Image",
              "/a/camera_info": "sensor_msgs/msg/CameraInfo"}
    with pytest.raises(DatasetError, match="image-topic"):
        choose_topics(topics)
    assert choose_topics(topics, image="/b/image").camera_info == "/a/camera_info"
    with pytest.raises(DatasetError, match="not in the bag"):
        choose_topics(topics, image="/c/image")
    with pytest.raises(DatasetError, match="CameraInfo"):
        choose_topics({"/img": "sensor_msgs/msg/Image"})


def test_missing_bag_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        bag_topics(tmp_path / "nope")
    with pytest.raises(DatasetError, match="exists already"):
        BagWriter(tmp_path)


# ------------------------------------------------------------------ with the real pipeline

def _pipeline():
    return pytest.importorskip("kp_vo.pipeline", reason="kp_vo.pipeline not available yet")


def test_bag_equals_run_frames_on_kitti(tmp_path):
    """Acceptance on real data (short): kp-vo bag on a make-bag of KITTI 07 (8 frames) == run_frames."""
    pipeline = _pipeline()
    if not (DATA / "kitti" / "sequences" / "07").is_dir():
        pytest.skip(f"real data not found at {DATA}")
    kitti = pytest.importorskip("kp_vo.datasets.kitti")
    seq = kitti.KittiOdometry(DATA / "kitti", "07", max_frames=8)
    config = pipeline.PipelineConfig()
    ref = pipeline.run_frames(seq, pipeline.build_odometry(config), progress=False)
    write_frames_bag(iter(seq), tmp_path / "in", ground_truth=seq.ground_truth())
    summary = run_bag(tmp_path / "in", tmp_path / "out", pipeline.build_odometry(config))
    seg = summary.segments[0]
    np.testing.assert_array_equal(np.asarray(seg.stamps_ns), ref.stamps_ns)
    np.testing.assert_allclose(np.stack(seg.T_world_cam), ref.T_world_cam, atol=1e-9)
    assert seg.states == ref.states and "tracking" in seg.states
    # the /odom messages are the same trajectory, moved into base_link by the static TF
    T_bc = default_T_base_cam()
    odom = [cv.pose_msg_to_pose(m.pose.pose) for m in read_all(tmp_path / "out", "/odom")]
    for T_ob, T_wc in zip(odom, ref.T_world_cam):
        np.testing.assert_allclose(T_ob, T_bc @ T_wc @ np.linalg.inv(T_bc), atol=1e-6)


def test_ros1_bag_is_read(tmp_path):
    """A ROS 1 bag (upper-case CameraInfo fields, header.seq) runs through the same core."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    T = ts.types
    path = tmp_path / "old.bag"
    with Writer(path) as bag:
        img_conn = bag.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=ts)
        info_conn = bag.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts)
        for k, frame in enumerate(frames(4)):
            sec, nanosec = cv.ns_to_sec_nanosec(frame.stamp_ns)
            header = T["std_msgs/msg/Header"](seq=k, stamp=T["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                              frame_id="cam")
            fields = cv.camera_info_fields(CAM)
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = T["sensor_msgs/msg/CameraInfo"](header=header, height=CAM.height, width=CAM.width,
                                                   distortion_model="plumb_bob", D=fields["d"], K=fields["k"],
                                                   R=fields["r"], P=fields["p"], binning_x=0, binning_y=0, roi=roi)
            img = T["sensor_msgs/msg/Image"](header=header, **cv.numpy_to_image_fields(frame.image, "mono8"))
            bag.write(info_conn, frame.stamp_ns - 1, ts.serialize_ros1(info, info.__msgtype__))
            bag.write(img_conn, frame.stamp_ns, ts.serialize_ros1(img, img.__msgtype__))
    odo = FakeOdometry()
    summary = run_bag(path, tmp_path / "out", odo)
    assert summary.frames_processed == 4 and summary.topics.image == "/cam/image_raw"
    assert odo.frames[0].camera == CAM
    np.testing.assert_array_equal(odo.frames[2].image, frames(4)[2].image)
