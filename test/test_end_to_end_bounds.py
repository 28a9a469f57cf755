"""End-to-end bounds of the tracker on the synthetic runs, at today's figures plus a stated margin, so
that a 20 % regression of ATE fails (test_odometry.py holds the looser acceptance bars: 1 % / 2 % of
the path, which a run 3x worse than today still passes).

Figures measured at commit 6b8e2da, ORB 1000 keypoints, RANSAC seeds (odometry.seed) 0-4:

    run                              ATE (alignment)        seeds 0..4                        tracked
    room RGB-D, 320x240, 40 frames   4.581 mm (none)        identical to 1e-15 m              40/40
    street mono, 640x192, 40 frames  0.222 m (Sim(3))       0.222 0.223 0.229 0.241 0.234     38/40 (2 initialising)
    street network depth (8 % bias)  0.1116 m (none)        0.1116 x4, 0.1128                 40/40
    (path lengths: room 0.61 m, street 39.0 m)

Bounds (each run once, seed 0, ~1 s / ~3 s / ~3 s):
- room RGB-D ATE <= 5.3 mm: +16 % over today's (deterministic: 3D-3D depth, no RANSAC effect); a 20 %
  regression (5.5 mm) fails. The 16 % is the allowance for the ongoing tracker speed work.
- street mono ATE <= 0.26 m: above the worst seed (0.241 m), +17 % over seed 0, below +20 % of the
  5-seed mean (0.270 m); the seed spread (std 0.008 m) puts the bound 3.7 std above the mean.
- street network ATE <= 0.13 m: +16.5 % over today's, above every seed, a 20 % regression (0.134 m) fails.
- tracked share: RGB-D and network runs track every frame; the monocular run no LOST frame and at
  least 37 of 40 tracking (today 38: the first two frames initialise the map).
Real RGB-D (TUM freiburg3 cabinet, config/tum_rgbd.yaml) is not bounded here: the ORB tracker is LOST
on 53 of its 58 wide-baseline frames today (ATE ~1 m), a figure to improve, not to freeze.
"""

import numpy as np
import pytest

from kp_vo.datasets import SyntheticSequence
from kp_vo.eval.trajectory import ate_rmse, path_length
from kp_vo.features import create_extractor
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry
from kp_vo.pipeline import run_frames


class _BiasedDepthNet:
    """Stand-in monocular depth network: the render's depth with a smooth 8 % error that changes per
    frame (what a DepthNet gets wrong), looked up by the frame's image (as in test_odometry.py)."""

    name = "biased"

    def __init__(self, frames):
        self.by_image = {f.image.tobytes(): (i, f.depth) for i, f in enumerate(frames)}

    def estimate(self, image):
        i, depth = self.by_image[image.tobytes()]
        u = np.linspace(0.0, 1.0, depth.shape[1])[None, :]
        return (depth * (1.0 + 0.08 * np.sin(2 * np.pi * (u + 0.1 * i)))).astype(np.float32)


@pytest.fixture(scope="module")
def street():
    return list(SyntheticSequence("street", num_frames=40, width=640, height=192, seed=2))


def _run(frames, estimator=None, **config):
    vo = VisualOdometry(OdometryConfig(**config), create_extractor("orb", max_keypoints=1000),
                        depth_estimator=estimator)
    result = run_frames(frames, vo, progress=False)
    gt = result.T_world_cam_gt
    return result, np.linalg.inv(gt[0]) @ gt


def test_rgbd_room_bounds():
    result, gt = _run(SyntheticSequence("room", num_frames=40, width=320, height=240, seed=1))
    assert not result.monocular and result.states == ["tracking"] * 40
    assert path_length(gt) == pytest.approx(0.610, abs=0.001)
    ate = ate_rmse(result.T_world_cam, gt, align="none")["rmse"]
    assert ate <= 0.0053, ate


def test_monocular_street_bounds(street):
    result, gt = _run(street, depth_source="triangulation")
    assert result.monocular and "lost" not in result.states
    assert result.states.count("tracking") >= 37, result.states
    assert path_length(gt) == pytest.approx(39.0, abs=0.01)
    ate = ate_rmse(result.T_world_cam, gt, align="sim3")["rmse"]
    assert ate <= 0.26, ate


def test_network_depth_street_bounds(street):
    result, gt = _run(street, _BiasedDepthNet(street), depth_source="network")
    assert not result.monocular and result.states == ["tracking"] * 40
    ate = ate_rmse(result.T_world_cam, gt, align="none")["rmse"]   # the network's metric scale: no alignment
    assert ate <= 0.13, ate
