"""7-Scenes loader on a tiny fake scene written to tmp_path (two sequences of a few 640x480 frames)."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.datasets import SevenScenes, open_sequence
from kp_vo.datasets.sevenscenes import (
    FPS,
    SEVEN_SCENES_INTRINSICS,
    sequence_folder_name,
)
from kp_vo.errors import DatasetError

H, W = 480, 640
FRAMES = {"seq-01": 3, "seq-02": 2}


def _pose(seq: int, k: int) -> np.ndarray:
    """A distinct T_world_cam per frame: yaw k * 10 deg about y, position (seq, 0.1 k, 0)."""
    a = np.radians(10.0 * k)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = [seq, 0.1 * k, 0.0]
    return T


def _write_scene(scene: Path) -> Path:
    for name, n in FRAMES.items():
        folder = scene / name
        folder.mkdir(parents=True)
        seq = int(name[-2:])
        for k in range(n):
            stem = folder / f"frame-{k:06d}"
            img = np.zeros((H, W, 3), np.uint8)
            img[..., 2] = 200                     # BGR on disk: red
            img[0, 0, 0] = 10 * seq + k           # frame id in the blue channel
            cv2.imwrite(f"{stem}.color.png", img)
            depth = np.full((H, W), 1000 + 500 * k, np.uint16)   # millimetres
            depth[0, 0] = 65535                   # invalid (7-Scenes marker)
            depth[0, 1] = 0                       # invalid too
            cv2.imwrite(f"{stem}.depth.png", depth)
            np.savetxt(f"{stem}.pose.txt", _pose(seq, k), fmt="%.7e", delimiter="\t")
    (scene / "TrainSplit.txt").write_text("sequence1\n")
    (scene / "TestSplit.txt").write_text("sequence2\n")
    return scene


@pytest.fixture
def scene(tmp_path):
    return _write_scene(tmp_path / "chess")


def test_scene_and_sequence_give_frames_depth_intrinsics_and_poses(scene):
    seq = open_sequence(str(scene), "seq-01")
    assert isinstance(seq, SevenScenes) and len(seq) == 3 and seq.has_depth
    c = seq.camera
    assert (c.fx, c.fy, c.cx, c.cy) == SEVEN_SCENES_INTRINSICS and (c.width, c.height) == (W, H)
    f = seq[2]
    f.validate()
    assert f.image.shape == (H, W, 3) and tuple(f.image[5, 5]) == (200, 0, 0)     # RGB order
    assert f.image[0, 0, 2] == 12                                                  # frame 2 of seq-01
    assert f.depth.dtype == np.float32 and f.depth[5, 5] == pytest.approx(2.0)   # 2000 mm
    assert f.depth[0, 0] == 0.0 and f.depth[0, 1] == 0.0                          # 65535 and 0: invalid
    np.testing.assert_allclose(f.T_world_cam_gt, _pose(1, 2), atol=1e-6)
    np.testing.assert_allclose(seq.ground_truth()[:, :3, 3], [[1, 0, 0], [1, 0.1, 0], [1, 0.2, 0]], atol=1e-6)
    np.testing.assert_array_equal(seq.stamps_ns(), np.round(np.arange(3) * 1e9 / FPS).astype(np.int64))
    assert f.meta["sequence"] == "seq-01" and f.meta["path"].endswith("frame-000002.color.png")


def test_sequence_selection(scene):
    direct = open_sequence(str(scene / "seq-02"))
    by_number = open_sequence(str(scene), "2")
    assert len(direct) == len(by_number) == 2 and direct.name == by_number.name
    assert direct[1].image[0, 0, 2] == 21
    both = open_sequence(str(scene), "seq-01,seq-02", stride=2)
    assert [f.meta["sequence"] for f in both] == ["seq-01", "seq-01", "seq-02"]
    assert [int(f.image[0, 0, 2]) for f in both] == [10, 12, 21]
    assert len(open_sequence(str(scene), "train")) == 3 and len(open_sequence(str(scene), "test")) == 2
    assert sequence_folder_name(3) == "seq-03"


@pytest.mark.parametrize("sequence, message", [
    (None, "needs a sequence .*seq-01, seq-02"),
    ("seq-05", "no sequence seq-05"),
    ("first", "must look like 'seq-01'"),
])
def test_bad_sequence_names(scene, sequence, message):
    with pytest.raises(DatasetError, match=message):
        open_sequence(str(scene), sequence)
    with pytest.raises(DatasetError, match="sequence='seq-02'"):
        open_sequence(str(scene / "seq-01"), "seq-02")


def _one_line_error(*args) -> str:
    with pytest.raises(DatasetError) as err:
        SevenScenes(*args)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_folders_and_pose_files(scene, tmp_path):
    assert "no such 7-Scenes folder" in _one_line_error(tmp_path / "missing", "seq-01")
    assert "not a 7-Scenes" in _one_line_error(tmp_path, "seq-01")

    (scene / "seq-01" / "frame-000001.pose.txt").unlink()
    assert "frame-000001.pose.txt" in _one_line_error(scene, "seq-01")

    (scene / "seq-02" / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 zero 0\n")
    assert "found text" in _one_line_error(scene, "seq-02")
    (scene / "seq-02" / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n")
    assert "found 12" in _one_line_error(scene, "seq-02")
    (scene / "seq-02" / "frame-000000.pose.txt").write_text("1 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 2\n")
    assert "0 0 0 1" in _one_line_error(scene, "seq-02")
    # a non-finite pose is a frame without ground truth, not an error
    (scene / "seq-02" / "frame-000000.pose.txt").write_text("inf 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    assert np.isnan(SevenScenes(scene, "seq-02")[0].T_world_cam_gt).all()

    (scene / "seq-02" / "frame-000001.depth.png").unlink()
    assert "no matching .depth.png" in _one_line_error(scene, "seq-02")
    (scene / "TrainSplit.txt").write_text("seq1\n")
    assert "expected lines 'sequenceK'" in _one_line_error(scene, "train")


def test_viewsynth_recipe_builds_depth_pairs_from_7scenes(scene):
    import torch

    from kp_vo.config import load_config
    from kp_vo.training.recipes.viewsynth import RECIPE

    cfg = load_config(RECIPE.config_type, {"data": {"source": str(scene), "sequence": "seq-01,seq-02",
                                                    "height": 48, "width": 64, "gaps": [1, 2]}})
    ds = RECIPE(cfg).build_dataset("train")          # 5 frames, the last 20 % validate -> frames 0..3
    assert sorted(ds.pairs) == [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]
    item = ds[ds.pairs.index((1, 3))]
    assert item["depth1"].shape == (1, 48, 64) and item["depth1"][0, 5, 5] == pytest.approx(1.5)
    assert item["depth1"][0, 0, 0] == 0.0                                  # 65535 stays invalid
    assert item["K"][0, 0] == pytest.approx(585.0 * 64 / 640)
    expected = np.linalg.inv(_pose(2, 0)) @ _pose(1, 1)                    # frame 3 = seq-02 frame 0
    torch.testing.assert_close(item["T_2_1"], torch.from_numpy(expected.astype(np.float32)), atol=1e-5, rtol=0)
