"""Distorted camera_info: rectified (known answer), taken as rectified, or refused; through the node core too."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory, typestore
from kp_vo.bridge.camera_model import CameraModels, build_camera_model, read_camera_info
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.errors import InvalidInputError
from kp_vo.types import CameraIntrinsics

from test_bridge_node_core import FakeOdometry  # noqa: E402  (test helper)

F = factory()
W, H = 320, 240
K = np.array([[250.0, 0, 161.3], [0, 252.0, 118.7], [0, 0, 1]])
# Azure-Kinect-like: P = K (the driver's), strong radial terms
DISTORTIONS = {
    "plumb_bob": np.array([-0.28, 0.09, 0.0012, -0.0008, -0.012]),
    "rational_polynomial": np.array([0.45, -2.6, 0.0007, -0.0003, 1.5, 0.33, -2.4, 1.4]),
}


def camera_info(model, D, P=None):
    P = np.hstack([K, np.zeros((3, 1))]) if P is None else P
    msg = F("sensor_msgs/msg/CameraInfo")(
        header=cv.header_msg(F, 0, "rgb_camera_link"), height=H, width=W, distortion_model=model, d=D,
        k=K.reshape(-1), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=F("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    ts = typestore()
    return ts.deserialize_cdr(ts.serialize_cdr(msg, msg.__msgtype__), msg.__msgtype__)


def blobs(points_uv, sigma=1.2):
    """(H, W) float32 image with a Gaussian spot at each sub-pixel (u, v)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    img = np.zeros((H, W))
    for pu, pv in points_uv:
        img += np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / (2 * sigma ** 2))
    return (img * 250).astype(np.float32)


def centroid(img, uv, r=5):
    u0, v0 = int(round(uv[0])), int(round(uv[1]))
    patch = img[v0 - r:v0 + r + 1, u0 - r:u0 + r + 1].astype(np.float64)
    vv, uu = np.mgrid[v0 - r:v0 + r + 1, u0 - r:u0 + r + 1]
    return np.array([(patch * uu).sum(), (patch * vv).sum()]) / patch.sum()


@pytest.mark.parametrize("model", sorted(DISTORTIONS))
def test_a_point_through_the_distorted_model_lands_on_its_pinhole_pixel_after_rectification(model):
    D = DISTORTIONS[model]
    rng = np.random.default_rng(0)
    # points spread over the image, corners included (where the distortion is largest)
    X = np.column_stack([rng.uniform(-0.5, 0.5, 12), rng.uniform(-0.38, 0.38, 12), np.ones(12)])
    X[:4, :2] = [[-0.55, -0.4], [0.55, -0.4], [-0.55, 0.4], [0.55, 0.4]]
    distorted, _ = cv2.projectPoints(X, np.zeros(3), np.zeros(3), K, D)
    raw = blobs(distorted.reshape(-1, 2))
    camera_model = build_camera_model(read_camera_info(camera_info(model, D)), "rectify")
    assert camera_model.camera == CameraIntrinsics(250.0, 252.0, 161.3, 118.7, W, H)
    rectified = camera_model.image(raw)
    pinhole = (K @ X.T).T
    pinhole = pinhole[:, :2] / pinhole[:, 2:]
    errors = [np.linalg.norm(centroid(rectified, uv) - uv) for uv in pinhole]
    assert max(errors) < 0.15, errors                         # pixels (measured ~0.03)
    # without rectification the same spots are far from their pinhole pixels
    assert max(np.linalg.norm(distorted.reshape(-1, 2) - pinhole, axis=1)) > 4


def test_maps_are_built_once_per_camera_info_and_rebuilt_when_it_changes():
    models = CameraModels("rectify")
    first = models.update(camera_info("plumb_bob", DISTORTIONS["plumb_bob"]))
    assert first.maps is not None
    assert models.update(camera_info("plumb_bob", DISTORTIONS["plumb_bob"])) is first    # cached
    other = models.update(camera_info("plumb_bob", DISTORTIONS["plumb_bob"] * 0.5))
    assert other is not first and not np.array_equal(other.maps[0], first.maps[0])


