"""The console commands `kp-vo make-bag` and `kp-vo bag` end to end on a short synthetic RGB-D
sequence: the bag run gives the same trajectory as `kp-vo run` on the same frames."""

from __future__ import annotations

import numpy as np
import pytest

from kp_vo.bridge.make_bag import BAG_EPOCH_NS
from kp_vo.cli import main


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))   # evo (metrics) writes ~/.evo
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_make_bag_bag_equals_run_on_synthetic(home, capsys):
    pytest.importorskip("kp_vo.datasets", reason="kp_vo.datasets not available yet")
    bag = home / "synthetic_bag"
    assert main(["make-bag", "synthetic", "--max-frames", "6", "--output", str(bag), "--storage", "mcap"]) == 0
    assert "wrote 6 frames" in capsys.readouterr().out
    assert main(["bag", str(bag), "--output", str(home / "bag_out"), "--storage", "mcap"]) == 0
    out = capsys.readouterr().out
    assert "frames processed: 6" in out and "problems: none" in out
    assert main(["run", "synthetic", "--max-frames", "6", "--output", str(home / "run_out"), "--no-progress"]) == 0
    for name in ("trajectory_kitti.txt", "trajectory_tum.txt"):
        a = np.loadtxt(home / "run_out" / name)
        b = np.loadtxt(home / "bag_out" / name)
        assert a.shape == b.shape == ((6, 12) if "kitti" in name else (6, 8))
        if "tum" in name:   # the synthetic times start at 0: make-bag moves them to its epoch
            np.testing.assert_allclose(b[:, 0] - BAG_EPOCH_NS / 1e9, a[:, 0], atol=1e-6)
            a, b = a[:, 1:], b[:, 1:]
        np.testing.assert_allclose(b, a, atol=1e-9)
    for name in ("metrics.json", "config.yaml", "trajectory.png"):
        assert (home / "bag_out" / name).is_file()
    # the metrics of the bag run use the bag's ground truth (the /ground_truth topic)
    import json
    metrics = json.loads((home / "bag_out" / "metrics.json").read_text())
    assert metrics["num_frames"] == 6 and "ate_rmse_m" in metrics and metrics["monocular"] is False


def test_cli_errors_are_one_line(home, capsys):
    assert main(["bag", str(home / "missing_bag"), "--output", str(home / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    (home / "exists").mkdir()
    assert main(["make-bag", "synthetic", "--max-frames", "2", "--output", str(home / "exists")]) == 2
    assert "exists already" in capsys.readouterr().err
