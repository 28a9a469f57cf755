"""Local mapping off the tracking path (odometry/mapping_worker.py) and the window cache of the local map."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from kp_vo.datasets import SyntheticSequence
from kp_vo.features import create_extractor
from kp_vo.features.base import Features
from kp_vo.odometry.local_map import LocalMap, new_keyframe
from kp_vo.odometry.mapping_worker import BlasLimit, MappingWorker
from kp_vo.odometry.tracker import OdometryConfig, VisualOdometry


def _poses(frames, **config):
    vo = VisualOdometry(OdometryConfig(depth_source="triangulation", **config),
                        create_extractor("orb", max_keypoints=1000))
    results = [vo.process(f) for f in frames]
    return vo, np.array([r.T_world_cam for r in results]), results


def test_asynchronous_mapping_gives_the_synchronous_poses_bit_for_bit():
    """Triangulation and bundle adjustment run in the worker while the next frame is extracted and are
    joined before its pose: the trajectory must not depend on it (nor on thread timing)."""
    frames = list(SyntheticSequence("street", num_frames=24, width=640, height=192, seed=2))
    vo, sync, _ = _poses(frames, async_mapping=False)
    assert not vo._mapping.asynchronous
    vo, asynchronous, results = _poses(frames, async_mapping=True)
    assert vo._mapping.asynchronous
    assert sum(r.is_keyframe for r in results) >= 3  # keyframes, so jobs really ran in the worker
    np.testing.assert_array_equal(asynchronous, sync)
    # The map a caller reads waits for the last job: the same window both ways.
    assert [kf.frame_index for kf in vo.keyframes] == [kf.frame_index for kf in _poses(frames)[0].keyframes]


def test_the_job_runs_in_another_thread_and_its_error_reaches_the_caller():
    worker = MappingWorker(asynchronous=True, blas=BlasLimit(0))
    seen = {}
    release = threading.Event()

    def job():
        seen["thread"] = threading.current_thread().name
        release.wait(5)

    worker.submit(job)
    assert worker.busy
    release.set()
    assert worker.wait() >= 0.0 and not worker.busy
    assert seen["thread"] != threading.current_thread().name

    def failing():
        raise RuntimeError("mapping failed")

    worker.submit(failing)
    with pytest.raises(RuntimeError, match="mapping failed"):
        worker.wait()
    assert worker.wait() == 0.0  # nothing pending any more


def test_synchronous_worker_runs_the_job_inline():
    worker = MappingWorker(asynchronous=False, blas=BlasLimit(0))
    ran = []
    worker.submit(lambda: ran.append(threading.current_thread().name))
    assert ran == [threading.current_thread().name] and not worker.busy


def _blas_threads():
    """Threads of numpy's own BLAS (the one bundle adjustment multiplies with)."""
    return [info["num_threads"] for info in threadpool_info()
            if info["user_api"] == "blas" and "numpy" in info["filepath"]]


def test_blas_limit_is_held_while_a_job_runs_and_given_back_by_the_wait():
    before = _blas_threads()
    if not before or max(before) == 1:
        pytest.skip("BLAS already runs on one thread here: nothing to observe")
    limit = BlasLimit(1)
    worker = MappingWorker(asynchronous=True, blas=limit)
    seen = []
    release = threading.Event()
    limit.acquire()                                   # the tracking call
    worker.submit(lambda: (release.wait(5), seen.append(_blas_threads())))
    limit.release()                                   # the tracking call returns while the job runs
    assert set(_blas_threads()) == {1}
    release.set()
    worker.wait()                                     # joined on the tracking thread: limit given back
    assert seen and set(seen[0]) == {1}
    assert _blas_threads() == before


def _features(n, rng):
    return Features(rng.uniform(0, 100, (n, 2)).astype(np.float32), np.ones(n, np.float32),
                    rng.integers(0, 256, (n, 32), dtype=np.uint8), "hamming")


