"""RGB-D pose hypotheses: support counts matches that agree in 2D (reprojection) and in 3D (the frame's
depth); the 3D-3D RANSAC takes per-point tolerances and noise weights."""

import numpy as np

from kp_vo.geometry.procrustes import ransac_procrustes, weighted_procrustes
from kp_vo.geometry.se3 import invert, make_pose, transform
from kp_vo.odometry.tracker import _joint_support
from scipy.spatial.transform import Rotation

K = np.array([[500.0, 0.0, 320.0], [0.0, 500.0, 240.0], [0.0, 0.0, 1.0]])


def _project(points_cam):
    return points_cam[:, :2] / points_cam[:, 2:] * [K[0, 0], K[1, 1]] + K[:2, 2]


def test_support_counts_matches_agreeing_in_2d_and_3d():
    rng = np.random.default_rng(0)
    T_world_cam = make_pose(Rotation.from_euler("xyz", [3, -5, 2], degrees=True).as_matrix(), [0.2, -0.1, 0.3])
    points_cam = np.column_stack([rng.uniform(-1, 1, 10), rng.uniform(-1, 1, 10), rng.uniform(1.5, 3, 10)])
    P = transform(T_world_cam, points_cam)
    q = _project(points_cam)
    tolerance = np.full(10, 0.05)
    assert _joint_support(T_world_cam, P, q, K, 2.0, points_cam.copy(), tolerance) == 10
    seen = points_cam.copy()
    seen[0] *= 1.2                 # depth 20 % off along the ray: reprojects exactly, disagrees in 3D
    seen[1] *= 1.01                # 1-3 cm off: within the tolerance
    seen[2] = np.nan               # no depth: judged by its reprojection alone
    pixels = q.copy()
    pixels[3] += [5.0, 0.0]        # 5 px off: fails the reprojection test
    assert _joint_support(T_world_cam, P, pixels, K, 2.0, seen, tolerance) == 8
    # The same matches under a pose 5 cm off: the near points no longer reproject within 2 px.
    moved = T_world_cam @ make_pose(np.eye(3), [0.05, 0.0, 0.0])
    assert _joint_support(moved, P, q, K, 2.0, points_cam, tolerance) < 5


def test_ransac_procrustes_uses_each_points_own_tolerance():
    rng = np.random.default_rng(1)
    src = rng.uniform(-2, 2, (40, 3))
    T = make_pose(Rotation.from_rotvec([0.1, -0.2, 0.05]).as_matrix(), [0.5, 0.1, -0.3])
    dst = transform(T, src)
    dst[:4] += [0.03, 0.0, 0.0]            # 3 cm off
    tolerance = np.full(40, 0.01)
    tolerance[:2] = 0.05                   # ... which the first two points' tolerance allows
    ok, T_est, inliers = ransac_procrustes(src, dst, tolerance, 200, rng=np.random.default_rng(0))
    assert ok
    np.testing.assert_array_equal(inliers, np.r_[True, True, False, False, np.ones(36, bool)])
    assert np.abs(T_est - T).max() < 5e-3


def test_ransac_procrustes_refits_with_the_weights():
    rng = np.random.default_rng(2)
    src = rng.uniform(-2, 2, (30, 3))
    T = make_pose(Rotation.from_rotvec([0.0, 0.3, 0.0]).as_matrix(), [0.0, 0.2, 1.0])
    dst = transform(T, src) + rng.normal(0, 0.005, (30, 3))
    weights = rng.uniform(0.5, 4.0, 30)
    ok, T_est, inliers = ransac_procrustes(src, dst, 0.05, 200, rng=np.random.default_rng(0), weights=weights)
    assert ok and inliers.all()
    expected, _ = weighted_procrustes(src, dst, weights)
    np.testing.assert_allclose(T_est, expected, atol=1e-12)
    unweighted, _ = weighted_procrustes(src, dst)
    assert np.abs(T_est - unweighted).max() > 1e-6   # the weights changed the answer
    assert np.abs(invert(T_est) @ T - np.eye(4)).max() < 0.02


