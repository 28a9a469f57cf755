"""RGB-D odometry on the real TUM fr3 cabinet frames (0.67 s apart, little texture): a frame the motion prior
cannot place is localized against the window's keyframes through the relocalizer (3D-3D with its depth)."""

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


def _track(frames, **config):
    vo = VisualOdometry(OdometryConfig(depth_source="sensor", max_depth_m=8.0, **config),
                        create_extractor("orb", max_keypoints=2000))
    results = [vo.process(f) for f in frames]
    tracked = np.array([r.state.value == "tracking" for r in results])
    gt = np.array([f.T_world_cam_gt for f in frames])
    est = np.array([r.T_world_cam for r in results])
    ate = ate_rmse(est[tracked], gt[tracked], align="se3")["rmse"]
    return results, tracked, ate


def test_frames_the_prior_cannot_place_are_localized_against_the_window(frames):
    """Today: 45 of 58 frames tracked (frame 7 is lost, and the last 12 after a failure at frame 46 stay lost),
    ATE 0.12 m (SE(3)-aligned) over the tracked frames; without it 4 frames are tracked. The bounds leave
    room for small changes, not for losing the mechanism."""
    results, tracked, ate = _track(frames)
    assert sum("placed against the window" in r.message for r in results) >= 3
    assert tracked.sum() >= 40, tracked.sum()
    assert ate < 0.5, ate
    first = tracked[:45]
    assert first.sum() >= 42


def test_without_relocalization_the_cabinet_is_lost(frames):
    _, tracked, _ = _track(frames, relocalization=False)
    assert tracked.sum() <= 10