def test_window_points_follow_every_change_of_the_map():
    rng = np.random.default_rng(0)
    local = LocalMap(window_size=3)
    kf = new_keyframe(0, 0, np.eye(4), _features(5, rng), None)
    ids = local.add_points(rng.normal(size=(3, 3)))
    local.add_keyframe(kf, np.r_[ids, -1, -1])
    first = local.window_points()
    assert local.window_points() is first                          # unchanged map: cached
    np.testing.assert_array_equal(first.ids, ids)
    local.set_points(ids[:1], np.array([[7.0, 8.0, 9.0]]))         # bundle adjustment moves a point
    np.testing.assert_array_equal(local.window_points().xyz[0], [7.0, 8.0, 9.0])
    new = local.add_points(rng.normal(size=(1, 3)))                 # triangulation adds one
    local.assign(kf, np.array([3]), new)
    assert new[0] in local.window_points().ids
    np.testing.assert_array_equal(local.window_points().descriptors[-1], kf.features.descriptors[3])
    kf.point_ids[0] = -1                                            # an outlier observation dropped
    local.sync_all()
    assert ids[0] not in local.window_points().ids


def test_unknown_point_ids_raise():
    local = LocalMap(window_size=2)
    ids = local.add_points(np.zeros((2, 3)))
    np.testing.assert_array_equal(local.points(ids[::-1]), np.zeros((2, 3)))
    with pytest.raises(KeyError):
        local.points(np.array([ids[-1] + 1]))


def test_the_prior_guided_pass_takes_the_most_recently_observed_points():
    from kp_vo.odometry.local_map import WindowPoints
    from kp_vo.odometry.tracker import _most_recent

    window = WindowPoints(np.arange(6), np.zeros((6, 3)), np.zeros((6, 32), np.uint8), uv=np.zeros((6, 2)),
                          keyframe_of=np.array([0, 2, 1, 2, 0, 1]))
    np.testing.assert_array_equal(_most_recent(window, 3), [1, 2, 3])   # keyframe 2, then the first of keyframe 1
    np.testing.assert_array_equal(_most_recent(window, 4), [1, 2, 3, 5])
    assert _most_recent(window, 6) is None                                # all fit: no subset


def _static_camera(num_frames):
    """The same RGB-D view over and over: every frame tracks all of the last keyframe's points."""
    from kp_vo.types import Frame

    view = next(iter(SyntheticSequence("room", num_frames=1, width=320, height=240, seed=1)))
    return [Frame(i, i * 100_000_000, view.image, view.camera, depth=view.depth) for i in range(num_frames)]


@pytest.mark.parametrize("max_interval", [3, 8])
def test_a_static_camera_makes_a_keyframe_exactly_every_max_interval_frames(max_interval):
    vo = VisualOdometry(OdometryConfig(keyframe_max_interval=max_interval), create_extractor("orb", max_keypoints=500))
    keyframes = [r.frame_index for r in (vo.process(f) for f in _static_camera(20)) if r.is_keyframe]
    assert keyframes == list(range(0, 20, max_interval))  # frame 0 starts the map


def test_keyframes_never_come_closer_than_min_interval():
    # A share above 1 asks for a keyframe on every frame; the minimum interval alone spaces them.
    vo = VisualOdometry(OdometryConfig(keyframe_inlier_ratio=1.5, keyframe_min_interval=3, keyframe_max_interval=50),
                        create_extractor("orb", max_keypoints=500))
    keyframes = [r.frame_index for r in (vo.process(f) for f in _static_camera(13)) if r.is_keyframe]
    assert keyframes == [0, 3, 6, 9, 12]


def test_inlier_matches_carry_where_their_points_were_seen_and_the_debug_image_draws_them():
    from kp_vo.bridge.debug_image import draw_debug_image

    vo = VisualOdometry(OdometryConfig(), create_extractor("orb", max_keypoints=500))
    static = [vo.process(f) for f in _static_camera(3)]
    # The same view again: every inlier's map point was seen at exactly the matched keypoint.
    last = static[-1]
    assert last.num_inliers > 50 and len(last.match_keyframe_uv) == len(last.matches)
    np.testing.assert_allclose(last.match_keyframe_uv, last.features.keypoints[last.matches[:, 0]])

    frames = list(SyntheticSequence("room", num_frames=6, width=320, height=240, seed=1))
    vo = VisualOdometry(OdometryConfig(keyframe_max_interval=50), create_extractor("orb", max_keypoints=500))
    result = [vo.process(f) for f in frames][-1]
    flow = np.linalg.norm(result.match_keyframe_uv - result.features.keypoints[result.matches[:, 0]], axis=1)
    assert np.median(flow) > 1.0  # the camera moved since the keyframe
    canvas = draw_debug_image(frames[-1].image, result)
    assert canvas.shape == frames[-1].image.shape[:2] + (3,) and canvas.dtype == np.uint8
    green = np.all(canvas == [0, 220, 0], axis=2).sum()
    assert green > result.num_inliers  # a line (and a ring) per inlier


