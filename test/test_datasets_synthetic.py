"""Synthetic scenes, renderer and SyntheticSequence: geometry against known answers, texture, determinism."""

import numpy as np
import pytest

from kp_vo.datasets import Sequence, SyntheticSequence, make_scene, room_trajectory, street_trajectory
from kp_vo.datasets import textures as tx
from kp_vo.datasets.render import raycast, render
from kp_vo.datasets.scene import SceneBuilder
from kp_vo.datasets.synthetic import camera_pose, synthetic_camera
from kp_vo.errors import InvalidInputError
from kp_vo.features import create_extractor
from kp_vo.types import CameraIntrinsics

SMALL = CameraIntrinsics(60.0, 60.0, 39.5, 29.5, 80, 60)


def _wall_scene(distance: float):
    """One 20 x 20 m textured wall in the plane x = distance (z up), facing -x."""
    b = SceneBuilder()
    tex = b.add_texture(tx.generic_texture(np.random.default_rng(0), shapes=20))
    b.add_quad([distance, 10.0, 10.0], [0, -20.0, 0], [0, 0, -20.0], tex, texel=0.05)
    return b.build("wall", 0, sky_top=(0, 0, 255), sky_bottom=(0, 0, 255))


def test_fronto_parallel_wall_depth():
    scene = _wall_scene(4.25)
    T = camera_pose([0.0, 0.0, 1.0], yaw=0.0)           # looking along +x
    rgb, depth = render(scene, T, SMALL)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    assert depth.shape == (60, 80) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, 4.25, rtol=1e-6)
    # Turned 180 deg the wall is behind the camera: only background, depth 0.
    rgb_back, depth_back = render(scene, camera_pose([0.0, 0.0, 1.0], yaw=np.pi), SMALL)
    assert (depth_back == 0).all()
    assert (rgb_back == [0, 0, 255]).all()


def test_wall_edge_and_tilted_plane_depth():
    scene = _wall_scene(3.0)
    yaw = np.deg2rad(30.0)
    T = camera_pose([0.0, 0.0, 1.0], yaw=yaw)
    _, depth = render(scene, T, SMALL)
    # Analytic depth of the plane x = 3 along each pixel ray, z = 3 / (x-component of the ray in the world).
    u, v = np.meshgrid(np.arange(80.0), np.arange(60.0))
    rays_cam = np.stack([(u - 39.5) / 60.0, (v - 29.5) / 60.0, np.ones_like(u)], -1)
    rays_world = rays_cam @ T[:3, :3].T
    expected = 3.0 / rays_world[..., 0]
    np.testing.assert_allclose(depth, expected, rtol=1e-6)


def test_point_reprojects_onto_same_surface_point_in_another_view():
    scene = make_scene("street", 0)
    cam = synthetic_camera("street", 320, 96)
    T_a = street_trajectory(40)[30]
    ids_a, depth_a = raycast(scene, T_a, cam)          # float64 depth
    _, depth_a32 = render(scene, T_a, cam)             # the float32 depth frames carry
    np.testing.assert_allclose(depth_a32, depth_a, rtol=1e-7)
    rng = np.random.default_rng(0)
    candidates = np.argwhere((depth_a > 2.0) & (depth_a < 30.0))
    checked = 0
    for v, u in candidates[rng.choice(len(candidates), 12, replace=False)]:
        ray = np.array([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, 1.0])
        X = T_a[:3, :3] @ (ray * depth_a[v, u]) + T_a[:3, 3]       # world point seen by pixel (u, v) of view A
        # View B: turned 20 deg, placed so that X lies on the ray of integer pixel (ub, vb) at depth lam.
        ub, vb, lam = 100, 40, 0.7 * float(depth_a[v, u])
        T_b = camera_pose([0, 0, 0], yaw=np.arctan2(T_a[1, 2], T_a[0, 2]) + np.deg2rad(20.0), pitch=0.05)
        ray_b = np.array([(ub - cam.cx) / cam.fx, (vb - cam.cy) / cam.fy, 1.0])
        T_b[:3, 3] = X - T_b[:3, :3] @ (ray_b * lam)
        ids_b, depth_b = raycast(scene, T_b, cam)
        if ids_b[vb, ub] != ids_a[v, u]:
            continue                                              # occluded from B: no claim
        X_b = T_b[:3, :3] @ (ray_b * depth_b[vb, ub]) + T_b[:3, 3]
        assert depth_b[vb, ub] == pytest.approx(lam, rel=1e-6)
        np.testing.assert_allclose(X_b, X, rtol=0, atol=1e-6 * np.linalg.norm(X - T_a[:3, 3]))
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("kind", ["street", "room"])
def test_frames_are_textured_and_valid(kind):
    seq = SyntheticSequence(kind, num_frames=12)
    assert isinstance(seq, Sequence) and seq.has_depth
    frame = seq[10]
    frame.validate()
    assert frame.image.shape == (seq.camera.height, seq.camera.width, 3)
    assert (frame.image.shape[1], frame.image.shape[0]) == ((640, 192) if kind == "street" else (640, 480))
    features = create_extractor("orb").extract(frame.image)
    assert len(features) > 500
    valid = frame.depth[frame.depth > 0]
    assert valid.size > 0.8 * frame.depth.size and valid.min() >= 0.5
    np.testing.assert_array_equal(frame.T_world_cam_gt, seq.ground_truth()[10])
    # Colour: the channels differ somewhere (not a grey image in 3 copies).
    assert np.abs(frame.image[..., 0].astype(int) - frame.image[..., 2]).mean() > 3


