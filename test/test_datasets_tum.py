"""TUM RGB-D loader on a tiny fake sequence written to tmp_path, then on the real freiburg3 cabinet frames."""

from decimal import Decimal
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from conftest import SHARED_DATA
from kp_vo.datasets import TumRgbd
from kp_vo.datasets.tum import TUM_INTRINSICS, associate_nearest, tum_intrinsics_key
from kp_vo.errors import DatasetError

H, W = 24, 32
RGB_T = [1.00, 1.10, 1.20, 1.30]           # the last one has no depth within 0.02 s -> dropped
DEPTH_T = [1.005, 1.095, 1.11, 1.215, 1.40]
DEPTH_RAW = [5000, 7500, 9999, 12345, 1]    # 16-bit units, 5000 per metre


def _write_tum(root: Path, gt: bool = True, rgb_t: list = RGB_T, depth_t: list = DEPTH_T) -> Path:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines = ["# color images", "# timestamp filename"], ["# depth maps"]
    for k, t in enumerate(rgb_t):
        img = np.zeros((H, W, 3), np.uint8)
        img[..., 2] = 200          # BGR on disk: red
        img[0, 0, 0] = k           # frame id in the blue channel
        cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), img)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
    for t, raw in zip(depth_t, DEPTH_RAW):
        d = np.full((H, W), raw, np.uint16)
        d[0, 0] = 0                # invalid pixel
        cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), d)
        depth_lines.append(f"{t:.6f} depth/{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    if gt:
        # From t=0.9 to t=1.3 the camera moves 4 m along x and yaws 40 deg about z.
        q0 = Rotation.identity().as_quat()
        q1 = Rotation.from_euler("z", 40, degrees=True).as_quat()
        (root / "groundtruth.txt").write_text(
            "# timestamp tx ty tz qx qy qz qw\n"
            f"0.9 0 0 0 {q0[0]} {q0[1]} {q0[2]} {q0[3]}\n"
            f"1.3 4 0 0 {q1[0]} {q1[1]} {q1[2]} {q1[3]}\n")
    return root


@pytest.fixture
def tum_root(tmp_path):
    return _write_tum(tmp_path / "rgbd_dataset_freiburg1_fake")


def test_association_depth_and_images(tum_root):
    seq = TumRgbd(tum_root)
    assert len(seq) == 3 and seq.has_depth
    np.testing.assert_array_equal(seq.stamps_ns(), [1_000_000_000, 1_100_000_000, 1_200_000_000])
    frames = list(seq)
    # rgb 1.10 pairs with depth 1.095 (5 ms) rather than 1.11 (10 ms); rgb 1.20 with 1.215.
    assert [Path(f.meta["depth_path"]).name for f in frames] == ["1.005000.png", "1.095000.png", "1.215000.png"]
    for f, raw in zip(frames, [5000, 7500, 12345]):
        f.validate()
        assert f.depth.dtype == np.float32 and f.depth.shape == (H, W)
        assert f.depth[5, 5] == pytest.approx(raw / 5000.0, rel=1e-6)
        assert f.depth[0, 0] == 0.0
        assert f.image.shape == (H, W, 3) and tuple(f.image[3, 3]) == (200, 0, 0)   # converted to RGB
    assert [int(f.image[0, 0, 2]) for f in frames] == [0, 1, 2]


def test_ground_truth_interpolation(tum_root):
    # The fake ground truth has samples 0.4 s apart: beyond the default max_gt_gap (0.1 s) -> NaN.
    assert np.isnan(TumRgbd(tum_root).ground_truth()).all()
    gt = TumRgbd(tum_root, max_gt_gap=0.5).ground_truth()
    assert gt.shape == (3, 4, 4)
    for pose, t in zip(gt, [1.0, 1.1, 1.2]):
        alpha = (t - 0.9) / 0.4
        np.testing.assert_allclose(pose[:3, 3], [4 * alpha, 0, 0], atol=1e-9)
        yaw = Rotation.from_matrix(pose[:3, :3]).as_euler("zyx", degrees=True)[0]
        assert yaw == pytest.approx(40 * alpha, abs=1e-6)
        np.testing.assert_allclose(pose[3], [0, 0, 0, 1])


def test_intrinsics_defaults_and_overrides(tum_root):
    seq = TumRgbd(tum_root)
    fx, fy, cx, cy = TUM_INTRINSICS["fr1"]
    assert (seq.camera.fx, seq.camera.fy, seq.camera.cx, seq.camera.cy) == (fx, fy, cx, cy)
    assert (seq.camera.width, seq.camera.height) == (W, H)
    over = TumRgbd(tum_root, fx=100.0, cy=12.0, depth_scale=1000.0)
    assert (over.camera.fx, over.camera.fy, over.camera.cy) == (100.0, fy, 12.0)
    assert over[0].depth[5, 5] == pytest.approx(5.0)
    assert tum_intrinsics_key("rgbd_dataset_freiburg3_long_office_household") == "fr3"
    assert tum_intrinsics_key("fr2_desk") == "fr2"
    assert tum_intrinsics_key("my_kinect") == "default"


def test_tight_association_window_and_missing_gt(tmp_path):
    root = _write_tum(tmp_path / "kinect_run", gt=False)
    seq = TumRgbd(root, max_time_diff=0.006)
    assert len(seq) == 2                              # 1.20 <-> 1.215 is 15 ms apart
    assert seq.ground_truth() is None
    assert seq.camera.fx == TUM_INTRINSICS["default"][0]


def test_gt_outside_span_is_nan(tmp_path):
    root = _write_tum(tmp_path / "fr1_x")
    (root / "groundtruth.txt").write_text("1.05 0 0 0 0 0 0 1\n1.25 1 0 0 0 0 0 1\n")
    gt = TumRgbd(root, max_gt_gap=0.5).ground_truth()
    assert np.isnan(gt[0]).all()
    np.testing.assert_allclose(gt[1, :3, 3], [0.25, 0, 0], atol=1e-9)


def test_associate_nearest():
    ref = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(associate_nearest(np.array([0.4, 0.6, 2.05, 5.0]), ref, 0.5), [0, 1, 2, -1])


def test_associate_nearest_ties_go_to_the_earlier_stamp():
    """Mutant tum-association-tie-to-right. 0.5 and 1.5 (exact in binary) lie exactly halfway between two
    reference stamps: each takes the earlier one, so an RGB frame midway between two depth images gets
    the same one on every run; a 2^-20 s nudge either way decides it."""
    ref = np.array([0.0, 1.0, 2.0])
    np.testing.assert_array_equal(associate_nearest(np.array([0.5, 1.5]), ref, 0.5), [0, 1])
    np.testing.assert_array_equal(associate_nearest(np.array([0.5 + 2**-20, 1.5 - 2**-20]), ref, 0.5), [1, 1])


def test_stamps_are_the_listed_seconds_rounded_to_the_nanosecond(tmp_path):
    """Mutant tum-stamps-floor. 0.261327 s and 0.522654 s times 1e9 give 261326999.99999997 and
    522653999.99999994 in float64; the frames' stamps are the decimal values, 261327000 and 522654000 ns
    (truncating would lose a nanosecond; stamps from 2^53 ns, ~104 days, on are whole floats either way)."""
    root = _write_tum(tmp_path / "fr1_small_stamps", gt=False, rgb_t=[0.261327, 0.522654],
                      depth_t=[0.261327, 0.522654])
    np.testing.assert_array_equal(TumRgbd(root).stamps_ns(), [261_327_000, 522_654_000])


def test_unix_time_stamps_are_exact_to_the_nanosecond(tmp_path):
    """1341841278.842683 s (a TUM fr3 stamp) is 1341841278842683136 ns through float64 seconds; the frame's
    stamp is the decimal value."""
    root = _write_tum(tmp_path / "fr3_unix", gt=False, rgb_t=[1341841278.842683], depth_t=[1341841278.842683])
    assert TumRgbd(root).stamps_ns().tolist() == [1_341_841_278_842_683_000]


def test_bad_folders(tmp_path):
    with pytest.raises(DatasetError, match="no rgb.txt"):
        TumRgbd(tmp_path)
    (tmp_path / "rgb.txt").write_text("abc rgb/x.png\n")
    with pytest.raises(DatasetError, match=":1:"):
        TumRgbd(tmp_path)


# ----------------------------------------------------------------------------- the real TUM frames

TUM_CABINET = SHARED_DATA / "tum" / "rgbd_dataset_freiburg3_cabinet"


@pytest.fixture(scope="module")
def cabinet() -> Path:
    if not (TUM_CABINET / "rgb.txt").is_file():
        pytest.skip(f"real TUM data not found at {TUM_CABINET} (../shared/data beside the repository)")
    return TUM_CABINET


def _decimal_stamps(path: Path) -> list[tuple[Decimal, str]]:
    """(stamp, filename) of a TUM list file parsed independently of the loader (exact decimals)."""
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    return [(Decimal(r[0]), r[1]) for r in rows]


def test_real_cabinet_frames_intrinsics_and_depth_scale(cabinet):
    """freiburg3 cabinet as the data README describes it: 58 RGB-D frames of 640x480, fr3 intrinsics
    (535.4, 539.2, 320.1, 247.6) picked from the folder name, depth = 16-bit PNG / 5000."""
    seq = TumRgbd(cabinet)
    assert len(seq) == 58 and seq.has_depth and seq.depth_scale == 5000.0
    c = seq.camera
    assert (c.fx, c.fy, c.cx, c.cy, c.width, c.height) == (535.4, 539.2, 320.1, 247.6, 640, 480)
    for i in (0, 29, 57):
        frame = seq[i]
        frame.validate()
        assert frame.image.shape == (480, 640, 3) and frame.image.dtype == np.uint8
        raw = cv2.imread(frame.meta["depth_path"], cv2.IMREAD_UNCHANGED)
        assert raw.dtype == np.uint16 and frame.depth.dtype == np.float32
        # Known answer per pixel: raw / 5000 (0 stays 0 = no depth).
        np.testing.assert_array_equal(frame.depth, raw.astype(np.float32) / np.float32(5000.0))
        valid = frame.depth > 0
        assert valid.mean() > 0.5
        # An indoor cabinet seen by a Kinect: valid depths between 0.3 m and 10 m, median ~1-3 m.
        assert 0.3 < frame.depth[valid].min() and frame.depth[valid].max() < 10.0
        assert 0.8 < float(np.median(frame.depth[valid])) < 4.0
        # The colour image is returned as RGB: channel order reversed from the BGR cv2 reads.
        bgr = cv2.imread(frame.meta["path"], cv2.IMREAD_COLOR)
        np.testing.assert_array_equal(frame.image, bgr[..., ::-1])


def test_real_cabinet_timestamps_and_association(cabinet):
    """Each frame pairs the rgb and depth files of the same stamp (the lists share stamps), in time
    order, and its stamp is exactly the rgb.txt stamp in nanoseconds (float64 seconds hold only ~0.24 us
    at 1.3e9 s, so the loader parses the decimal text)."""
    seq = TumRgbd(cabinet)
    rgb = _decimal_stamps(cabinet / "rgb.txt")
    depth = dict(_decimal_stamps(cabinet / "depth.txt"))
    assert len(rgb) == 58
    stamps = seq.stamps_ns()
    assert np.all(np.diff(stamps) > 0)
    for k, (t, name) in enumerate(rgb):
        frame = seq[k]
        assert frame.stamp_ns == stamps[k]
        assert frame.stamp_ns == int(t * 10**9), (k, frame.stamp_ns, t)
        assert Path(frame.meta["path"]) == cabinet / name
        assert Path(frame.meta["depth_path"]) == cabinet / depth[t]
    # ~0.67 s apart (every ~20th frame at 30 Hz): a 0.7057 s gap is the longest.
    gaps = np.diff(stamps) * 1e-9
    assert 0.6 < float(np.median(gaps)) < 0.7 and float(gaps.max()) < 0.71


def test_real_cabinet_ground_truth(cabinet):
    """groundtruth.txt is sampled at the frame stamps themselves (0.67-0.706 s apart): with the
    default 0.1 s gap tolerance no frame has ground truth; with a tolerance above the longest gap every
    frame has a finite rigid pose equal to its groundtruth.txt row (interpolation at the sample itself)."""
    assert np.isnan(TumRgbd(cabinet).ground_truth()).all()
    gt = TumRgbd(cabinet, max_gt_gap=0.75).ground_truth()
    assert gt.shape == (58, 4, 4) and np.all(np.isfinite(gt))
    R = gt[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    np.testing.assert_array_equal(gt[:, 3], np.broadcast_to([0, 0, 0, 1.0], (58, 4)))
    rows = np.loadtxt(cabinet / "groundtruth.txt", comments="#")
    np.testing.assert_allclose(gt[:, :3, 3], rows[:, 1:4], atol=1e-6)
    q = Rotation.from_matrix(R).as_quat()
    q_file = rows[:, 4:8] / np.linalg.norm(rows[:, 4:8], axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs(np.sum(q * q_file, axis=1)), 1.0, atol=1e-6)   # same rotation (q ~ -q)
    # First row by hand: position (-2.5508, 0.9872, 1.1019).
    np.testing.assert_allclose(gt[0, :3, 3], [-2.5508, 0.9872, 1.1019])
    # At 0.7 s (the data README's figure) the 4 frames that open a gap over 0.7 s have none: each frame
    # is interpolated from the sample at or before it to the next one, and those two are too far apart.
    partial = TumRgbd(cabinet, max_gt_gap=0.7).ground_truth()
    opens_long_gap = np.append(np.diff(rows[:, 0]) > 0.7, False)
    assert opens_long_gap.sum() == 4
    np.testing.assert_array_equal(np.isnan(partial[:, 0, 0]), opens_long_gap)
    np.testing.assert_allclose(partial[~opens_long_gap], gt[~opens_long_gap])
