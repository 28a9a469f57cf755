"""ROS message fields <-> numpy, CameraIntrinsics and poses, without importing ROS.

Every reader here takes any object with the ROS field names: a message class of the
``rosbags`` type store, a real rclpy message, or a ``SimpleNamespace``. Every builder
takes a ``factory(msgtype) -> class`` (``rosbags_factory(typestore)`` offline,
``ros_factory`` in the node) and fills all fields by keyword, so the ROS node and the
bag writer produce the same messages from the same payloads.

Conventions: stamps are int nanoseconds; images come out as (H, W) or (H, W, 3) uint8
RGB; depth comes out as (H, W) float32 metres with 0 for invalid (16UC1 is millimetres).
"""

from __future__ import annotations

import array as array_module
import importlib
import logging
from typing import Any, Callable

import cv2
import numpy as np
from scipy.spatial.transform import Rotation

from kp_vo.errors import InvalidInputError
from kp_vo.trajio import quaternion_to_rotation, rotation_to_quaternion
from kp_vo.types import CameraIntrinsics, sanitize_depth

logger = logging.getLogger(__name__)

MessageFactory = Callable[[str], type]


class UnsupportedEncodingError(InvalidInputError):
    """An Image whose ``encoding`` this package cannot read (``.encoding`` holds it)."""

    def __init__(self, what: str, encoding: str, supported: tuple):
        super().__init__(f"unsupported {what} encoding {encoding!r}; supported: {', '.join(supported)}")
        self.encoding = encoding

# encoding -> (numpy dtype, channels); byte order is taken from ``is_bigendian``.
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "mono8": ("u1", 1), "8UC1": ("u1", 1),
    "mono16": ("u2", 1),
    "rgb8": ("u1", 3), "bgr8": ("u1", 3), "8UC3": ("u1", 3),
    "rgba8": ("u1", 4), "bgra8": ("u1", 4),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")
COLOR_ENCODINGS = ("mono8", "8UC1", "mono16", "rgb8", "bgr8", "8UC3", "rgba8", "bgra8")


# ----------------------------------------------------------------------------- time

def int_field(value: Any, what: str) -> int:
    """A message's integer field as an int; InvalidInputError (one line) for NaN, inf, fractions or text
    (a message filled in by hand, or a corrupt one)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    raise InvalidInputError(f"{what} must be an integer, got {value!r}")


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> int nanoseconds.

    Raises InvalidInputError for a field that is not an integer, a negative ``sec`` or a ``nanosec``
    outside [0, 1e9)."""
    sec, nanosec = int_field(stamp.sec, "stamp sec"), int_field(stamp.nanosec, "stamp nanosec")
    if sec < 0 or not 0 <= nanosec < 1_000_000_000:
        raise InvalidInputError(f"stamp sec={sec} nanosec={nanosec} is not a valid time "
                                "(sec >= 0, 0 <= nanosec < 1e9)")
    return sec * 1_000_000_000 + nanosec


def ns_to_sec_nanosec(stamp_ns: int) -> tuple[int, int]:
    """int nanoseconds -> (sec, nanosec) with 0 <= nanosec < 1e9."""
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return int(sec), int(nanosec)


# ----------------------------------------------------------------------------- images

# Row padding (``step`` beyond the pixels) is alignment: a padding of a whole row or more, past this many
# bytes, is data of another encoding (rgb8 bytes declared mono8, 32FC1 declared 16UC1), not padding.
MAX_ALIGNMENT_PADDING = 64


def _byte_buffer(data: Any, encoding: str) -> np.ndarray:
    """``msg.data`` (bytes, array('B'), list of ints or a numpy array) as a flat uint8 array."""
    try:
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if isinstance(data, (list, tuple)):
            return np.asarray(data, dtype=np.uint8)
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInputError(f"image data ({encoding}) is not a byte buffer: {type(data).__name__} "
                                f"({exc})") from None


