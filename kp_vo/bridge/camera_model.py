"""camera_info -> the pinhole camera the odometry sees, undistorting raw images when asked (ROS-free).

A sensor_msgs/CameraInfo describes the raw image: K (3, 3), D with ``distortion_model`` "plumb_bob"
(k1 k2 p1 p2 k3), "rational_polynomial" (k1 k2 p1 p2 k3 k4 k5 k6) or "equidistant" (fisheye k1..k4),
R (rectification rotation) and P (3, 4), the projection of the rectified image. ``ros.distortion`` says
what a non-zero D means:

- ``rectify``:   the images are raw (e.g. the Azure Kinect driver's ``/rgb/image_raw``): each image (and its
  registered depth) is undistorted with ``cv2.remap`` onto the pinhole camera P[:3, :3] (K when P is
  unset). The maps are built once per camera_info (cached by K, D, R, P, model and size).
- ``rectified``: the images are rectified already (image_proc's ``image_rect`` topics, whose camera_info
  still carries the raw D): P is used, D ignored.
- ``refuse``:    one-line error, the camera_info is ignored (images wait for a usable one).

With D all zero every mode uses P when it is set, else K.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from kp_vo.bridge.conversions import int_field
from kp_vo.errors import InvalidInputError
from kp_vo.types import CameraIntrinsics

DISTORTION_MODES = ("rectify", "rectified", "refuse")
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
MAX_IMAGE_SIDE = 32768   # px; a larger camera_info is corrupt (and would make huge rectification maps)


def _field(msg: Any, name: str) -> Any:
    """ROS 2 lower-case field (``k``) or its ROS 1 upper-case spelling (``K``)."""
    if hasattr(msg, name):
        return getattr(msg, name)
    return getattr(msg, name.upper())


@dataclass(frozen=True)
class CameraInfoData:
    """The fields of one camera_info, checked: K (3, 3), D (n,), R (3, 3), P (3, 4) float64."""

    width: int
    height: int
    model: str
    K: np.ndarray
    D: np.ndarray
    R: np.ndarray
    P: np.ndarray

    @property
    def distorted(self) -> bool:
        return bool(self.D.size and np.any(np.abs(self.D) > 1e-9))

    @property
    def has_P(self) -> bool:
        return bool(self.P[0, 0] > 0 and self.P[1, 1] > 0)

    def key(self) -> tuple:
        """What the undistortion maps depend on."""
        return (self.width, self.height, self.model, self.K.tobytes(), self.D.tobytes(), self.R.tobytes(),
                self.P.tobytes())


def read_camera_info(msg: Any) -> CameraInfoData:
    """sensor_msgs/CameraInfo (ROS 2 or ROS 1 field names) -> CameraInfoData.

    Raises InvalidInputError on a K that is not 9 finite values with fx, fy > 0, an image size outside
    1..MAX_IMAGE_SIDE, or a non-finite D. R unset (all zero) reads as the identity; P unset as zeros.
    """
    width, height = int_field(msg.width, "camera_info width"), int_field(msg.height, "camera_info height")
    K = np.asarray(_field(msg, "k"), dtype=np.float64).reshape(-1)
    if K.size != 9:
        raise InvalidInputError(f"camera_info K has {K.size} values, expected 9")
    K = K.reshape(3, 3)
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
        raise InvalidInputError(f"camera_info has an invalid K (fx={K[0, 0]}, fy={K[1, 1]}, cx={K[0, 2]}, "
                                f"cy={K[1, 2]})")
    if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE):
        raise InvalidInputError(f"camera_info has image size {width}x{height} (each side 1..{MAX_IMAGE_SIDE})")
    D = np.asarray(_field(msg, "d"), dtype=np.float64).reshape(-1)
    if not np.isfinite(D).all():
        raise InvalidInputError("camera_info D is not finite")
    R = np.asarray(_field(msg, "r"), dtype=np.float64).reshape(-1)
    R = R.reshape(3, 3) if R.size == 9 and np.any(R) else np.eye(3)
    P = np.asarray(_field(msg, "p"), dtype=np.float64).reshape(-1)
    P = P.reshape(3, 4) if P.size == 12 and np.isfinite(P).all() else np.zeros((3, 4))
    model = str(getattr(msg, "distortion_model", "") or "plumb_bob")
    return CameraInfoData(width, height, model, K, D, R, P)


@dataclass(frozen=True)
class CameraModel:
    """The pinhole ``camera`` the odometry sees and, when rectifying, the (H, W) float32 maps of cv2.remap."""

    camera: CameraIntrinsics
    maps: tuple[np.ndarray, np.ndarray] | None = None

    def image(self, image: np.ndarray) -> np.ndarray:
        """(H, W[, 3]) raw image -> the rectified one (bilinear; outside the raw image: 0)."""
        if self.maps is None:
            return image
        return cv2.remap(image, *self.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    def depth(self, depth: np.ndarray) -> np.ndarray:
        """(H, W) float32 metres registered to the raw image -> rectified (nearest: depths never blend)."""
        if self.maps is None:
            return depth
        return cv2.remap(depth, *self.maps, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _pinhole(matrix: np.ndarray, info: CameraInfoData) -> CameraIntrinsics:
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise InvalidInputError(f"camera_info has an invalid P (fx={fx}, fy={fy}, cx={cx}, cy={cy})")
    return CameraIntrinsics(float(fx), float(fy), float(cx), float(cy), info.width, info.height)


def build_camera_model(info: CameraInfoData, mode: str) -> CameraModel:
    """The CameraModel of ``info`` under ``ros.distortion`` = ``mode`` (module docstring)."""
    target = info.P[:, :3] if info.has_P else info.K
    if not info.distorted:
        return CameraModel(_pinhole(target, info))
    if mode == "refuse":
        raise InvalidInputError(
            f"camera_info has {info.model} distortion {np.round(info.D, 6).tolist()} and ros.distortion is "
            "'refuse': set it to 'rectify' (raw images) or 'rectified' (image_rect topics)")
    if mode == "rectified":
        if not info.has_P:
            raise InvalidInputError("ros.distortion is 'rectified' but camera_info has no P (the rectified "
                                    "projection); use 'rectify' for raw images")
        return CameraModel(_pinhole(target, info))
    expected = DISTORTION_MODELS.get(info.model)
    if expected is None:
        raise InvalidInputError(f"camera_info distortion_model {info.model!r} cannot be rectified; "
                                f"supported: {', '.join(DISTORTION_MODELS)}")
    if info.D.size < expected:
        raise InvalidInputError(f"camera_info {info.model} distortion needs {expected} coefficients, "
                                f"got {info.D.size}")
    size = (info.width, info.height)
    if info.model == "equidistant":
        maps = cv2.fisheye.initUndistortRectifyMap(info.K, info.D[:4], info.R, target, size, cv2.CV_32FC1)
    else:
        maps = cv2.initUndistortRectifyMap(info.K, info.D[:expected], info.R, target, size, cv2.CV_32FC1)
    return CameraModel(_pinhole(target, info), (maps[0], maps[1]))


class CameraModels:
    """``update(msg)``: the CameraModel of a camera_info, rebuilt only when the camera_info changes."""

    def __init__(self, mode: str):
        if mode not in DISTORTION_MODES:
            raise InvalidInputError(f"ros.distortion must be one of {', '.join(DISTORTION_MODES)}, got {mode!r}")
        self.mode = mode
        self._key: tuple | None = None
        self._model: CameraModel | None = None

    def update(self, msg: Any) -> CameraModel:
        """The model of camera_info ``msg``; raises InvalidInputError (one line) for an unusable one."""
        info = read_camera_info(msg)
        if info.key() != self._key:
            self._model = build_camera_model(info, self.mode)
            self._key = info.key()
        return self._model
