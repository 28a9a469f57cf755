"""CoRBS loader (TUM layout, Kinect v2 intrinsics, *_gt.txt ground truth) on a tiny fake folder."""

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_vo.datasets import CoRBS, TumRgbd, open_sequence
from kp_vo.datasets.corbs import CORBS_COLOR_INTRINSICS
from kp_vo.errors import DatasetError

H, W = 36, 64                        # small stand-ins for the 1080x1920 colour images
STAMPS = [10.00, 10.10, 10.20]


def _gt_text(offset: float = 0.0) -> str:
    """From t = 9.95 to 10.25 s (every 0.05 s) the camera moves 3 m along x and turns 20 deg about y."""
    lines = ["# timestamp tx ty tz qx qy qz qw"]
    for j in range(7):
        s = j / 6
        q = Rotation.from_euler("y", 20 * s, degrees=True).as_quat()
        lines.append(f"{9.95 + 0.05 * j:.2f} {offset + 3 * s} 0 0 {q[0]} {q[1]} {q[2]} {q[3]}")
    return "\n".join(lines) + "\n"


def _write_corbs(root: Path, gt_name: str = "D1_gt.txt", depth_hw: tuple[int, int] = (H, W)) -> Path:
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb, depth = [], []
    for k, t in enumerate(STAMPS):
        img = np.full((H, W, 3), 40, np.uint8)
        img[0, 0, 0] = k
        cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), img)
        d = np.full(depth_hw, 5000 * (k + 1), np.uint16)     # 1, 2, 3 m at 5000 units per metre
        d[0, 0] = 0
        cv2.imwrite(str(root / "depth" / f"{t:.6f}.png"), d)
        rgb.append(f"{t:.6f} rgb\\{t:.6f}.png")                # CoRBS lists use Windows separators
        depth.append(f"{t + 0.005:.6f} depth\\{t:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb) + "\n")
    (root / "depth.txt").write_text("\n".join(depth) + "\n")
    if gt_name:
        (root / gt_name).write_text(_gt_text())
    return root


def test_corbs_folder_is_detected_with_kinect2_intrinsics_depth_and_poses(tmp_path):
    seq = open_sequence(str(_write_corbs(tmp_path / "D1_raw")))
    assert isinstance(seq, CoRBS) and seq.name == "corbs_D1_raw" and len(seq) == 3 and seq.has_depth
    c = seq.camera
    assert (c.fx, c.fy, c.cx, c.cy) == CORBS_COLOR_INTRINSICS and (c.width, c.height) == (W, H)
    f = seq[1]
    f.validate()
    assert f.image[0, 0, 2] == 1                                       # BGR on disk -> RGB
    assert f.depth[5, 5] == pytest.approx(2.0) and f.depth[0, 0] == 0.0
    # ground truth from D1_gt.txt, interpolated at 10.10: halfway from x=0 to x=3 -> 1.5 m
    np.testing.assert_allclose(f.T_world_cam_gt[:3, 3], [1.5, 0, 0], atol=1e-9)
    assert np.isclose(np.degrees(Rotation.from_matrix(f.T_world_cam_gt[:3, :3]).magnitude()), 10.0)


def test_groundtruth_txt_needs_the_prefix_and_intrinsics_override(tmp_path):
    root = _write_corbs(tmp_path / "E1", gt_name="groundtruth.txt")
    assert isinstance(open_sequence(str(root)), TumRgbd) and not isinstance(open_sequence(str(root)), CoRBS)
    seq = open_sequence(f"corbs:{root}", fx=1000.0)
    assert isinstance(seq, CoRBS) and seq.camera.fx == 1000.0 and seq.camera.fy == CORBS_COLOR_INTRINSICS[1]
    assert seq.ground_truth() is not None


def test_several_gt_files_need_a_choice(tmp_path):
    root = _write_corbs(tmp_path / "H1")
    (root / "H1_other_gt.txt").write_text(_gt_text(offset=10.0))
    with pytest.raises(DatasetError, match="several ground-truth files.*groundtruth=NAME"):
        CoRBS(root)
    seq = CoRBS(root, groundtruth="H1_other_gt.txt")
    assert seq[0].T_world_cam_gt[0, 3] == pytest.approx(10.5)
    with pytest.raises(DatasetError, match="nope_gt.txt: ground-truth file not found"):
        CoRBS(root, groundtruth="nope_gt.txt")


def test_bad_corbs_input_is_one_line(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset path"):
        open_sequence(f"corbs:{tmp_path / 'missing'}")
    root = _write_corbs(tmp_path / "D2")
    (root / "D1_gt.txt").write_text("10.0 1 2 3\n")
    with pytest.raises(DatasetError, match="D1_gt.txt:1: expected 8 values") as err:
        open_sequence(str(root))
    assert "\n" not in str(err.value)
    unregistered = open_sequence(str(_write_corbs(tmp_path / "raw", depth_hw=(24, 30))))
    with pytest.raises(DatasetError, match="differs from image"):
        unregistered[0]
