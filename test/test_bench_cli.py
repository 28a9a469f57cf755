"""``kp-vo bench``: rows from a YAML file, a report with every stage, the first row as baseline."""

import argparse
import json
from pathlib import Path

import pytest

from kp_vo.cli import main
from kp_vo.cli.bench import bench_rows
from kp_vo.config import merge
from kp_vo.pipeline import PipelineConfig


def test_bench_rows_file_reports_every_stage(tmp_path, capsys):
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  orb_rgbd: {extractor: {name: orb}}\n"
                    "  orb_mono: {extractor: {name: orb}, odometry: {depth_source: triangulation}}\n")
    out = tmp_path / "bench.json"
    assert main(["bench", "synthetic:room", "--max-frames", "6", "--warmup", "1", "--rows", str(rows),
                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["row"] for r in report["rows"]] == ["orb_rgbd", "orb_mono"]
    first = report["rows"][0]
    for stage in ("decode", "extract", "depth", "pose", "map", "total"):
        assert first[f"{stage}_ms"] >= 0.0
    assert first["total_ms"] > 0 and first["speed_vs_baseline"] == 1.0 and first["frames"] == 5
    assert report["rows"][1]["config"]["odometry"]["depth_source"] == "triangulation"
    assert first["providers"] == {"extractor": "opencv-cpu"}
    printed = capsys.readouterr().out
    assert "orb_mono" in printed and "orb_mono: extractor on opencv-cpu" in printed


def test_bench_reports_the_network_runtime_of_each_row(tmp_path):
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows:\n  kpn_torch: {extractor: {name: keypointnet, options: {backend: torch, device: cpu,"
                    " max_keypoints: 200}},\n    depth: {estimator: depthnet, options: {backend: torch, device: cpu}},"
                    "\n    odometry: {depth_source: network}}\n")
    out = tmp_path / "bench.json"
    assert main(["bench", "synthetic:street", "--max-frames", "3", "--warmup", "1", "--rows", str(rows),
                 "--output", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["providers"] == {"extractor": "torch-cpu", "depth": "torch-cpu"}


def test_bench_rows_file_errors_are_one_line(tmp_path, capsys):
    rows = tmp_path / "rows.yaml"
    rows.write_text("rows: []\n")
    assert main(["bench", "synthetic:room", "--max-frames", "2", "--rows", str(rows),
                 "--output", str(tmp_path / "b.json")]) == 2
    assert "expected a non-empty mapping" in capsys.readouterr().err


CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG.glob("bench_*.yaml")), ids=lambda p: p.name)
def test_committed_bench_rows_are_valid_pipeline_configs(path):
    rows = bench_rows(argparse.Namespace(rows=str(path), extractors=None))
    assert rows
    for overrides in rows.values():
        merge(PipelineConfig(), overrides)          # raises ConfigError on an unknown key or bad type


@pytest.mark.parametrize("path", sorted(CONFIG.glob("train_*.yaml")), ids=lambda p: p.name)
def test_committed_training_configs_load(path):
    from kp_vo.config import load_config
    from kp_vo.training.recipes import get_recipe

    recipe = {"train_keypointnet_distill": "keypointnet_distill", "train_keypointnet": "keypointnet_homography",
              "train_depthnet": "depthnet_selfsup", "train_kp3d": "kp3d", "train_viewsynth": "viewsynth",
              "train_object": "object_keypoints"}   # the first prefix that fits names the recipe
    name = next(v for k, v in recipe.items() if path.name.startswith(k))
    cfg = load_config(get_recipe(name).config_type, path)
    assert cfg.train.steps >= 1
