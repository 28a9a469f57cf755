"""Depth edges at keypoints and the Kinect depth noise model (``kp_vo.geometry.depth_edges``)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from kp_vo.errors import InvalidInputError
from kp_vo.geometry.depth_edges import (
    KINECT_V1_SIGMA_COEFF, depth_edge_mask, kinect_depth_sigma, sample_depth_sigma,
)

H, W = 240, 320
F, CX, CY = 525.0, 160.0, 120.0
TUM_CABINET = SHARED_DATA / "tum" / "rgbd_dataset_freiburg3_cabinet"


def box_on_wall(wall: float = 3.0, box: float = 1.5) -> np.ndarray:
    """(H, W) float32 depth: a fronto-parallel wall with a box over rows 80..159, columns 100..219."""
    D = np.full((H, W), wall, np.float32)
    D[80:160, 100:220] = box
    return D


def plane_depth(tilt_deg: float, distance: float = 2.0) -> np.ndarray:
    """(H, W) depth of a plane at ``distance`` m along the optical axis, tilted about the y axis; 0 where
    the plane is not in front of the camera."""
    a = np.radians(tilt_deg)
    u, v = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    n_dot_ray = np.sin(a) * (u - CX) / F + np.cos(a)
    with np.errstate(divide="ignore"):
        z = distance * np.cos(a) / n_dot_ray
    return np.where(n_dot_ray > 1e-3, z, 0.0).astype(np.float32)


def grid(u0: int, u1: int, v0: int, v1: int, step: int = 4) -> np.ndarray:
    u, v = np.meshgrid(np.arange(u0, u1, step), np.arange(v0, v1, step))
    return np.c_[u.ravel(), v.ravel()].astype(np.float64)


def reference_mask(D, uv, window, rel_threshold, holes_are_edges):
    """The definition, one keypoint at a time."""
    out = []
    r = window // 2
    for u, v in uv:
        if not (np.isfinite(u) and np.isfinite(v)):
            out.append(True)
            continue
        ui, vi = int(np.rint(u)), int(np.rint(v))
        if not (0 <= ui < D.shape[1] and 0 <= vi < D.shape[0]):
            out.append(True)
            continue
        rows = np.clip(np.arange(vi - r, vi + r + 1), 0, D.shape[0] - 1)
        cols = np.clip(np.arange(ui - r, ui + r + 1), 0, D.shape[1] - 1)
        patch = D[np.ix_(rows, cols)].astype(np.float64)
        ok = np.isfinite(patch) & (patch > 0)
        c = D[vi, ui]
        if not (np.isfinite(c) and c > 0):
            out.append(True)
            continue
        edge = (patch[ok].max() - patch[ok].min()) / c > rel_threshold
        out.append(bool(edge or (holes_are_edges and not ok.all())))
    return np.array(out, dtype=bool)


# -- synthetic depth ----------------------------------------------------------------------------------------------

def test_box_boundary_is_flagged_and_flat_faces_are_not():
    D = box_on_wall()
    rows = np.arange(90, 150, 5)
    # The step lies between columns 99 (wall) and 100 (box): a 5x5 window reaches it from 98..101.
    for du, flagged in [(-4, False), (-3, False), (-2, True), (-1, True), (0, True), (1, True), (2, False),
                        (3, False)]:
        uv = np.c_[np.full(len(rows), 100 + du), rows].astype(float)
        assert (depth_edge_mask(D, uv) == flagged).all(), du
    # A 3x3 window only reaches 1 px.
    uv = np.c_[np.full(len(rows), 98.0), rows]
    assert not depth_edge_mask(D, uv, window=3).any()
    assert depth_edge_mask(D, uv, window=5).all()
    # Faces and corners.
    assert not depth_edge_mask(D, grid(110, 210, 90, 150)).any()
    assert not depth_edge_mask(D, grid(5, 90, 5, 70)).any()
    assert depth_edge_mask(D, np.array([[100.0, 80.0], [219.0, 159.0], [220.4, 161.0]])).all()


def test_the_test_is_relative_to_depth():
    """The same geometry scaled 10x gives the same flags; a 3 % step (below 5 %) is no edge at any range."""
    uv = np.r_[grid(90, 110, 70, 170, 1), grid(5, 315, 5, 235, 7)]
    near = depth_edge_mask(box_on_wall(3.0, 1.5), uv)
    np.testing.assert_array_equal(depth_edge_mask(box_on_wall(30.0, 15.0), uv), near)
    assert near.any()
    for wall in (0.8, 3.0, 8.0):
        assert not depth_edge_mask(box_on_wall(wall, 0.97 * wall), uv).any()
        assert not depth_edge_mask(box_on_wall(wall, 0.97 * wall), uv, rel_threshold=0.035).any()
        assert depth_edge_mask(box_on_wall(wall, 0.97 * wall), uv, rel_threshold=0.02).any()


@pytest.mark.parametrize("tilt_deg", [0.0, 30.0, 60.0, 70.0])
def test_slanted_planes_with_kinect_noise_are_not_edges(tilt_deg):
    rng = np.random.default_rng(int(tilt_deg))
    D = plane_depth(tilt_deg).astype(np.float64)
    assert (D > 0).all()
    D += rng.normal(size=D.shape) * kinect_depth_sigma(D)
    uv = grid(CX - 50, CX + 50, 20, 220, 3)
    assert not depth_edge_mask(D.astype(np.float32), uv).any()


def test_a_grazing_plane_is_an_edge():
    """At 87 deg the depth changes by ~15 % over the 4 px of a 5x5 window."""
    uv = grid(CX - 10, CX + 10, 20, 220, 3)
    assert depth_edge_mask(plane_depth(87.0), uv).all()


@pytest.mark.parametrize("invalid", [0.0, np.nan, -1.0, np.inf])
def test_holes_are_edges_unless_told_otherwise(invalid):
    D = box_on_wall()
    D[20:30, 20:30] = invalid                             # a hole in the wall
    near = np.array([[18.0, 25.0], [31.0, 25.0], [25.0, 31.0], [31.0, 31.0]])   # within 2 px of the hole
    far = np.array([[17.0, 25.0], [33.0, 25.0], [25.0, 33.0]])
    inside = np.array([[25.0, 25.0], [20.0, 20.0]])
    assert depth_edge_mask(D, near).all()
    assert not depth_edge_mask(D, near, holes_are_edges=False).any()
    assert not depth_edge_mask(D, far).any()
    # No depth at the keypoint: always flagged.
    assert depth_edge_mask(D, inside).all()
    assert depth_edge_mask(D, inside, holes_are_edges=False).all()


def test_a_single_invalid_pixel_at_the_centre_is_flagged():
    D = box_on_wall()
    D[50, 50] = np.nan
    D[60, 60] = 0.0
    uv = np.array([[50.0, 50.0], [60.2, 59.7], [52.0, 50.0], [61.0, 62.0]])
    assert depth_edge_mask(D, uv, holes_are_edges=False).tolist() == [True, True, False, False]
    assert depth_edge_mask(D, uv).tolist() == [True, True, True, True]


def test_image_border_keypoints_outside_and_non_finite():
    D = box_on_wall()
    corners = np.array([[0.0, 0.0], [W - 1.0, 0.0], [0.0, H - 1.0], [W - 1.0, H - 1.0], [0.4, 119.6]])
    assert not depth_edge_mask(D, corners).any()          # the border repeats its pixels, no hole
    bad = np.array([[-1.0, 5.0], [5.0, H - 0.4], [np.nan, 5.0], [5.0, np.inf]])
    assert depth_edge_mask(D, bad).all()
    empty = depth_edge_mask(D, np.zeros((0, 2)))
    assert empty.shape == (0,) and empty.dtype == bool


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.integers(0, 2**32 - 1), st.sampled_from([3, 5, 7]), st.floats(0.01, 0.3), st.booleans())
def test_matches_the_per_keypoint_definition(seed, window, rel_threshold, holes):
    """Random piecewise depth with holes, keypoints anywhere (also sub-pixel, near and past the border)."""
    rng = np.random.default_rng(seed)
    D = rng.choice([1.0, 1.02, 1.1, 2.5], size=(12, 8)).repeat(5, 0).repeat(5, 1).astype(np.float32)
    D *= rng.uniform(0.5, 5.0)
    D[rng.random(D.shape) < 0.02] = rng.choice([0.0, np.nan])
    uv = rng.uniform(-3, [D.shape[1] + 2, D.shape[0] + 2], (200, 2))
    got = depth_edge_mask(D, uv, window=window, rel_threshold=rel_threshold, holes_are_edges=holes)
    assert got.dtype == bool and got.shape == (200,)
    np.testing.assert_array_equal(got, reference_mask(D, uv, window, rel_threshold, holes))


def test_bad_arguments():
    D = box_on_wall()
    uv = np.zeros((3, 2))
    for window in (4, 1, 2.5, True):
        with pytest.raises(InvalidInputError):
            depth_edge_mask(D, uv, window=window)
    for th in (0.0, -0.1, np.nan):
        with pytest.raises(InvalidInputError):
            depth_edge_mask(D, uv, rel_threshold=th)
    with pytest.raises(InvalidInputError):
        depth_edge_mask(D[None], uv)
    with pytest.raises(InvalidInputError):
        depth_edge_mask(D, np.zeros((3, 3)))
    with pytest.raises(InvalidInputError):
        kinect_depth_sigma(D, coeff=0.0)


# -- noise model --------------------------------------------------------------------------------------------------

def test_kinect_sigma_grows_with_the_square_of_depth():
    assert KINECT_V1_SIGMA_COEFF == 1.425e-3
    z = np.array([0.5, 1.0, 2.0, 5.0])
    np.testing.assert_allclose(kinect_depth_sigma(z), 1.425e-3 * z**2)
    assert kinect_depth_sigma(5.0) == pytest.approx(0.0356, abs=1e-4)     # ~4 cm at the far end of the range
    np.testing.assert_allclose(kinect_depth_sigma(2 * z) / kinect_depth_sigma(z), 4.0)
    np.testing.assert_allclose(kinect_depth_sigma(z, coeff=2e-3), 2e-3 * z**2)
    assert np.isinf(kinect_depth_sigma(np.array([0.0, -1.0, np.nan, np.inf]))).all()
    assert kinect_depth_sigma(np.ones((2, 3))).shape == (2, 3)


def test_sample_depth_sigma_at_keypoints():
    D = box_on_wall()
    D[10, 10] = 0.0
    uv = np.array([[150.0, 100.0], [5.0, 5.0], [10.0, 10.0], [-5.0, 3.0], [np.nan, 1.0]])
    sigma = sample_depth_sigma(D, uv)
    np.testing.assert_allclose(sigma[:2], [1.425e-3 * 1.5**2, 1.425e-3 * 3.0**2])
    assert np.isinf(sigma[2:]).all()
    weights = 1.0 / sigma**2
    assert weights[0] > weights[1] > 0 and (weights[2:] == 0).all()


# -- real Kinect frames -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tum_frames():
    if not (TUM_CABINET / "rgb.txt").is_file():
        pytest.skip(f"real TUM data not found at {TUM_CABINET} (../shared/data beside the repository)")
    from kp_vo.datasets import TumRgbd
    from kp_vo.features import create_extractor
    dataset = TumRgbd(TUM_CABINET)
    extractor = create_extractor("orb", max_keypoints=2000)
    frames = [dataset[i] for i in (0, 20, 40, 57)]
    return [(f.depth, extractor.extract(f.image).keypoints) for f in frames]


def shifted_disagreement(D: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest relative depth change (N,) between a keypoint's pixel and its 8 neighbours, and (N,) bool
    where the centre and all neighbours hold valid depth."""
    ui = np.clip(np.rint(uv[:, 0]).astype(int), 1, D.shape[1] - 2)
    vi = np.clip(np.rint(uv[:, 1]).astype(int), 1, D.shape[0] - 2)
    c = D[vi, ui].astype(np.float64)
    nb = np.stack([D[vi + dv, ui + du] for du in (-1, 0, 1) for dv in (-1, 0, 1) if du or dv], 1)
    valid = (c > 0) & (nb > 0).all(1)
    return np.abs(nb - c[:, None]).max(1) / np.where(c > 0, c, 1.0), valid


