"""reloc_core: the VO node core driven by a stand-in localizer."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import NodeConfig
from kp_vo.bridge.reloc_core import RelocConfig, localization_covariance, make_reloc_core, map_to_odom
from kp_vo.types import CameraIntrinsics

F = factory()
CAM = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)


class FakeLocalizer:
    """Succeeds (pose x = stamp in s) unless the image is black."""

    def localize(self, frame):
        ok = frame.image.max() > 0
        T = np.eye(4)
        T[0, 3] = frame.stamp_ns * 1e-9
        return SimpleNamespace(success=ok, T_world_cam=T if ok else None, num_matches=80,
                               num_inliers=25 if ok else 3, timings={}, message="", features=None)


def img(t, v=100):
    return cv.image_msg(F, t, "cam", np.full((48, 64), v, np.uint8), "mono8")


def test_reloc_core_outputs_map_poses_and_covariance():
    config = RelocConfig(position_std_m=0.1, rotation_std_rad=0.02, reference_inliers=100)
    core = make_reloc_core(NodeConfig(), FakeLocalizer(), config, lambda f: np.eye(4))
    core.on_camera_info(cv.camera_info_msg(F, 0, "cam", CAM))
    ok = core.on_image(img(2_000_000_000))
    assert ok.state == "tracking" and ok.odom_frame == "map" and not ok.publish_tf
    np.testing.assert_allclose(ok.T_odom_base[:3, 3], [2.0, 0, 0])
    # 25 inliers vs reference 100: variances x4
    np.testing.assert_allclose(np.diag(ok.covariance), [0.04] * 3 + [0.0016] * 3)
    failed = core.on_image(img(3_000_000_000, v=0))
    assert failed.state == "lost" and np.all(np.diag(failed.covariance) > 999)
    np.testing.assert_allclose(failed.T_odom_base[:3, 3], [2.0, 0, 0])   # last good pose kept


def test_localization_covariance_scales_with_inliers():
    c = RelocConfig()
    assert np.allclose(localization_covariance(400, c), localization_covariance(100, c) / 4)
    assert np.all(np.isfinite(localization_covariance(0, c)))


def test_map_to_odom():
    rng = np.random.default_rng(0)
    from scipy.spatial.transform import Rotation

    def pose(seed):
        T = np.eye(4)
        T[:3, :3] = Rotation.random(random_state=seed).as_matrix()
        T[:3, 3] = rng.normal(size=3)
        return T

    T_map_base, T_odom_base = pose(1), pose(2)
    np.testing.assert_allclose(map_to_odom(T_map_base, T_odom_base) @ T_odom_base, T_map_base, atol=1e-12)
