"""KITTI end-to-end, monocular ORB with config/kitti_mono.yaml (ground truth never used in the estimate):
sequence 07 (160 real frames, ~90 m with a turn; the evaluation sequence) and 00 (200 frames, ~145 m,
straight then a right turn). One module-scoped fixture per sequence tracks the frames with RANSAC seeds
0, 1 and 2 (features extracted once, as ``kp-vo run --seeds 3`` does: ~7 s + 2 x ~2.5 s each), and
every bound below reads that one set of runs.

Figures measured at commit 6b8e2da with
``kp-vo run ../shared/data/kitti --sequence SEQ --config config/kitti_mono.yaml --extractor orb --seeds 5``
(ATE after one Sim(3) alignment; drift = KITTI t_rel/r_rel formula, over 10-80 m segments on 07, where no
100 m segment fits, and over the official 100 m segments on 00):

    seq  seed:          0      1      2      3      4    mean(0-2)  mean(0-4)
    07   ATE m        0.149  0.144  0.133  0.134  0.116    0.142      0.135
    07   t_rel %      1.12   1.05   0.97   1.00   0.98     1.05       1.02
    07   r_rel d/100m 2.26   2.22   2.11   2.30   2.38     2.20       2.25
    00   ATE m        0.605  0.663  0.639  0.674  0.588    0.636      0.634
    00   t_rel %      1.10   1.21   1.16   1.21   1.10     1.16       1.16
    00   r_rel d/100m 1.37   1.34   1.44   1.43   1.55     1.38       1.43
    tracked: 07 156/160 (4 initialising frames), 00 198/200 (2), no frame lost, every seed.

Bounds, on the mean of seeds 0-2 (averaging three seeds shrinks the seed noise by sqrt(3), so the
bounds can sit close to today's figures without flaking):
- ATE: 07 <= 0.160 m, 00 <= 0.72 m. Each lies above the worst single seed (0.149, 0.674) and 13 % above
  today's 3-seed mean (0.142, 0.636): room for the tracker's ongoing speed work, whose effect is of the
  order of a change of RANSAC seed (the 3-seed mean's seed noise is ~0.007 m on 07, ~0.02 m on 00, so the
  bounds sit 2.7 and 4.3 of those above it), while a 20 % ATE regression (0.170 m, 0.763 m) fails.
- t_rel: 07 <= 1.20 %, 00 <= 1.32 %: the worst seed (1.12, 1.21) plus the ~0.1 pp the speed work may
  move it, below +20 % of the mean (1.26, 1.39).
- r_rel: 07 <= 2.55, 00 <= 1.62 deg/100 m: above the worst seed (2.38, 1.55), below +20 % (2.64, 1.66).
- tracked share: no LOST frame and at least 154/160 (07) and 195/200 (00) frames tracking in every run
  (today 156 and 198: two or three more initialising frames allowed).
Checked by planting regressions in config/kitti_mono.yaml (this test, on a copy of the project):
odometry.huber_px=8 (3-seed mean ATE 0.168 m on 07, +18 %; 0.776 m on 00, +22 %) fails both ATE bounds;
odometry.max_reprojection_px=3 fails 07 (0.203 m); odometry.ba_iterations=0 loses 14 frames of 07 and
gives 14 m on 00. scripts/mutants.py plants one-line bugs in the tracker against this file.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from conftest import KITTI_ROOT
from kp_vo.cli.common import load_configs
from kp_vo.config import merge
from kp_vo.datasets import open_sequence
from kp_vo.pipeline import MemoizedExtractor, PipelineConfig, build_odometry, compute_metrics, run_frames

CONFIG = Path(__file__).resolve().parents[1] / "config" / "kitti_mono.yaml"
SEEDS = (0, 1, 2)

#  seq: (frames, ATE m, t_rel %, r_rel deg/100m, min tracking frames, drift segment lengths m)
BOUNDS = {
    "07": (160, 0.160, 1.20, 2.55, 154, [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]),
    "00": (200, 0.72, 1.32, 1.62, 195, [100.0]),
}


def _runs(sequence_name: str) -> dict[int, dict]:
    """Metrics of the ORB kitti_mono run of ``sequence_name`` for each seed in SEEDS (one extraction)."""
    if not (KITTI_ROOT / "sequences" / sequence_name / "calib.txt").is_file():
        pytest.skip(f"real KITTI {sequence_name} data not found at {KITTI_ROOT} (../shared/data beside the repository)")
    config = merge(load_configs(str(CONFIG))[0], {"extractor": {"name": "orb"}})
    assert config.odometry.seed == SEEDS[0] and config.odometry.depth_source == "triangulation"
    sequence = open_sequence(str(KITTI_ROOT), sequence_name)
    odometry = build_odometry(config)
    odometry.extractor = MemoizedExtractor(odometry.extractor)
    metrics = {}
    for seed in SEEDS:
        odometry.config = dataclasses.replace(config.odometry, seed=seed)
        odometry.reset()
        metrics[seed] = compute_metrics(run_frames(sequence, odometry, progress=False))
    return metrics


@pytest.fixture(scope="module")
def kitti_07() -> dict[int, dict]:
    return _runs("07")


@pytest.fixture(scope="module")
def kitti_00() -> dict[int, dict]:
    return _runs("00")


def _mean(runs: dict[int, dict], key: str) -> float:
    return float(np.mean([m[key] for m in runs.values()]))


@pytest.mark.parametrize("sequence_name", ["07", "00"])
def test_kitti_orb_monocular_bounds(request, sequence_name):
    runs = request.getfixturevalue(f"kitti_{sequence_name}")
    frames, ate, t_rel, r_rel, min_tracking, lengths = BOUNDS[sequence_name]
    for seed, m in runs.items():
        assert m["monocular"] and m["alignment"] == "sim3", (seed, m)
        assert m["num_frames"] == frames and m["skipped_frames"] == []
        assert m["drift_lengths_m"] == lengths
        assert m["states"].get("lost", 0) == 0, (seed, m["states"])
        assert m["states"].get("tracking", 0) >= min_tracking, (seed, m["states"])
        assert m["states"].get("tracking", 0) + m["states"].get("initializing", 0) == frames, (seed, m["states"])
    summary = {key: _mean(runs, key) for key in ("ate_rmse_m", "drift_t_rel_percent", "drift_r_rel_deg_per_100m")}
    per_seed = {seed: {k: round(m[k], 4) for k in summary} for seed, m in runs.items()}
    assert summary["ate_rmse_m"] <= ate, (summary, per_seed)
    assert summary["drift_t_rel_percent"] <= t_rel, (summary, per_seed)
    assert summary["drift_r_rel_deg_per_100m"] <= r_rel, (summary, per_seed)


def test_kitti_seeds_differ_but_agree(kitti_07):
    """The three runs really are different RANSAC draws (else the mean would not average anything),
    and none is an outlier: each seed's ATE within 30 % of the mean."""
    ates = [m["ate_rmse_m"] for m in kitti_07.values()]
    assert len(set(ates)) == len(SEEDS)
    assert max(ates) <= 1.3 * np.mean(ates) and min(ates) >= 0.7 * np.mean(ates), ates


@pytest.mark.parametrize("extractor", ["sift"])
def test_kitti_07_monocular_drift_other_extractor(kitti_root, extractor):
    """SIFT with the default pipeline config: after one Sim(3) alignment, t_rel over 10-80 m segments
    <= 3 % and r_rel <= 10 deg/100 m (the classic essential-matrix VO with ground-truth scale measures
    2.4 % / 8.8 deg/100m with ORB on this snippet)."""
    sequence = open_sequence(str(kitti_root), "07")
    config = merge(PipelineConfig(), {"extractor": {"name": extractor}})
    result = run_frames(sequence, build_odometry(config), progress=False)
    metrics = compute_metrics(result)
    assert metrics["monocular"]
    assert metrics["num_frames"] == 160
    assert metrics["states"].get("lost", 0) == 0
    assert metrics["drift_lengths_m"] == [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    assert metrics["drift_t_rel_percent"] <= 3.0, metrics
    assert metrics["drift_r_rel_deg_per_100m"] <= 10.0, metrics