def test_tum_cabinet_flags_a_plausible_share_on_real_steps(tum_frames):
    """ORB keypoints on the cabinet cluster on its silhouette and on Kinect shadow holes: about a third are
    flagged over the 58 frames (32 %, per frame 7-68 %). Flagged keypoints with full depth around them
    disagree with a one-pixel shifted sample many times more than the others."""
    flagged, dis_flagged, dis_kept = [], [], []
    for D, uv in tum_frames:
        mask = depth_edge_mask(D, uv)
        share = mask.mean()
        print(f"flagged {mask.sum()} of {len(uv)} keypoints ({share:.1%})")
        assert 0.02 < share < 0.75
        flagged.append(mask)
        dis, valid = shifted_disagreement(D, uv)
        dis_flagged.append(dis[valid & mask])
        dis_kept.append(dis[valid & ~mask])
    share = np.concatenate(flagged).mean()
    print(f"flagged over the frames: {share:.1%}")
    assert 0.1 < share < 0.6
    dis_flagged, dis_kept = np.concatenate(dis_flagged), np.concatenate(dis_kept)
    assert len(dis_flagged) >= 50 and len(dis_kept) >= 200
    assert dis_flagged.mean() > 5 * dis_kept.mean()
    assert np.percentile(dis_flagged, 90) > 5 * np.percentile(dis_kept, 90)
    assert (dis_flagged > 0.05).mean() > 0.1
    assert (dis_kept <= 0.05).all()                        # a 1 px step inside the window is in its range
