"""kp_vo.bridge.conversions on real ROS 2 Humble message classes (rosbags) with CDR round trips."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory, typestore
from kp_vo.errors import InvalidInputError
from kp_vo.types import CameraIntrinsics

F = factory()
CAM = CameraIntrinsics(500.0, 510.0, 319.5, 239.5, 640, 480)


def roundtrip(msg):
    ts = typestore()
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def rgb_image(h=6, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_give_rgb(encoding):
    rgb = rgb_image()
    if encoding == "rgb8":
        arr = rgb
    elif encoding == "bgr8":
        arr = rgb[:, :, ::-1]
    elif encoding == "rgba8":
        arr = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    else:
        arr = np.dstack([rgb[:, :, ::-1], np.full(rgb.shape[:2], 7, np.uint8)])
    msg = roundtrip(cv.image_msg(F, 5, "cam", np.ascontiguousarray(arr), encoding))
    out = cv.image_to_numpy(msg)
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, rgb)


def test_mono8_and_mono16():
    gray = np.arange(30, dtype=np.uint8).reshape(5, 6)
    np.testing.assert_array_equal(cv.image_to_numpy(roundtrip(cv.image_msg(F, 0, "c", gray, "mono8"))), gray)
    g16 = (gray.astype(np.uint16) << 8) | 0x00FF
    np.testing.assert_array_equal(cv.image_to_numpy(roundtrip(cv.image_msg(F, 0, "c", g16, "mono16"))), gray)


def test_row_padding_and_big_endian():
    depth_mm = np.array([[1000, 2000], [0, 65535]], np.uint16)
    row = depth_mm.astype(">u2").tobytes()
    # step of 6 bytes per row: 4 bytes of data + 2 bytes of padding
    data = np.frombuffer(row[:4] + b"\0\0" + row[4:] + b"\0\0", np.uint8)
    msg = SimpleNamespace(height=2, width=2, step=6, encoding="16UC1", is_bigendian=1, data=data)
    np.testing.assert_allclose(cv.depth_to_numpy(msg), [[1.0, 2.0], [0.0, 65.535]], rtol=1e-6)


def test_depth_32fc1_nan_inf_negative_become_zero():
    d = np.array([[1.5, np.nan], [np.inf, -2.0]], np.float32)
    out = cv.depth_to_numpy(roundtrip(cv.image_msg(F, 0, "c", d, "32FC1")))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.5, 0.0], [0.0, 0.0]])


def test_16uc1_is_millimetres():
    d = np.array([[1234, 0]], np.uint16)
    np.testing.assert_allclose(cv.depth_to_numpy(roundtrip(cv.image_msg(F, 0, "c", d, "16UC1"))), [[1.234, 0.0]])


def test_bad_images_raise_one_line_errors():
    good = cv.image_msg(F, 0, "c", rgb_image(), "rgb8")
    bad_enc = roundtrip(cv.image_msg(F, 0, "c", rgb_image(), "rgb8"))
    bad_enc.encoding = "yuv422"
    with pytest.raises(cv.UnsupportedEncodingError, match="yuv422") as info:
        cv.image_to_numpy(bad_enc)
    assert info.value.encoding == "yuv422" and "\n" not in str(info.value)
    with pytest.raises(cv.UnsupportedEncodingError):
        cv.depth_to_numpy(good)  # rgb8 is no depth encoding
    empty = F("sensor_msgs/msg/Image")(header=good.header, height=0, width=0, encoding="mono8",
                                       is_bigendian=0, step=0, data=np.zeros(0, np.uint8))
    with pytest.raises(InvalidInputError, match="empty image"):
        cv.image_to_numpy(roundtrip(empty))
    truncated = roundtrip(good)
    truncated.data = truncated.data[:-3]
    with pytest.raises(InvalidInputError, match="bytes"):
        cv.image_to_numpy(truncated)


def test_stamp_conversions():
    for ns in (0, 1, 999_999_999, 1_000_000_000, 1_700_000_000_123_456_789):
        sec, nanosec = cv.ns_to_sec_nanosec(ns)
        assert 0 <= nanosec < 1_000_000_000
        assert cv.stamp_to_ns(SimpleNamespace(sec=sec, nanosec=nanosec)) == ns


def random_pose(seed):
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
    T[:3, 3] = rng.normal(size=3) * 5
    return T


def test_odometry_tf_pose_path_roundtrip():
    T = random_pose(1)
    cov = np.diag(np.arange(1.0, 7.0))
    cov[0, 4] = cov[4, 0] = 0.25
    odom = roundtrip(cv.odometry_msg(F, 1_500_000_000, "odom", "base_link", T, cov))
    assert odom.header.frame_id == "odom" and odom.child_frame_id == "base_link"
    assert cv.stamp_to_ns(odom.header.stamp) == 1_500_000_000
    np.testing.assert_allclose(cv.pose_msg_to_pose(odom.pose.pose), T, atol=1e-12)
    np.testing.assert_array_equal(np.asarray(odom.pose.covariance).reshape(6, 6), cov)
    q = odom.pose.pose.orientation
    # ROS quaternions are (x, y, z, w); compare with scipy's convention
    expected = Rotation.from_matrix(T[:3, :3]).as_quat()
    assert np.allclose([q.x, q.y, q.z, q.w], expected) or np.allclose([q.x, q.y, q.z, q.w], -expected)

    tf = roundtrip(cv.tf_message(F, [cv.transform_stamped_msg(F, 7, "odom", "base_link", T)]))
    assert tf.transforms[0].child_frame_id == "base_link"
    np.testing.assert_allclose(cv.transform_msg_to_pose(tf.transforms[0].transform), T, atol=1e-12)

    poses = [random_pose(s) for s in range(3)]
    path = roundtrip(cv.path_msg(F, "odom", [1, 2, 3], poses))
    assert cv.stamp_to_ns(path.header.stamp) == 3 and len(path.poses) == 3
    for p, T_i in zip(path.poses, poses):
        np.testing.assert_allclose(cv.pose_msg_to_pose(p.pose), T_i, atol=1e-12)

    pwc = roundtrip(cv.pose_with_covariance_stamped_msg(F, 9, "map", T, cov))
    np.testing.assert_allclose(cv.pose_msg_to_pose(pwc.pose.pose), T, atol=1e-12)
    frame_id, T_read = cv.pose_with_covariance_stamped_to_pose(pwc)
    assert frame_id == "map"
    np.testing.assert_allclose(T_read, T, atol=1e-12)
    with pytest.raises(InvalidInputError, match="6x6"):
        cv.odometry_msg(F, 0, "odom", "base", T, np.eye(3))


def test_odometry_twist_known_and_unknown():
    twist = np.array([1.0, 2.0, 3.0, 0.1, 0.2, 0.3])
    tcov = np.diag(np.arange(1.0, 7.0))
    odom = roundtrip(cv.odometry_msg(F, 0, "odom", "base_link", np.eye(4), np.eye(6), twist, tcov))
    t = odom.twist.twist
    np.testing.assert_allclose([t.linear.x, t.linear.y, t.linear.z, t.angular.x, t.angular.y, t.angular.z], twist)
    np.testing.assert_array_equal(np.asarray(odom.twist.covariance).reshape(6, 6), tcov)
    unknown = roundtrip(cv.odometry_msg(F, 0, "odom", "base_link", np.eye(4), np.eye(6)))
    assert unknown.twist.covariance[0] == -1.0 and unknown.twist.twist.linear.x == 0.0


@pytest.mark.parametrize("orientation, message", [((0.0, 0.0, 0.0, 0.0), "unit quaternion"),
                                                  ((0.0, 0.0, 0.0, float("nan")), "not finite")])
def test_set_pose_message_with_a_bad_orientation_is_one_line(orientation, message):
    msg = roundtrip(cv.pose_with_covariance_stamped_msg(F, 0, "map", np.eye(4), np.eye(6)))
    r = msg.pose.pose.orientation
    r.x, r.y, r.z, r.w = orientation
    with pytest.raises(InvalidInputError, match=message):
        cv.pose_with_covariance_stamped_to_pose(msg)


def compressed(array, fmt):
    """A sensor_msgs/CompressedImage as image_transport's compressed plugin writes it (colour as BGR)."""
    import cv2

    ext = ".jpg" if "jpeg" in fmt else ".png"
    bgr = array[:, :, ::-1] if array.ndim == 3 else array
    ok, buffer = cv2.imencode(ext, bgr)
    assert ok
    return F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, 5, "cam"), format=fmt,
                                                 data=buffer.reshape(-1))