@pytest.mark.parametrize("key, value, message", [
    ("pnp_iterations", 0, "pnp_iterations must be >= 1"),
    ("min_inliers", -1, "min_inliers must be >= 4"),
    ("max_depth_m", float("nan"), "max_depth_m must be > 0"),
    ("min_depth_m", 100.0, "min_depth_m must be in"),
    ("match_ratio", 1.5, "match_ratio must be in"),
    ("window_size", 1, "window_size must be >= 2"),
    ("ba_fixed_keyframes", 7, "ba_fixed_keyframes must be in"),
    ("keyframe_min_interval", 9, "keyframe_min_interval must be in"),
    ("guided_radius_px", -3.0, "guided_radius_px must be > 0"),
    ("guided_retry_radius_px", -1.0, "guided_retry_radius_px must be >= 0"),
])
def test_out_of_range_odometry_settings_are_one_line_config_errors(key, value, message):
    from kp_vo.config import ConfigError, merge

    with pytest.raises(ConfigError, match=f"odometry.{message}"):
        merge(OdometryConfig(), {key: value})


def test_points_no_window_keyframe_observes_any_more_are_forgotten():
    rng = np.random.default_rng(1)
    local = LocalMap(window_size=2)
    xyz = rng.normal(size=(4, 3))
    ids = local.add_points(xyz)
    kfs = [new_keyframe(i, i, np.eye(4), _features(3, rng), None) for i in range(3)]
    local.add_keyframe(kfs[0], np.array([ids[0], ids[1], -1]))     # ids[0] is seen by keyframe 0 alone
    local.add_keyframe(kfs[1], np.array([ids[1], ids[2], -1]))
    assert local.add_keyframe(kfs[2], np.array([ids[3], -1, ids[2]])) is kfs[0]   # keyframe 0 leaves
    assert local.num_points == 3
    with pytest.raises(KeyError):
        local.points(ids[:1])
    np.testing.assert_array_equal(local.points(ids[1:]), xyz[1:])   # the others keep their coordinates


class _MeanBrightnessDepth:
    """A fake depth network: every pixel at the image's mean grey level in metres; counts its calls."""

    name = "mean-brightness"

    def __init__(self) -> None:
        self.calls = 0

    def estimate(self, image: np.ndarray) -> np.ndarray:
        self.calls += 1
        return np.full(image.shape[:2], float(image.mean()), np.float32)


def test_network_depth_of_a_keyframe_is_that_frames_even_after_another_frames_run():
    """Mutant depth-network-cache-any-frame. With network_every_frame the depth computed for a frame is
    reused when that frame becomes a keyframe (one network run); a keyframe whose frame was not the last
    one run gets its own depth, never the cached depth of another frame (2 m vs 5 m images here)."""
    from kp_vo.odometry.depth import DepthSource
    from kp_vo.types import CameraIntrinsics, Frame

    camera = CameraIntrinsics(100.0, 100.0, 16.0, 12.0, 32, 24)
    two, five = (Frame(k, k * 10**8, np.full((24, 32), grey, np.uint8), camera) for k, grey in ((0, 2), (1, 5)))
    network = _MeanBrightnessDepth()
    source = DepthSource("network", network, network_scale=1.0, network_every_frame=True)
    source.on_frame(two)
    np.testing.assert_array_equal(source.keyframe_depth(two), 2.0)
    assert network.calls == 1                                # the cached run, not a second one
    np.testing.assert_array_equal(source.keyframe_depth(five), 5.0)
    assert network.calls == 2