def _raw_array(msg: Any, dtype: str, channels: int) -> np.ndarray:
    """(H, W, C) view of ``msg.data`` honouring ``step`` (row padding) and byte order.

    The byte count must be the declared one: ``step * height`` (or without the last row's padding), with
    ``step`` at least one row of ``width * channels * itemsize`` bytes plus alignment padding of less than
    a row (or under MAX_ALIGNMENT_PADDING bytes): an encoding that does not fit the data is refused."""
    encoding = msg.encoding
    height, width = int_field(msg.height, "image height"), int_field(msg.width, "image width")
    step = int_field(msg.step, "image step")
    if height <= 0 or width <= 0:
        raise InvalidInputError(f"empty image {width}x{height} ({encoding})")
    dt = np.dtype(dtype).newbyteorder(">" if getattr(msg, "is_bigendian", 0) else "<")
    row_bytes = width * channels * dt.itemsize
    if step < row_bytes:
        raise InvalidInputError(f"image step {step} is smaller than a row of {row_bytes} bytes "
                                f"({width} px of {encoding})")
    if step - row_bytes >= max(row_bytes, MAX_ALIGNMENT_PADDING):
        raise InvalidInputError(f"image step {step} is {step / row_bytes:.2f} rows of {width} px {encoding} "
                                f"({row_bytes} bytes): the data is not {encoding}")
    data = _byte_buffer(msg.data, encoding)
    if data.size not in (step * height, step * (height - 1) + row_bytes):
        raise InvalidInputError(
            f"image data has {data.size} bytes, {width}x{height} {encoding} with step {step} needs "
            f"{step * height}")
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    return np.ascontiguousarray(rows).view(dt).reshape(height, width, channels).astype(dt.newbyteorder("="))


def image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) uint8 gray or (H, W, 3) uint8 RGB for the extractor.

    mono16 is scaled to 8 bits (>> 8); bgr/bgra are reordered to RGB; alpha is dropped.
    Raises InvalidInputError for unknown encodings, empty or truncated images.
    """
    encoding = str(msg.encoding)
    if encoding not in COLOR_ENCODINGS:
        raise UnsupportedEncodingError("image", encoding, COLOR_ENCODINGS)
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = _raw_array(msg, dtype, channels)
    if encoding == "mono16":
        return (arr[:, :, 0] >> 8).astype(np.uint8)
    if channels == 1:
        return arr[:, :, 0]
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(arr[:, :, 2::-1])
    return np.ascontiguousarray(arr[:, :, :3])


def compressed_image_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's ``compressed`` plugin writes it) ->
    (H, W) uint8 gray or (H, W, 3) uint8 RGB, like ``image_to_numpy``.

    Colour payloads are BGR (image_transport encodes colour as bgr8), 16-bit PNG is scaled to 8 bits (>> 8),
    alpha is dropped. Raises InvalidInputError for an empty payload or one that does not decode.
    """
    buffer = _byte_buffer(msg.data, f"CompressedImage {msg.format!r}")
    if buffer.size == 0:
        raise InvalidInputError(f"empty CompressedImage ({msg.format!r})")
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise InvalidInputError(f"CompressedImage of {buffer.size} bytes ({msg.format!r}) does not decode as "
                                "JPEG or PNG")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.dtype != np.uint8:
        raise InvalidInputError(f"CompressedImage ({msg.format!r}) decodes to {image.dtype}, expected 8 or 16 bits")
    if image.ndim == 3:
        return np.ascontiguousarray(image[:, :, 2::-1])
    return image


def depth_to_numpy(msg: Any) -> np.ndarray:
    """sensor_msgs/Image depth (16UC1/mono16 millimetres or 32FC1 metres) -> (H, W) float32 metres.

    NaN, inf, zero and negative values become 0 (invalid).
    """
    encoding = str(msg.encoding)
    if encoding not in DEPTH_ENCODINGS:
        raise UnsupportedEncodingError("depth", encoding, DEPTH_ENCODINGS)
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = _raw_array(msg, dtype, channels)[:, :, 0]
    if encoding == "32FC1":
        return sanitize_depth(arr)
    return sanitize_depth(arr.astype(np.float32) * np.float32(0.001))