def test_compressed_png_is_lossless_and_rgb():
    rgb = rgb_image(12, 10)
    np.testing.assert_array_equal(cv.compressed_image_to_numpy(roundtrip(compressed(rgb, "rgb8; png compressed bgr8"))),
                                  rgb)
    gray = rgb[:, :, 0].copy()
    np.testing.assert_array_equal(cv.compressed_image_to_numpy(compressed(gray, "mono8; png compressed mono8")), gray)


def test_compressed_jpeg_decodes_close_to_the_original():
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 30, 30)                       # a red left half survives JPEG's colour subsampling
    out = cv.compressed_image_to_numpy(roundtrip(compressed(rgb, "rgb8; jpeg compressed bgr8")))
    assert out.shape == (32, 32, 3) and np.abs(out[8:24, 2:12].astype(int) - (200, 30, 30)).max() < 12


@pytest.mark.parametrize("payload, message", [(b"", "empty"), (b"not an image at all", "does not decode")])
def test_bad_compressed_payload_is_one_line(payload, message):
    msg = F("sensor_msgs/msg/CompressedImage")(header=cv.header_msg(F, 5, "cam"), format="jpeg",
                                                data=np.frombuffer(payload, np.uint8))
    with pytest.raises(InvalidInputError, match=message):
        cv.compressed_image_to_numpy(msg)


def test_status_and_diagnostics_roundtrip():
    assert roundtrip(cv.string_msg(F, "tracking inliers=5")).data == "tracking inliers=5"
    diag = roundtrip(cv.diagnostic_array_msg(F, 3, "kp_vo", "hw", "warn", "lost", {"inliers": 4}))
    status = diag.status[0]
    assert int(status.level) == 1 and status.message == "lost"
    assert [(kv.key, kv.value) for kv in status.values] == [("inliers", "4")]


@pytest.mark.parametrize("container", ["array", "bytes", "memoryview"])
def test_rclpy_style_data_containers(container):
    import array

    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = gray.tobytes()
    data = {"array": array.array("B", raw), "bytes": raw, "memoryview": memoryview(raw)}[container]
    msg = SimpleNamespace(height=3, width=4, step=4, encoding="mono8", is_bigendian=0, data=data)
    np.testing.assert_array_equal(cv.image_to_numpy(msg), gray)
