"""The trajectory plot says how the estimate was aligned: a monocular estimate is drawn Sim(3)-aligned
with its scale in the legend, an RGB-D one SE(3)-aligned."""

import numpy as np
import pytest

import kp_vo.eval.plots
from kp_vo.pipeline import PipelineConfig, RunResult, write_outputs


def _result(monocular: bool) -> RunResult:
    n = 8
    gt = np.repeat(np.eye(4)[None], n, axis=0)
    gt[:, 2, 3] = np.arange(n) * 1.0
    gt[:, 0, 3] = 0.1 * np.arange(n) ** 2
    est = gt.copy()
    est[:, :3, 3] *= 2.5 if monocular else 1.0     # a monocular estimate in its own unit
    return RunResult(np.arange(n), np.arange(n) * 10**8, est, ["tracking"] * n, gt,
                     [{"total": 0.01}] * n, monocular)


@pytest.mark.parametrize("monocular, label", [(True, "estimate (Sim(3)-aligned, scale 0.4)"),
                                              (False, "estimate (SE(3)-aligned)")])
def test_plot_legend_names_the_alignment(tmp_path, monkeypatch, monocular, label):
    drawn = {}
    plot = kp_vo.eval.plots.plot_trajectory_top_view

    def spy(path, est, gt, title, states=None, est_label="estimate"):
        drawn.update(est=est, gt=gt, label=est_label)
        return plot(path, est, gt, title, states=states, est_label=est_label)

    monkeypatch.setattr(kp_vo.eval.plots, "plot_trajectory_top_view", spy)
    write_outputs(_result(monocular), tmp_path, PipelineConfig())
    assert drawn["label"] == label
    np.testing.assert_allclose(drawn["est"][:, :3, 3], drawn["gt"][:, :3, 3], atol=1e-9)   # drawn aligned
    assert (tmp_path / "trajectory.png").stat().st_size > 0
