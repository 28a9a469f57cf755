"""KITTI odometry loader: real sequence 07 snippet (skipped when absent) and small files in tmp_path."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.datasets import KittiOdometry, Sequence, parse_kitti_calib, read_kitti_poses
from kp_vo.errors import CalibrationError, DatasetError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KITTI = DATA / "kitti"

P0 = "7.070912e+02 0.0 6.018873e+02 0.0 0.0 7.070912e+02 1.831104e+02 0.0 0.0 0.0 1.0 0.0"
P1 = "7.070912e+02 0.0 6.018873e+02 -3.798145e+02 0.0 7.070912e+02 1.831104e+02 0.0 0.0 0.0 1.0 0.0"

needs_kitti = pytest.mark.skipif(not (KITTI / "sequences" / "07").is_dir(),
                                 reason=f"KITTI snippet not found at {KITTI} (shared data absent)")


@needs_kitti
def test_real_kitti_07():
    seq = KittiOdometry(KITTI, "07")
    assert isinstance(seq, Sequence)
    assert len(seq) == 160
    assert (seq.camera.width, seq.camera.height) == (1226, 370)
    assert seq.camera.fx == pytest.approx(707.0912)
    assert seq.camera.cy == pytest.approx(183.1104)
    gt = seq.ground_truth()
    assert gt.shape == (160, 4, 4)
    np.testing.assert_allclose(gt[0], np.eye(4), atol=1e-6)
    length = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum()
    assert 85.0 < length < 95.0
    stamps = seq.stamps_ns()
    assert stamps.dtype == np.int64 and stamps[0] == 0 and np.all(np.diff(stamps) > 0)
    assert 0.09e9 < np.median(np.diff(stamps)) < 0.11e9
    frame = seq[5]
    frame.validate()
    assert frame.image.shape == (370, 1226) and frame.image.dtype == np.uint8
    assert frame.image.std() > 10
    assert frame.depth is None and frame.stamp_ns == stamps[5]
    np.testing.assert_array_equal(frame.T_world_cam_gt, gt[5])
    assert seq[-1].index == 159


@needs_kitti
def test_real_kitti_selection_and_direct_sequence_path():
    seq = KittiOdometry(KITTI / "sequences" / "07", start=10, stride=3, max_frames=5)
    assert len(seq) == 5
    assert [f.meta["raw_index"] for f in seq] == [10, 13, 16, 19, 22]
    full = read_kitti_poses(KITTI / "poses" / "07.txt")
    np.testing.assert_array_equal(seq.ground_truth(), full[[10, 13, 16, 19, 22]])
    with pytest.raises(IndexError):
        seq[5]


def test_calib_with_and_without_labels(tmp_path):
    labelled = tmp_path / "labelled.txt"
    labelled.write_text(f"P0: {P0}\nP1: {P1}\n\nTr: {P0}\n")
    bare = tmp_path / "bare.txt"
    bare.write_text(f"{P0}\n{P1}\n")
    a, b = parse_kitti_calib(labelled), parse_kitti_calib(bare)
    assert set(a) == {"P0", "P1", "Tr"} and set(b) == {"P0", "P1"}
    for c in (a, b):
        assert c["P0"].shape == (3, 4)
        assert c["P0"][0, 0] == pytest.approx(707.0912)
        assert c["P1"][0, 3] == pytest.approx(-379.8145)
        assert c["P0"][1, 2] == pytest.approx(183.1104)


@pytest.mark.parametrize("content, fragment", [
    (f"P0: {P0}\nP1: 1 2 3 x 5\n", ":2:"),             # not numbers, on line 2
    ("P0: 1 2 3\n", ":1:"),                            # wrong count
    ("P1: " + P1 + "\n", "no P0"),                     # P0 missing
])
def test_corrupt_calib_raises(tmp_path, content, fragment):
    path = tmp_path / "calib.txt"
    path.write_text(content)
    with pytest.raises(CalibrationError) as err:
        parse_kitti_calib(path)
    assert str(path) in str(err.value) and fragment in str(err.value)


def _write_fake_sequence(root: Path, n: int = 3, calib: str = f"{P0}\n{P1}\n", with_poses: bool = True) -> None:
    seq = root / "sequences" / "03"
    (seq / "image_0").mkdir(parents=True)
    (seq / "image_1").mkdir()
    for i in range(n):
        img = np.full((20, 30), 10 * i, np.uint8)
        cv2.imwrite(str(seq / "image_0" / f"{i:06d}.png"), img)
        cv2.imwrite(str(seq / "image_1" / f"{i:06d}.png"), img)
    (seq / "calib.txt").write_text(calib)
    (seq / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(n)))
    if with_poses:
        (root / "poses").mkdir()
        rows = [f"1 0 0 {0.5 * i} 0 1 0 0 0 0 1 {1.0 * i}" for i in range(n)]
        (root / "poses" / "03.txt").write_text("\n".join(rows) + "\n")


def test_fake_sequence_layout(tmp_path):
    _write_fake_sequence(tmp_path)
    seq = KittiOdometry(tmp_path, 3)
    assert len(seq) == 3 and seq.name == "kitti_03"
    assert (seq.camera.width, seq.camera.height) == (30, 20)
    assert [f.image[0, 0] for f in seq] == [0, 10, 20]
    np.testing.assert_array_equal(seq.stamps_ns(), [0, 100_000_000, 200_000_000])
    np.testing.assert_allclose(seq.ground_truth()[2, :3, 3], [1.0, 0.0, 2.0])
    # The right camera sits 0.537 m to the right (x) of camera 0.
    right = KittiOdometry(tmp_path, "03", camera="image_1")
    np.testing.assert_allclose(right.ground_truth()[0, :3, 3], [379.8145 / 707.0912, 0, 0], atol=1e-9)


def test_fake_sequence_errors(tmp_path):
    _write_fake_sequence(tmp_path, with_poses=False)
    assert KittiOdometry(tmp_path, "03").ground_truth() is None
    with pytest.raises(DatasetError, match="not found"):
        KittiOdometry(tmp_path, "04")
    with pytest.raises(DatasetError, match="unknown KITTI camera"):
        KittiOdometry(tmp_path, "03", camera="image_9")
    with pytest.raises(CalibrationError, match="no P2"):
        (tmp_path / "sequences" / "03" / "image_2").mkdir()
        cv2.imwrite(str(tmp_path / "sequences" / "03" / "image_2" / "000000.png"), np.zeros((20, 30, 3), np.uint8))
        KittiOdometry(tmp_path, "03", camera="image_2")
    (tmp_path / "sequences" / "03" / "times.txt").write_text("0.0\n0.1\n")
    with pytest.raises(DatasetError, match="2 timestamps for 3 images"):
        KittiOdometry(tmp_path, "03")


def test_read_kitti_poses_rejects_short_lines(tmp_path):
    path = tmp_path / "00.txt"
    path.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0\n")
    with pytest.raises(DatasetError, match=":2:"):
        read_kitti_poses(path)


def test_an_unreadable_frame_is_skipped_and_the_run_goes_on(tmp_path, caplog):
    _write_fake_sequence(tmp_path, n=4)
    (tmp_path / "sequences" / "03" / "image_0" / "000002.png").write_bytes(b"not a png")
    seq = KittiOdometry(tmp_path, 3)
    with caplog.at_level("ERROR"):
        frames = list(seq)
    assert [f.index for f in frames] == [0, 1, 3]
    assert "skipping frame 2" in caplog.text and "000002.png" in caplog.text
    with pytest.raises(DatasetError, match="cannot read image"):
        seq[2]  # direct access still says what is wrong


@pytest.mark.parametrize("sequence", ["../../x", "a/b", "..", ""])
def test_a_sequence_name_cannot_reach_another_folder(tmp_path, sequence):
    _write_fake_sequence(tmp_path)
    with pytest.raises(DatasetError, match="KITTI sequence must be a name"):
        KittiOdometry(tmp_path, sequence)