def numpy_to_image_fields(array: np.ndarray, encoding: str) -> dict:
    """Fields (height, width, encoding, is_bigendian, step, data) of an Image holding ``array``.

    ``array``: (H, W) or (H, W, C) with the dtype of ``encoding`` (uint8 for mono8/rgb8/bgr8,
    uint16 for mono16/16UC1, float32 for 32FC1). Data is little-endian.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise InvalidInputError(f"unsupported image encoding {encoding!r}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] != channels:
        raise InvalidInputError(f"array of shape {np.shape(array)} does not fit encoding {encoding}")
    if arr.dtype != np.dtype(dtype):
        raise InvalidInputError(f"array dtype {arr.dtype} does not fit encoding {encoding} ({np.dtype(dtype)})")
    h, w = arr.shape[:2]
    data = np.ascontiguousarray(arr.astype(np.dtype(dtype).newbyteorder("<"))).view(np.uint8).reshape(-1)
    return {"height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * channels * np.dtype(dtype).itemsize, "data": data}


# ----------------------------------------------------------------------------- camera info

def camera_info_fields(camera: CameraIntrinsics) -> dict:
    """Fields of a sensor_msgs/CameraInfo (ROS 2 names, without header) for a rectified pinhole camera."""
    K = camera.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    return {"height": camera.height, "width": camera.width, "distortion_model": "plumb_bob",
            "d": np.zeros(5), "k": K.reshape(-1).copy(), "r": np.eye(3).reshape(-1), "p": P.reshape(-1)}


# ----------------------------------------------------------------------------- poses

# |q.q - 1| above this refuses a quaternion (tf2's TF_DENORMALIZED_QUATERNION bound); below it q is normalised
QUATERNION_TOLERANCE = 0.01


def pose_from_translation_quaternion(t: Any, q_xyzw: Any) -> np.ndarray:
    """(3,) translation + (4,) quaternion (x, y, z, w) -> (4, 4) pose.

    Raises InvalidInputError for values that are not finite numbers or a quaternion whose squared norm is
    more than QUATERNION_TOLERANCE from 1 (a zero quaternion: an orientation never filled in)."""
    try:
        t = np.asarray(t, dtype=np.float64).reshape(3)
        q = np.asarray(q_xyzw, dtype=np.float64).reshape(4)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"pose is not numeric: {exc}") from None
    if not (np.isfinite(t).all() and np.isfinite(q).all()):
        raise InvalidInputError(f"pose is not finite: translation {t.tolist()}, rotation {q.tolist()}")
    if abs(float(q @ q) - 1.0) > QUATERNION_TOLERANCE:
        raise InvalidInputError(f"rotation {q.tolist()} is not a unit quaternion (norm {np.linalg.norm(q):.4g})")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(q)
    T[:3, 3] = t
    return T


def transform_msg_to_pose(transform: Any) -> np.ndarray:
    """geometry_msgs/Transform -> (4, 4) pose T_parent_child."""
    t, r = transform.translation, transform.rotation
    return pose_from_translation_quaternion([t.x, t.y, t.z], [r.x, r.y, r.z, r.w])


def pose_msg_to_pose(pose: Any) -> np.ndarray:
    """geometry_msgs/Pose -> (4, 4) pose."""
    p, r = pose.position, pose.orientation
    return pose_from_translation_quaternion([p.x, p.y, p.z], [r.x, r.y, r.z, r.w])


def pose_with_covariance_stamped_to_pose(msg: Any) -> tuple[str, np.ndarray]:
    """geometry_msgs/PoseWithCovarianceStamped -> (header.frame_id, (4, 4) pose).

    Raises InvalidInputError on a non-finite position or a quaternion that is not finite or of norm far
    from 1 (a zero quaternion, e.g. a message filled in by hand without orientation).
    """
    pose = msg.pose.pose
    p, r = pose.position, pose.orientation
    try:
        t = np.array([p.x, p.y, p.z], dtype=np.float64)
        q = np.array([r.x, r.y, r.z, r.w], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"pose is not numeric: {exc}") from None
    if not (np.isfinite(t).all() and np.isfinite(q).all()):
        raise InvalidInputError(f"pose is not finite: position {t.tolist()}, orientation {q.tolist()}")
    if abs(np.linalg.norm(q) - 1.0) > 1e-3:
        raise InvalidInputError(f"pose orientation {q.tolist()} is not a unit quaternion")
    return str(msg.header.frame_id), pose_from_translation_quaternion(t, q)


# ----------------------------------------------------------------------------- builders

def rosbags_factory(typestore: Any) -> MessageFactory:
    """Message classes of a ``rosbags`` type store, by name ``pkg/msg/Name``."""
    return lambda msgtype: typestore.types[msgtype]


def ros_factory(msgtype: str) -> type:
    """Message classes of an installed ROS 2 (``pkg/msg/Name`` -> ``pkg.msg.Name``)."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def header_msg(factory: MessageFactory, stamp_ns: int, frame_id: str) -> Any:
    sec, nanosec = ns_to_sec_nanosec(stamp_ns)
    stamp = factory("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)
    return factory("std_msgs/msg/Header")(stamp=stamp, frame_id=frame_id)


def pose_msg(factory: MessageFactory, T: np.ndarray) -> Any:
    """(4, 4) pose -> geometry_msgs/Pose."""
    q = rotation_to_quaternion(T[:3, :3])
    t = np.asarray(T, dtype=np.float64)[:3, 3]
    point = factory("geometry_msgs/msg/Point")(x=float(t[0]), y=float(t[1]), z=float(t[2]))
    quat = factory("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    return factory("geometry_msgs/msg/Pose")(position=point, orientation=quat)


def transform_stamped_msg(factory: MessageFactory, stamp_ns: int, parent: str, child: str, T_parent_child: np.ndarray) -> Any:
    """geometry_msgs/TransformStamped of the (4, 4) pose of ``child`` in ``parent``."""
    q = rotation_to_quaternion(T_parent_child[:3, :3])
    t = np.asarray(T_parent_child, dtype=np.float64)[:3, 3]
    translation = factory("geometry_msgs/msg/Vector3")(x=float(t[0]), y=float(t[1]), z=float(t[2]))
    rotation = factory("geometry_msgs/msg/Quaternion")(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))
    transform = factory("geometry_msgs/msg/Transform")(translation=translation, rotation=rotation)
    return factory("geometry_msgs/msg/TransformStamped")(
        header=header_msg(factory, stamp_ns, parent), child_frame_id=child, transform=transform)


def tf_message(factory: MessageFactory, transforms: list) -> Any:
    """tf2_msgs/TFMessage of a list of TransformStamped messages."""
    return factory("tf2_msgs/msg/TFMessage")(transforms=list(transforms))


def _covariance36(covariance: np.ndarray) -> np.ndarray:
    cov = np.asarray(covariance, dtype=np.float64)
    if cov.shape != (6, 6):
        raise InvalidInputError(f"covariance must be 6x6, got {cov.shape}")
    return cov.reshape(36).copy()


def odometry_msg(factory: MessageFactory, stamp_ns: int, frame_id: str, child_frame_id: str,
                 T_frame_child: np.ndarray, covariance: np.ndarray, twist: np.ndarray | None = None,
                 twist_covariance: np.ndarray | None = None) -> Any:
    """nav_msgs/Odometry: pose of ``child_frame_id`` in ``frame_id`` with a (6, 6) covariance
    (x, y, z, rot_x, rot_y, rot_z), and the (6,) twist (vx, vy, vz, wx, wy, wz) of the child in the
    child frame with its (6, 6) covariance. Twist None = unknown: zero with covariance -1 on the
    diagonal's first element."""
    pwc = factory("geometry_msgs/msg/PoseWithCovariance")(
        pose=pose_msg(factory, T_frame_child), covariance=_covariance36(covariance))
    vector = factory("geometry_msgs/msg/Vector3")
    v = np.zeros(6) if twist is None else np.asarray(twist, dtype=np.float64).reshape(6)
    twist_value = factory("geometry_msgs/msg/Twist")(linear=vector(x=float(v[0]), y=float(v[1]), z=float(v[2])),
                                                     angular=vector(x=float(v[3]), y=float(v[4]), z=float(v[5])))
    tcov = np.zeros(36)
    if twist is None:
        tcov[0] = -1.0
    else:
        tcov = _covariance36(twist_covariance)
    twc = factory("geometry_msgs/msg/TwistWithCovariance")(twist=twist_value, covariance=tcov)
    return factory("nav_msgs/msg/Odometry")(
        header=header_msg(factory, stamp_ns, frame_id), child_frame_id=child_frame_id, pose=pwc, twist=twc)


def pose_with_covariance_stamped_msg(factory: MessageFactory, stamp_ns: int, frame_id: str,
                                     T_frame_child: np.ndarray, covariance: np.ndarray) -> Any:
    """geometry_msgs/PoseWithCovarianceStamped of a (4, 4) pose and its (6, 6) covariance."""
    pwc = factory("geometry_msgs/msg/PoseWithCovariance")(
        pose=pose_msg(factory, T_frame_child), covariance=_covariance36(covariance))
    return factory("geometry_msgs/msg/PoseWithCovarianceStamped")(header=header_msg(factory, stamp_ns, frame_id), pose=pwc)


def quaternions_xyzw(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotation matrices -> (N, 4) unit quaternions (x, y, z, w), canonical as ``kp_vo.trajio.rotation_to_quaternion``,
    in one call (a path of thousands of poses is converted per published frame)."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    if not len(R):
        return np.zeros((0, 4))
    if not np.isfinite(R).all():
        raise InvalidInputError("rotation contains NaN or inf")
    if (np.abs(R.transpose(0, 2, 1) @ R - np.eye(3)).max() > 1e-3 or (np.linalg.det(R) <= 0).any()):
        raise InvalidInputError("matrix is not a rotation (not orthonormal or det <= 0)")
    return Rotation.from_matrix(R).as_quat(canonical=True)


def path_msg(factory: MessageFactory, frame_id: str, stamps_ns: list[int], poses: list[np.ndarray]) -> Any:
    """nav_msgs/Path of (4, 4) poses in ``frame_id``; the header stamp is the last pose's."""
    ps, pose, point, quaternion = (factory(f"geometry_msgs/msg/{name}")
                                   for name in ("PoseStamped", "Pose", "Point", "Quaternion"))
    T = np.asarray(poses, dtype=np.float64).reshape(-1, 4, 4)
    qs, ts = quaternions_xyzw(T[:, :3, :3]).tolist(), T[:, :3, 3].tolist()
    items = [ps(header=header_msg(factory, s, frame_id),
                pose=pose(position=point(x=t[0], y=t[1], z=t[2]), orientation=quaternion(x=q[0], y=q[1], z=q[2], w=q[3])))
             for s, t, q in zip(stamps_ns, ts, qs)]
    last = stamps_ns[-1] if stamps_ns else 0
    return factory("nav_msgs/msg/Path")(header=header_msg(factory, last, frame_id), poses=items)


def image_msg(factory: MessageFactory, stamp_ns: int, frame_id: str, array: np.ndarray, encoding: str) -> Any:
    """sensor_msgs/Image holding ``array`` (see ``numpy_to_image_fields``)."""
    fields = numpy_to_image_fields(array, encoding)
    if factory is ros_factory:  # rclpy's uint8[] setter takes array('B') fast, numpy not at all
        fields["data"] = array_module.array("B", fields["data"].tobytes())
    return factory("sensor_msgs/msg/Image")(header=header_msg(factory, stamp_ns, frame_id), **fields)


def camera_info_msg(factory: MessageFactory, stamp_ns: int, frame_id: str, camera: CameraIntrinsics) -> Any:
    """sensor_msgs/CameraInfo of a rectified pinhole camera (no binning, full ROI)."""
    roi = factory("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return factory("sensor_msgs/msg/CameraInfo")(
        header=header_msg(factory, stamp_ns, frame_id), binning_x=0, binning_y=0, roi=roi,
        **camera_info_fields(camera))


def string_msg(factory: MessageFactory, text: str) -> Any:
    return factory("std_msgs/msg/String")(data=text)


DIAGNOSTIC_LEVELS = {"ok": 0, "warn": 1, "error": 2, "stale": 3}


def diagnostic_array_msg(factory: MessageFactory, stamp_ns: int, name: str, hardware_id: str, level: str,
                         message: str, values: dict) -> Any:
    """diagnostic_msgs/DiagnosticArray with one status; ``level`` is ok/warn/error/stale."""
    kv = factory("diagnostic_msgs/msg/KeyValue")
    level_value = DIAGNOSTIC_LEVELS[level]
    status = factory("diagnostic_msgs/msg/DiagnosticStatus")(
        level=np.uint8(level_value) if _wants_numpy_byte(factory) else bytes([level_value]),
        name=name, message=message, hardware_id=hardware_id,
        values=[kv(key=str(k), value=str(v)) for k, v in values.items()])
    return factory("diagnostic_msgs/msg/DiagnosticArray")(header=header_msg(factory, stamp_ns, ""), status=[status])


def _wants_numpy_byte(factory: MessageFactory) -> bool:
    """rosbags stores the ``byte`` field as an int; rclpy wants a one-byte ``bytes``."""
    return factory is not ros_factory
