"""open_sequence: picking the loader from the path, shared options, and errors for unknown layouts."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.datasets import ImageFolder, KittiOdometry, SyntheticSequence, TumRgbd, open_sequence
from kp_vo.errors import DatasetError
from kp_vo.types import CameraIntrinsics

P0 = "700 0 15 0 0 700 10 0 0 0 1 0"


def _kitti(root: Path, n: int = 4) -> Path:
    seq = root / "sequences" / "05"
    (seq / "image_0").mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(seq / "image_0" / f"{i:06d}.png"), np.full((20, 30), i, np.uint8))
    (seq / "calib.txt").write_text(f"P0: {P0}\n")
    (seq / "times.txt").write_text("".join(f"{0.1 * i}\n" for i in range(n)))
    return root


def _tum(root: Path) -> Path:
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "a.png"), np.zeros((8, 8, 3), np.uint8))
    cv2.imwrite(str(root / "d.png"), np.full((8, 8), 5000, np.uint16))
    (root / "rgb.txt").write_text("1.0 a.png\n")
    (root / "depth.txt").write_text("1.01 d.png\n")
    return root


def _images(root: Path, n: int = 5) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        cv2.imwrite(str(root / f"img_{i:03d}.jpg"), np.full((12, 16, 3), 20 * i, np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def test_synthetic_specs():
    street = open_sequence("synthetic", width=64, height=32, num_frames=3)
    room = open_sequence("synthetic:room", width=64, height=48, num_frames=2)
    also_room = open_sequence("synthetic", "room", width=64, height=48, num_frames=2)
    assert isinstance(street, SyntheticSequence) and street.kind == "street" and len(street) == 3
    assert room.kind == also_room.kind == "room" and len(room) == 2
    # max_frames alone renders just that many (plus start/stride) instead of the default length.
    short = open_sequence("synthetic:room", width=64, height=48, max_frames=4, start=2, stride=3)
    assert len(short) == 4 and [f.meta["raw_index"] for f in short] == [2, 5, 8, 11]


def test_kitti_root_and_sequence_folder(tmp_path):
    root = _kitti(tmp_path / "kitti")
    a = open_sequence(str(root), "05")
    b = open_sequence(str(root / "sequences" / "05"))
    c = open_sequence(str(root), "5", max_frames=2, stride=2)
    assert isinstance(a, KittiOdometry) and isinstance(b, KittiOdometry)
    assert len(a) == len(b) == 4 and a.camera == b.camera and a.camera.fx == 700
    assert [int(f.image[0, 0]) for f in c] == [0, 2]
    with pytest.raises(DatasetError, match="needs a sequence.*05"):
        open_sequence(str(root))
    with pytest.raises(DatasetError, match="sequence='06'"):
        open_sequence(str(root / "sequences" / "05"), "06")


def test_tum_and_image_folder(tmp_path):
    tum = open_sequence(str(_tum(tmp_path / "rgbd_dataset_freiburg2_x")))
    assert isinstance(tum, TumRgbd) and len(tum) == 1 and tum[0].depth[0, 0] == pytest.approx(1.0)
    folder = _images(tmp_path / "imgs")
    cam = CameraIntrinsics(20.0, 20.0, 7.5, 5.5, 16, 12)
    seq = open_sequence(str(folder), camera=cam, fps=20.0, start=1)
    assert isinstance(seq, ImageFolder) and len(seq) == 4
    assert seq[0].image.shape == (12, 16, 3) and seq[0].meta["path"].endswith("img_001.jpg")
    np.testing.assert_array_equal(seq.stamps_ns()[:2], [50_000_000, 100_000_000])
    assert seq.ground_truth() is None and not seq.has_depth
    by_tuple = open_sequence(str(folder), intrinsics=(20, 20, 7.5, 5.5))
    assert by_tuple.camera == cam
    with pytest.raises(DatasetError, match="needs intrinsics"):
        open_sequence(str(folder))
    wrong = open_sequence(str(folder), camera=CameraIntrinsics(20.0, 20.0, 7.5, 5.5, 32, 24))
    with pytest.raises(DatasetError, match="16x12 but the camera is 32x24"):
        wrong[0]


def test_unknown_layouts(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as err:
        open_sequence(str(empty))
    assert str(empty) in str(err.value) and "expected" in str(err.value)
    with pytest.raises(DatasetError, match="no such dataset path"):
        open_sequence(str(tmp_path / "missing"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        open_sequence(str(tmp_path / "file.txt"))
    with pytest.raises(DatasetError, match="stride"):
        open_sequence(str(_kitti(tmp_path / "k")), "05", stride=0)