def test_refuse_and_rectified_modes():
    info = camera_info("rational_polynomial", DISTORTIONS["rational_polynomial"])
    with pytest.raises(InvalidInputError, match="rational_polynomial distortion .* 'refuse'"):
        CameraModels("refuse").update(info)
    P = np.hstack([np.array([[240.0, 0, 160.0], [0, 240.0, 120.0], [0, 0, 1]]), np.zeros((3, 1))])
    rect = CameraModels("rectified").update(camera_info("plumb_bob", DISTORTIONS["plumb_bob"], P))
    assert rect.maps is None and rect.camera == CameraIntrinsics(240.0, 240.0, 160.0, 120.0, W, H)
    with pytest.raises(InvalidInputError, match="no P"):
        CameraModels("rectified").update(camera_info("plumb_bob", DISTORTIONS["plumb_bob"], np.zeros((3, 4))))
    with pytest.raises(InvalidInputError, match="ros.distortion"):
        CameraModels("undistort")


def test_undistorted_camera_info_is_pinhole_in_every_mode_and_ros1_names_read():
    for mode in ("rectify", "rectified", "refuse"):
        model = CameraModels(mode).update(camera_info("plumb_bob", np.zeros(5)))
        assert model.maps is None and model.camera.fx == 250.0
    ros1 = SimpleNamespace(width=W, height=H, K=K.reshape(-1), D=np.zeros(5), R=np.zeros(9), P=np.zeros(12))
    assert CameraModels("refuse").update(ros1).camera == CameraIntrinsics(250.0, 252.0, 161.3, 118.7, W, H)


@pytest.mark.parametrize("field, value, message", [("k", np.zeros(9), "invalid K"), ("width", 0, "size"),
                                                    ("distortion_model", "kannala", "cannot be rectified")])
def test_bad_camera_info_is_one_line(field, value, message):
    info = camera_info("plumb_bob", DISTORTIONS["plumb_bob"])
    setattr(info, field, value)
    with pytest.raises(InvalidInputError, match=message):
        CameraModels("rectify").update(info)


def test_node_core_rectifies_image_and_depth_or_refuses(caplog):
    D = DISTORTIONS["plumb_bob"]
    X = np.array([[0.45, 0.33, 1.0]])
    uv_raw = cv2.projectPoints(X, np.zeros(3), np.zeros(3), K, D)[0].reshape(2)
    raw = np.clip(blobs([uv_raw]), 0, 255).astype(np.uint8)
    odo = FakeOdometry()
    core = VoNodeCore(NodeConfig(mode="rgbd", approx_sync=False, distortion="rectify"), odo)
    core.on_camera_info(camera_info("plumb_bob", D))
    depth = np.full((H, W), 2.0, np.float32)
    depth[int(round(uv_raw[1])) - 3:int(round(uv_raw[1])) + 4, int(round(uv_raw[0])) - 3:int(round(uv_raw[0])) + 4] = 1.0
    core.on_depth(cv.image_msg(F, 5, "cam", depth, "32FC1"))
    assert core.on_image(cv.image_msg(F, 5, "cam", raw, "mono8")) is not None
    frame = odo.frames[-1]
    uv = (K @ X[0])[:2] / X[0, 2]
    assert np.linalg.norm(centroid(frame.image, uv) - uv) < 0.3
    assert frame.depth[int(round(uv[1])), int(round(uv[0]))] == 1.0     # nearest: no blended depths
    assert set(np.unique(frame.depth)) <= {0.0, 1.0, 2.0}

    refusing = VoNodeCore(NodeConfig(distortion="refuse"), FakeOdometry())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            refusing.on_camera_info(camera_info("plumb_bob", D))
    assert refusing.camera is None and refusing.problems["bad_camera_info"] == 3
    assert sum("'refuse'" in r.message for r in caplog.records) == 1      # throttled
