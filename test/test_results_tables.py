"""scripts/results_tables.py on fabricated metrics.json files of the shape ``kp-vo run`` writes."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "results_tables.py"


def _script():
    spec = importlib.util.spec_from_file_location("results_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spread(values):
    mean = sum(values) / len(values)
    return {"values": values, "mean": mean, "std": (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5}


@pytest.fixture
def runs(tmp_path):
    seeded = {"num_frames": 160, "monocular": True, "drift_t_rel_percent": 0.99,
              "drift_r_rel_deg_per_100m": 2.1, "ate_rmse_m": 0.13, "timing": {"total_ms": 40.0, "fps": 25.0},
              "seed_spread": {"seeds": [0, 1, 2, 3, 4, 5],
                              "drift_t_rel_percent": _spread([0.99, 1.0, 1.1, 0.95, 1.05, 0.97]),
                              "drift_r_rel_deg_per_100m": _spread([2.0, 2.2, 2.1, 2.3, 2.2, 2.2]),
                              "ate_rmse_m": _spread([0.12, 0.13, 0.15, 0.12, 0.14, 0.13])}}
    single = {"num_frames": 30, "monocular": True, "drift_t_rel_percent": None, "ate_rmse_m": 0.4567,
              "timing": {"total_ms": 10.0, "fps": 100.0}}
    for name, metrics in (("orb", seeded), ("short", single)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def test_the_table_has_the_seed_mean_and_std_or_the_single_value(runs):
    table = _script().kitti_table(_script().read_runs([f"ORB={runs / 'orb'}", f"short={runs / 'short'}"]))
    lines = table.splitlines()
    assert lines[0] == "| extractor | t_rel (%) | r_rel (deg/100 m) | ATE RMSE (m) | seeds |"
    assert lines[1] == "| --- | --- | --- | --- | --- |"
    assert lines[2] == "| ORB | 1.01 ± 0.05 | 2.17 ± 0.09 | 0.132 ± 0.011 | 6 |"
    assert lines[3] == "| short |  |  | 0.457 | 1 |"


def test_the_command_prints_the_table_and_rejects_a_folder_without_metrics(runs):
    done = subprocess.run([sys.executable, str(SCRIPT), f"orb={runs / 'orb'}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "| orb | 1.01 ± 0.05 |" in done.stdout
    done = subprocess.run([sys.executable, str(SCRIPT), f"x={runs}"], capture_output=True, text=True)
    assert done.returncode != 0 and "metrics.json" in done.stderr


def test_one_column_group_per_sequence(runs):
    """Two runs per row (07 and 00, say): one group of columns each, in the order --sequences names them;
    a row with another number of runs, or runs without their sequences named, is refused."""
    module = _script()
    rows = module.read_runs([f"ORB={runs / 'orb'},{runs / 'short'}"])
    lines = module.kitti_table(rows, ["07", "00"]).splitlines()
    assert lines[0] == "| extractor | 07 t_rel | 07 r_rel | 07 ATE (m) | 00 t_rel | 00 r_rel | 00 ATE (m) | seeds |"
    assert lines[2] == "| ORB | 1.01 ± 0.05 | 2.17 ± 0.09 | 0.132 ± 0.011 |  |  | 0.457 | 6 |"
    with pytest.raises(SystemExit):
        module.kitti_table(rows)
    with pytest.raises(SystemExit):
        module.kitti_table(rows + module.read_runs([f"short={runs / 'short'}"]), ["07", "00"])
    done = subprocess.run([sys.executable, str(SCRIPT), "--sequences", "07,00", f"ORB={runs / 'orb'},{runs / 'short'}"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "| 00 ATE (m) |" in done.stdout, done.stderr
