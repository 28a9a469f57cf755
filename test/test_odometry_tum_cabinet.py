"""RGB-D odometry on the real TUM fr3 cabinet frames (0.67 s apart, little texture): a pose is trusted only when
enough matches agree in 2D and in 3D (PnP and 3D-3D hypotheses), and a frame the tracker cannot place is
localized against the window's keyframes through the relocalizer (3D-3D with its depth); the window's bundle
adjustment weighs each keyframe's measured depth."""

import numpy as np
import pytest

from conftest import SHARED_DATA
from kp_vo.datasets import TumRgbd
from kp_vo.eval.trajectory import ate_rmse
from kp_vo.features import create_extractor
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry

TUM_CABINET = SHARED_DATA / "tum" / "rgbd_dataset_freiburg3_cabinet"


@pytest.fixture(scope="module")
def frames():
    if not (TUM_CABINET / "rgb.txt").is_file():
        pytest.skip(f"real TUM data not found at {TUM_CABINET} (../shared/data beside the repository)")
    return list(TumRgbd(TUM_CABINET, max_gt_gap=0.75))


def _track(frames, extractor=None, **config):
    vo = VisualOdometry(OdometryConfig(depth_source="sensor", max_depth_m=8.0, **config),
                        extractor or create_extractor("orb", max_keypoints=2000))
    results = [vo.process(f) for f in frames]
    tracked = np.array([r.state.value == "tracking" for r in results])
    gt = np.array([f.T_world_cam_gt for f in frames])
    est = np.array([r.T_world_cam for r in results])
    ate = ate_rmse(est[tracked], gt[tracked], align="se3")["rmse"] if tracked.sum() >= 3 else float("nan")
    return results, tracked, ate


def test_frames_the_prior_cannot_place_are_localized_against_the_window(frames):
    """The issue's bar (>= 90 % of the frames tracked, ATE <= 5 cm) with ORB: 57 of 58 frames tracked, ATE
    0.042 m over the tracked frames (SE(3)-aligned), 21 of them placed against the window; without the window
    localization 2 frames are tracked. Without the sensor depth in the window's bundle adjustment
    (bundle_adjustment=False) the ATE is 0.056 m, without the 3D agreement in the support of a pose 0.106 m.
    (The 3D-3D hypothesis and min_support_with_depth move the ATE by less than its spread;
    test_odometry_rgbd_pose.py checks them on known answers.)"""
    results, tracked, ate = _track(frames)
    assert sum("placed against the window" in r.message for r in results) >= 10
    assert tracked.mean() >= 0.9, tracked.sum()
    assert ate <= 0.05, ate


def test_without_relocalization_the_cabinet_is_lost(frames):
    _, tracked, _ = _track(frames, relocalization=False)
    assert tracked.sum() <= 10


def test_the_shipped_keypointnet_tracks_every_frame_within_5_cm(frames):
    """The issue's bar (>= 90 % of the frames tracked, ATE <= 5 cm) with the shipped KeypointNet (ONNX Runtime,
    CPU): 58 of 58 frames, ATE 0.026 m over 8.3 m (0.022 m without the window's bundle adjustment). With the
    tracker's PnP-only poses it tracked every frame too, at ATE 0.105 m."""
    from kp_vo.pipeline import ExtractorConfig, build_extractor

    _, tracked, ate = _track(frames, build_extractor(ExtractorConfig("keypointnet")))
    assert tracked.mean() >= 0.9, tracked.sum()
    assert ate <= 0.05, ate
