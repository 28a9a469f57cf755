"""Monocular depth metrics: known answers, median scaling, bad input, and ``kp-vo eval depth``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from kp_vo.cli import main
from kp_vo.errors import InvalidInputError
from kp_vo.eval.depth import METRICS, constant_depth, depth_errors, eigen_crop, evaluate_depth
from kp_vo.eval.depth_stereo import stereo_depth


def _gt(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(2.0, 60.0, (h, w))


def test_perfect_and_scaled_predictions_score_perfectly_under_median_scaling():
    gt = _gt()
    for pred in (gt, 0.37 * gt):
        e = depth_errors(pred, gt)
        assert e["abs_rel"] < 1e-9 and e["rmse"] < 1e-7 and e["a1"] == 1.0
    assert depth_errors(0.37 * gt, gt)["scale"] == pytest.approx(1 / 0.37)
    raw = depth_errors(0.5 * gt, gt, median_scaling=False)
    assert raw["scale"] == 1.0 and raw["abs_rel"] == pytest.approx(0.5) and raw["a1"] == 0.0


def test_known_answer_of_a_uniform_relative_error():
    gt = np.full((4, 4), 10.0)
    gt[:, :2] = 20.0                           # median 15 between the halves
    pred = gt.copy()
    pred[:, :2] *= 1.2                         # one half 20 % too far: after median scaling ...
    e = depth_errors(pred, gt)
    s = e["scale"]                             # median(gt) / median(pred) = 15 / 17
    assert s == pytest.approx(15 / 17)
    want_rel = 0.5 * abs(1.2 * s - 1) + 0.5 * abs(s - 1)
    assert e["abs_rel"] == pytest.approx(want_rel)
    want_rmse = np.sqrt(0.5 * (20 * (1.2 * s - 1)) ** 2 + 0.5 * (10 * (s - 1)) ** 2)
    assert e["rmse"] == pytest.approx(want_rmse)
    assert e["a1"] == 1.0 and e["a2"] == 1.0


def test_pixels_without_truth_or_prediction_are_ignored_and_out_of_range_truth_too():
    gt = _gt()
    pred = gt.copy()
    gt[0] = 0.0                                # no truth (sky, sensor hole)
    pred[1] = 0.0                              # no prediction
    pred[2] = np.nan
    gt[3] = 500.0                              # beyond max_depth
    pred[3] = 1.0                              # would be a gross error if counted
    assert depth_errors(pred, gt)["abs_rel"] < 1e-9


@pytest.mark.parametrize("pred,gt,match", [
    (np.ones((4, 4)), np.ones((4, 5)), "one size"),
    (np.ones(16), np.ones(16), "one size"),
    (np.ones((4, 4)), np.zeros((4, 4)), "no pixel"),
])
def test_bad_input_is_a_clear_error(pred, gt, match):
    with pytest.raises(InvalidInputError, match=match):
        depth_errors(pred, gt)


def test_evaluate_depth_means_over_images_and_constant_baseline_is_worse_than_truth():
    frames = [SimpleNamespace(image=np.zeros((20, 30, 3), np.uint8), depth=_gt().astype(np.float32) * k)
              for k in (1.0, 2.0)]
    truths = iter(f.depth for f in frames)
    exact = evaluate_depth(lambda image: next(truths), frames)
    assert exact["images"] == 2 and exact["abs_rel"] < 1e-6 and exact["scale_std"] < 1e-6
    const = evaluate_depth(constant_depth, frames)
    assert set(METRICS) <= set(const) and const["abs_rel"] > 0.3 and const["a1"] < 0.5
    with pytest.raises(InvalidInputError, match="no frames"):
        evaluate_depth(constant_depth, [])


def test_eval_depth_cli_on_a_synthetic_street(tmp_path, capsys):
    out = tmp_path / "depth.json"
    rc = main(["eval", "depth", "--models", "constant", "--seed", "200000", "--size", "48x160",
               "--max-frames", "2", "--stride", "10", "--json", str(out)])
    assert rc == 0
    assert "2 images of synthetic:street seeds 200000" in capsys.readouterr().out
    rows = json.loads(out.read_text())["results"]
    assert [(r["model"], r["scaling"]) for r in rows] == [("constant", "median")]     # constant has no fixed scale
    assert rows[0]["images"] == 2 and 0.2 < rows[0]["abs_rel"] < 2.0


def test_mask_restricts_the_scored_pixels_and_coverage_counts_predictions():
    gt = _gt()
    pred = gt.copy()
    pred[:, 15:] *= 3.0                        # wrong on the right half ...
    mask = np.zeros(gt.shape, bool)
    mask[:, :15] = True                        # ... which the mask leaves out
    assert depth_errors(pred, gt, mask=mask)["abs_rel"] < 1e-9
    pred[:10] = 0.0                            # no prediction on half of the rows
    assert depth_errors(pred, gt, mask=mask)["coverage"] == pytest.approx(0.5)
    with pytest.raises(InvalidInputError, match="mask"):
        depth_errors(pred, gt, mask=mask[:, :10])


def test_eigen_crop_on_a_kitti_image():
    crop = eigen_crop(375, 1242)
    rows, cols = np.nonzero(crop)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (153, 370, 44, 1196)
    assert crop.sum() == (371 - 153) * (1197 - 44)


def test_stereo_depth_of_a_shifted_texture():
    rng = np.random.default_rng(1)
    left = cv2.GaussianBlur(rng.integers(0, 256, (120, 320), dtype=np.uint8), (3, 3), 0)
    right = np.roll(left, -8, axis=1)          # every pixel 8 px to the left: disparity 8
    depth = stereo_depth(left, right, fx=100.0, baseline_m=0.5, num_disparities=32)
    inner = depth[10:-10, 40:-20]
    assert np.mean(inner > 0) > 0.95 and np.median(inner[inner > 0]) == pytest.approx(100.0 * 0.5 / 8)
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        stereo_depth(left, right, 100.0, 0.5, num_disparities=20)


@pytest.mark.parametrize("spec", ["orb", "constant:x", "depthnet:missing.onnx", "stereo,size=3", "stereo,block_size=x"])
def test_eval_depth_cli_rejects_bad_model_specs(spec, capsys):
    assert main(["eval", "depth", "--models", spec, "--max-frames", "1"]) != 0
    assert capsys.readouterr().err.strip()


def test_stereo_needs_a_stereo_source(capsys):
    assert main(["eval", "depth", "--models", "stereo", "--size", "48x160", "--max-frames", "1"]) != 0
    assert "needs rectified stereo pairs" in capsys.readouterr().err
