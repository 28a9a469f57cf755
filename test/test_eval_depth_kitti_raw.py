"""``kp-vo eval depth`` on the KITTI raw drive of ../shared/data: LiDAR ground truth, both scalings, baselines."""

from __future__ import annotations

import json

import pytest
from conftest import SHARED_DATA

from kp_vo.cli import main

DRIVE = SHARED_DATA / "kitti_raw" / "2011_09_26" / "2011_09_26_drive_x130432_sync"
pytestmark = pytest.mark.skipif(not DRIVE.is_dir(), reason=f"KITTI raw drive not found at {DRIVE}")


def test_eval_depth_on_lidar_with_the_configured_scale_and_the_baselines(tmp_path, capsys):
    config = tmp_path / "depth.yaml"
    config.write_text("depth:\n  estimator: depthnet\n  options: {scale: 22.94}\n")
    out = tmp_path / "depth.json"
    rc = main(["eval", "depth", "--source", str(DRIVE), "--models", "constant", "depthnet", "stereo",
               "--config", str(config), "--max-frames", "2", "--json", str(out)])
    assert rc == 0
    assert "2 images of kitti_raw_2011_09_26_drive_x130432 (projected LiDAR" in capsys.readouterr().out
    rows = {(r["model"], r["scaling"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {("constant", "median"), ("depthnet", "median"), ("depthnet", "fixed"),
                         ("stereo", "median"), ("stereo", "fixed")}
    assert rows["depthnet", "fixed"]["fixed_scale"] == 22.94 and rows["stereo", "fixed"]["fixed_scale"] == 1.0
    assert all(r["scale_mean"] == 1.0 for (_, scaling), r in rows.items() if scaling == "fixed")     # unscaled
    # The config's scale reached the network: the median scaling it still needs is near 1 (measured 1.09).
    assert 0.8 < rows["depthnet", "median"]["scale_mean"] < 1.4
    stereo, constant = rows["stereo", "fixed"], rows["constant", "median"]
    # measured on frames 0-1: stereo abs rel 0.07, delta < 1.25 0.93 on 67 % of the LiDAR pixels; constant 0.48, 0.28
    assert stereo["abs_rel"] < 0.12 and stereo["a1"] > 0.85 and 0.4 < stereo["coverage"] < 0.9
    assert constant["abs_rel"] > 3 * stereo["abs_rel"] and constant["coverage"] == 1.0
    assert all(r["images"] == 2 for r in rows.values())


def test_eval_depth_without_lidar_frames_is_one_clear_line(capsys):
    assert main(["eval", "depth", "--source", str(DRIVE), "--models", "constant", "--start", "10"]) != 0
    assert "no images with ground-truth depth" in capsys.readouterr().err