def test_street_camera_and_trajectory():
    seq = SyntheticSequence("street", num_frames=100, width=320, height=96)
    assert seq.camera.fx == seq.camera.fy == pytest.approx(0.58 * 320)
    assert (seq.camera.cx, seq.camera.cy) == (159.5, 47.5)
    np.testing.assert_array_equal(seq.stamps_ns()[:3], [0, 100_000_000, 200_000_000])
    gt = seq.ground_truth()
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    assert np.all((steps > 0.95) & (steps < 1.1))               # 1 m along the centreline, a bit more outside the turn
    assert np.all(np.abs(gt[:, 2, 3] - 1.65) < 0.02)             # camera height above the road (z up)
    forward = gt[:, :3, 2]                                      # optical axis in the world
    yaw = np.degrees(np.unwrap(np.arctan2(forward[:, 1], forward[:, 0])))
    assert 30.0 < yaw[-1] - yaw[0] < 60.0                       # the turn
    assert np.abs(yaw[:30] - yaw[0]).max() < 3.0                # straight before it
    R = gt[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-12)


def test_room_trajectory_motion_and_clearance():
    gt = room_trajectory(300, seed=3)
    steps = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1)
    assert 0.01 < steps.mean() < 0.03 and steps.max() < 0.035
    rel = gt[:-1, :3, :3].transpose(0, 2, 1) @ gt[1:, :3, :3]
    angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert 0.3 < angles.mean() < 1.0 and angles.max() < 1.5
    seq = SyntheticSequence("room", num_frames=300, width=160, height=120, seed=3, noise_std=0)
    for i in range(0, 300, 60):
        d = seq[i].depth
        assert d[d > 0].min() > 0.5


def test_blank_frames_and_noise():
    seq = SyntheticSequence("room", num_frames=5, width=160, height=120, blank_frames=(2,), noise_std=3.0)
    blank = seq[2]
    assert (blank.image == blank.image[0, 0, 0]).all() and (blank.depth == 0).all()
    assert blank.meta["blank"] and not seq[1].meta["blank"]
    assert len(create_extractor("orb").extract(blank.image)) == 0
    clean, _ = render(seq.scene, seq.ground_truth()[1], seq.camera)
    residual = seq[1].image.astype(float) - clean
    assert 2.5 < residual.std() < 3.5 and abs(residual.mean()) < 0.3


def test_determinism_by_seed():
    a = SyntheticSequence("room", num_frames=3, width=160, height=120, seed=0)
    b = SyntheticSequence("room", num_frames=3, width=160, height=120, seed=0)
    c = SyntheticSequence("room", num_frames=3, width=160, height=120, seed=1)
    np.testing.assert_array_equal(a[1].image, b[1].image)
    np.testing.assert_array_equal(a.ground_truth(), b.ground_truth())
    assert not np.array_equal(a.ground_truth(), c.ground_truth())
    assert not np.array_equal(a[1].image, c[1].image)
    for make in (tx.generic_texture, tx.facade_texture, tx.road_texture):
        np.testing.assert_array_equal(make(np.random.default_rng(5)), make(np.random.default_rng(5)))
        assert not np.array_equal(make(np.random.default_rng(5)), make(np.random.default_rng(6)))


