"""Smoke tests of the real ``kp-vo`` console script and of its error handling."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from kp_vo.cli import main

KP_VO = [sys.executable, "-m", "kp_vo.cli"]


def test_run_synthetic_writes_every_output(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(KP_VO + ["run", "synthetic:room", "--max-frames", "12", "--output", str(out),
                                   "--no-progress"], capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    for name in ("trajectory_kitti.txt", "trajectory_tum.txt", "metrics.json", "config.yaml", "trajectory.png"):
        assert (out / name).stat().st_size > 0, name
    assert len((out / "trajectory_kitti.txt").read_text().splitlines()) == 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 12 and metrics["ate_rmse_m"] < 0.01
    assert "ATE RMSE" in proc.stdout


def test_config_file_overrides_and_is_saved(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("extractor:\n  name: sift\nodometry:\n  window_size: 4\n")
    out = tmp_path / "run"
    assert main(["run", "synthetic:room", "--max-frames", "5", "--config", str(cfg), "--output", str(out),
                 "--no-progress"]) == 0
    saved = (out / "config.yaml").read_text()
    assert "name: sift" in saved and "window_size: 4" in saved


def test_set_overrides_single_values_after_the_config_file(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("odometry:\n  window_size: 4\n")
    out = tmp_path / "run"
    assert main(["run", "synthetic:room", "--max-frames", "4", "--config", str(cfg), "--set", "odometry.window_size=5",
                 "--set", "extractor.options.max_keypoints=300", "--output", str(out), "--no-progress"]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["odometry"]["window_size"] == 5 and saved["extractor"]["options"] == {"max_keypoints": 300}


def test_loader_options_reach_the_sequence_and_network_depth_defaults_to_the_depthnet(tmp_path):
    import argparse

    from kp_vo.cli.common import apply_overrides, open_source
    from kp_vo.pipeline import PipelineConfig

    seq = open_source("synthetic:street", max_frames=2, option_items=["seed=7", "width=160", "height=48"])
    assert seq.scene.seed == 7 and seq.camera.width == 160 and len(seq) == 2
    net = apply_overrides(PipelineConfig(), argparse.Namespace(extractor=None, depth_source="network"))
    assert net.odometry.depth_source == "network" and net.depth.estimator == "depthnet"
    tri = apply_overrides(PipelineConfig(), argparse.Namespace(extractor=None, depth_source="triangulation"))
    assert tri.depth.estimator == ""


def test_seeds_rerun_the_tracker_on_features_extracted_once(tmp_path, monkeypatch, capsys):
    from kp_vo.features.classical import OpenCVExtractor

    calls = []
    extract = OpenCVExtractor.extract
    monkeypatch.setattr(OpenCVExtractor, "extract", lambda self, image: calls.append(1) or extract(self, image))
    out = tmp_path / "run"
    assert main(["run", "synthetic:street", "--max-frames", "14", "--depth-source", "triangulation",
                 "--seeds", "3", "--output", str(out), "--no-progress"]) == 0
    assert len(calls) == 14
    metrics = json.loads((out / "metrics.json").read_text())
    spread = metrics["seed_spread"]
    assert spread["seeds"] == [0, 1, 2]
    ate = spread["ate_rmse_m"]
    assert ate["values"][0] == metrics["ate_rmse_m"] and len(ate["values"]) == 3
    # (the mean of equal values may differ from them in the last bit)
    assert min(ate["values"]) - 1e-12 <= ate["mean"] <= max(ate["values"]) + 1e-12
    assert "over 3 RANSAC seeds" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["run", "/nonexistent/folder"], "no such dataset path"),
    (["run", "synthetic", "--seeds", "0"], "--seeds must be at least 1"),
    (["run", "synthetic", "--set", "odometry.window_size"], "--set expects KEY=VALUE"),
    (["run", "synthetic", "--set", "odometry.no_such_knob=1"], "no_such_knob"),
    (["run", "synthetic", "--set", "odometry.window_size=many"], "window_size"),
    (["run", "synthetic", "--option", "seed"], "--option expects KEY=VALUE"),
    (["run", "synthetic", "--extractor", "nope"], "unknown extractor"),
])
def test_known_errors_are_one_line_and_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + ["--output", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_bad_config_key_is_reported(tmp_path, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("odometry:\n  windw_size: 4\n")
    assert main(["run", "synthetic", "--config", str(cfg), "--output", str(tmp_path / "o")]) == 2
    assert "odometry.windw_size" in capsys.readouterr().err


def test_corrupt_kitti_calib_is_reported(tmp_path, capsys):
    seq = tmp_path / "sequences" / "00"
    (seq / "image_0").mkdir(parents=True)
    import cv2
    import numpy as np
    cv2.imwrite(str(seq / "image_0" / "000000.png"), np.zeros((64, 64), np.uint8))
    (seq / "calib.txt").write_text("P0: 1 2 three\n")
    (seq / "times.txt").write_text("0.0\n")
    assert main(["run", str(tmp_path), "--sequence", "00", "--output", str(tmp_path / "o")]) == 2
    assert "calib.txt" in capsys.readouterr().err


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failing_run_leaves_the_previous_outputs_as_they_were(tmp_path, monkeypatch, capsys):
    from kp_vo import pipeline
    from kp_vo.errors import InvalidInputError

    out = tmp_path / "run"
    assert main(["run", "synthetic:room", "--max-frames", "5", "--output", str(out), "--no-progress"]) == 0
    before = _snapshot(out)
    assert {"trajectory_kitti.txt", "trajectory_tum.txt", "metrics.json", "config.yaml", "trajectory.png"} <= set(before)

    def fail(result):
        raise InvalidInputError("Sim(3) scale undefined")

    monkeypatch.setattr(pipeline, "compute_metrics", fail)   # metrics fail after tracking, as when nothing initialises
    assert main(["run", "synthetic:room", "--max-frames", "6", "--output", str(out), "--no-progress"]) == 2
    assert "Sim(3) scale undefined" in capsys.readouterr().err
    assert _snapshot(out) == before                            # no new trajectory beside old metrics
    monkeypatch.undo()
    assert main(["run", "synthetic:room", "--start", "1000", "--output", str(out), "--no-progress"]) == 2
    assert "no frame was tracked" in capsys.readouterr().err   # zero frames selected: nothing replaced
    assert _snapshot(out) == before


def test_real_tum_frames_beyond_the_ground_truth_gap_give_trajectories_without_metrics(tmp_path, caplog):
    from conftest import SHARED_DATA

    tum = SHARED_DATA / "tum" / "rgbd_dataset_freiburg3_cabinet"
    if not (tum / "rgb.txt").is_file():
        pytest.skip(f"real TUM data not found at {tum} (../shared/data beside the repository)")
    out = tmp_path / "tum"
    with caplog.at_level("WARNING"):   # the default gap tolerance is shorter than this sequence's 0.67 s
        assert main(["run", str(tum), "--max-frames", "6", "--output", str(out), "--no-progress"]) == 0
    assert "ground truth missing" in caplog.text
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_frames"] == 6 and "ate_rmse_m" not in metrics
    assert len([line for line in (out / "trajectory_tum.txt").read_text().splitlines() if not line.startswith("#")]) == 6