def test_keypoints_on_a_depth_step_get_no_3d_point():
    """A box 1 m in front of a wall 3 m away: keypoints within the edge window of its border are not lifted
    (their depth may belong to either side); those on the faces are, and with the test off all are."""
    from kp_vo.features import create_extractor
    from kp_vo.features.base import Features
    from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry
    from kp_vo.types import CameraIntrinsics, Frame

    depth = np.full((120, 160), 3.0, np.float32)
    depth[40:80, 60:100] = 1.0
    camera = CameraIntrinsics(100.0, 100.0, 80.0, 60.0, 160, 120)
    frame = Frame(0, 1, np.zeros((120, 160), np.uint8), camera, depth=depth)
    uv = np.array([[80.0, 60.0], [20.0, 20.0], [60.0, 60.0], [58.0, 60.0], [61.0, 50.0], [56.0, 60.0]], np.float32)
    features = Features(uv, np.ones(6, np.float32), np.zeros((6, 32), np.uint8), "hamming")
    lifted = {}
    for ratio in (0.1, 0.0):
        vo = VisualOdometry(OdometryConfig(depth_source="sensor", depth_edge_ratio=ratio), create_extractor("orb"))
        points, valid = vo._lift(features, depth, frame)
        lifted[ratio] = valid
        np.testing.assert_allclose(points[valid, 2], depth[uv[valid, 1].astype(int), uv[valid, 0].astype(int)])
    np.testing.assert_array_equal(lifted[0.1], [True, True, False, False, False, True])
    assert lifted[0.0].all()


def test_with_depth_the_pose_most_matches_agree_with_in_2d_and_3d_wins():
    """35 matches right in 2D and 3D; 45 that a wrong pose (20 cm sideways) explains in 2D but whose frame
    depths disagree with it. RANSAC-PnP takes the 45; their 3D disagreement leaves that pose no support,
    and the 3D-3D hypothesis (from the frame's depth) recovers the true pose with the 35."""
    from kp_vo.features import create_extractor
    from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry

    rng = np.random.default_rng(4)
    T_true = make_pose(np.eye(3), [0.0, 0.0, 0.0])
    T_wrong = make_pose(np.eye(3), [0.2, 0.0, 0.0])
    # Frame pixels on a grid (distinct depth pixels), depths 1.5-3 m.
    grid = np.stack(np.meshgrid(np.arange(40, 600, 14.0), np.arange(40, 440, 14.0)), -1).reshape(-1, 2)
    q = grid[rng.choice(len(grid), 80, replace=False)]
    z = rng.uniform(1.5, 3.0, 80)
    rays = np.column_stack([(q - K[:2, 2]) / [K[0, 0], K[1, 1]], np.ones(80)])
    points_cam = rays * z[:, None]
    P = transform(T_true, points_cam)
    # The 45 outliers: world points placed so that T_wrong projects them onto their pixels.
    P[35:] = transform(T_wrong, rays[35:] * rng.uniform(1.5, 3.0, 45)[:, None])
    depth = np.zeros((480, 640), np.float32)
    depth[q[:, 1].astype(int), q[:, 0].astype(int)] = z
    vo = VisualOdometry(OdometryConfig(depth_source="sensor"), create_extractor("orb"))
    hypotheses = list(vo._hypotheses(P, q, K, T_wrong, depth))
    assert len(hypotheses) == 2
    (T_pnp, support_pnp), (T_3d, support_3d) = hypotheses
    assert np.abs(T_pnp[:3, 3] - T_wrong[:3, 3]).max() < 0.02 and support_pnp < 5
    assert np.abs(T_3d - T_true).max() < 0.01 and support_3d >= 33


def test_a_depth_frame_needs_min_support_with_depth_agreeing_matches():
    """On the textured room every frame's own pose has hundreds of agreeing matches; asking for more than
    any frame has sends every frame to the localization against the window's keyframes instead."""
    from kp_vo.datasets import SyntheticSequence
    from kp_vo.features import create_extractor
    from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry

    frames = list(SyntheticSequence("room", num_frames=6, width=320, height=240, seed=1))
    placed = {}
    for need in (30, 100000):
        vo = VisualOdometry(OdometryConfig(depth_source="sensor", min_support_with_depth=need),
                            create_extractor("orb", max_keypoints=1000))
        results = [vo.process(f) for f in frames]
        assert all(r.state.value == "tracking" for r in results)
        placed[need] = sum("placed against the window" in r.message for r in results)
    assert placed == {30: 0, 100000: 5}