def test_custom_trajectory_and_cache():
    poses = room_trajectory(40, seed=9)
    by_array = SyntheticSequence("room", width=96, height=72, trajectory=poses, noise_std=0)
    by_callable = SyntheticSequence("room", num_frames=40, width=96, height=72, noise_std=0,
                                    trajectory=lambda n: room_trajectory(n, seed=9))
    assert len(by_array) == len(by_callable) == 40
    np.testing.assert_array_equal(by_array.ground_truth(), poses)
    np.testing.assert_array_equal(by_array[7].image, by_callable[7].image)
    for frame in by_array:
        assert frame.index < 40
    assert len(by_array._cache) <= 32
    # Returned arrays are copies: editing one does not change the cache.
    f = by_array[39]
    f.image[:] = 0
    assert by_array[39].image.any()
    with pytest.raises(InvalidInputError):
        SyntheticSequence("room", trajectory=np.eye(4))
    sheared = poses.copy()
    sheared[3, :3, :3] *= 2.0
    with pytest.raises(InvalidInputError, match="rigid"):
        SyntheticSequence("room", trajectory=sheared)
    with pytest.raises(InvalidInputError):
        SyntheticSequence("garden")
    with pytest.raises(InvalidInputError, match="leaves the road"):
        SyntheticSequence("street", num_frames=500)


def test_photo_textures_when_available():
    from pathlib import Path
    photos = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"
    if not photos.is_dir():
        pytest.skip(f"photos not found at {photos}")
    scene = make_scene("room", 0, texture_dir=str(photos))
    plain = make_scene("room", 0)
    assert len(scene.textures) > len(plain.textures)
    with pytest.raises(InvalidInputError):
        make_scene("room", 0, texture_dir=str(photos / "nope"))


def test_random_rooms_differ_by_seed_and_repeat_for_one():
    from kp_vo.datasets.random_room import SIZE_RANGE, room_size
    a, again, b = make_scene("random_room", 5), make_scene("random_room", 5), make_scene("random_room", 6)
    np.testing.assert_array_equal(a.origins, again.origins)
    assert a.extent.tolist() != b.extent.tolist()
    assert len(a) != len(b) or not np.allclose(a.origins, b.origins)
    np.testing.assert_allclose(make_scene("room", 0).extent, [6.0, 5.0, 3.0])   # the fixed room is unchanged
    for seed in range(6):
        size = room_size(seed)
        assert all(lo <= v <= hi for v, (lo, hi) in zip(size, SIZE_RANGE))
        scene = make_scene("random_room", seed)
        corners = np.concatenate([scene.origins, scene.origins + scene.axes_u * scene.sizes[:, :1],
                                  scene.origins + scene.axes_v * scene.sizes[:, 1:],
                                  scene.origins + scene.axes_u * scene.sizes[:, :1] + scene.axes_v * scene.sizes[:, 1:]])
        assert np.all(corners >= -1e-9) and np.all(corners <= np.asarray(size) + 1e-9)   # everything inside the room


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_random_room_camera_stays_clear_and_sees_a_closed_room(seed):
    seq = SyntheticSequence("random_room", num_frames=200, width=80, height=60, seed=seed, noise_std=0)
    lx, ly, lz = seq.scene.extent
    positions = seq.ground_truth()[:, :3, 3]
    assert np.all((positions[:, 0] > 2.0) & (positions[:, 0] < lx - 2.0) & (positions[:, 1] > 2.0)
                  & (positions[:, 1] < ly - 2.0) & (positions[:, 2] < lz - 0.8))
    for i in range(0, 200, 40):
        d = seq[i].depth
        assert np.all(d > 0.5)                                   # closed room: every pixel hits a surface
        assert d.max() < np.linalg.norm([lx, ly, lz])