def _window_adjustments(monkeypatch, frames, **config):
    """Track ``frames`` and return the (args, kwargs) of every window bundle adjustment the tracker ran."""
    import kp_vo.odometry.tracker as tracker
    from kp_vo.features import create_extractor

    calls = []
    original = tracker.bundle_adjust

    def recording(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(tracker, "bundle_adjust", recording)
    vo = tracker.VisualOdometry(tracker.OdometryConfig(async_mapping=False, **config),
                                create_extractor("orb", max_keypoints=1000))
    for frame in frames:
        vo.process(frame)
    vo.flush()
    return calls


def test_window_bundle_adjustment_weighs_each_observations_sensor_depth(monkeypatch):
    """With sensor depth the window's bundle adjustment gets, per observation, the depth its keyframe measured
    at that keypoint (NaN in a depth hole) and sigma = depth_tolerance_m / 3 + 1.425e-3 z^2; the rendered
    depth is exact, so a measured depth is the observed point's depth in that keyframe, up to the tracking
    error and the depth pixel a sub-pixel keypoint reads."""
    from kp_vo.datasets import SyntheticSequence

    frames = list(SyntheticSequence("room", num_frames=24, width=320, height=240, seed=1))
    for frame in frames:
        frame.depth = frame.depth.copy()
        frame.depth[40:120, 200:280] = 0.0                # a hole: the sensor saw nothing there
    calls = _window_adjustments(monkeypatch, frames, depth_source="sensor", keyframe_max_interval=3)
    assert calls
    (T_cw, points, obs_cam, obs_point, obs_uv, *_), kwargs = calls[-1]
    z, sigma = kwargs["obs_depth"], kwargs["obs_depth_sigma"]
    assert z.shape == sigma.shape == obs_cam.shape
    has = np.isfinite(z)
    assert 0.5 < has.mean() < 1.0                         # most observations measured, some fell in the hole
    in_hole = (obs_uv[:, 0] >= 199.5) & (obs_uv[:, 0] < 279.5) & (obs_uv[:, 1] >= 39.5) & (obs_uv[:, 1] < 119.5)
    assert not has[in_hole & (np.abs(obs_uv[:, 0] - 240) < 35) & (np.abs(obs_uv[:, 1] - 80) < 35)].any()
    point_depth = np.array([transform(T_cw[c], points[p][None])[0, 2] for c, p in zip(obs_cam, obs_point)])
    error = np.abs(z[has] - point_depth[has])
    assert np.median(error) < 0.002 and np.percentile(error, 95) < 0.02
    np.testing.assert_allclose(sigma[has], 0.02 / 3 + 1.425e-3 * z[has] ** 2)


def test_window_bundle_adjustment_without_sensor_depth_has_no_depth_terms(monkeypatch):
    """Network depth is only a prior on the scale: its keyframes' bundle adjustment uses reprojections alone."""
    from kp_vo.datasets import SyntheticSequence

    frames = list(SyntheticSequence("room", num_frames=16, width=320, height=240, seed=1))

    class RenderedDepth:
        name = "rendered"

        def __init__(self):
            self.by_image = {f.image.tobytes(): f.depth for f in frames}

        def estimate(self, image):
            return self.by_image[image.tobytes()]

    import kp_vo.odometry.tracker as tracker
    from kp_vo.features import create_extractor

    calls = []
    original = tracker.bundle_adjust
    monkeypatch.setattr(tracker, "bundle_adjust", lambda *a, **k: calls.append(k) or original(*a, **k))
    vo = tracker.VisualOdometry(tracker.OdometryConfig(async_mapping=False, depth_source="network",
                                                       keyframe_max_interval=3),
                                create_extractor("orb", max_keypoints=1000), depth_estimator=RenderedDepth())
    for frame in frames:
        vo.process(frame)
    vo.flush()
    assert calls and all(k["obs_depth"] is None and k["obs_depth_sigma"] is None for k in calls)
