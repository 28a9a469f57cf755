"""Object KeypointNet evaluation: angular-distance known answers, perfect keypoints give ~0 error,
and ``kp-vo eval objects`` on a tiny UNTRAINED model (checkpoint, weights file, ONNX export, bad files)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from kp_vo.cli import main
from kp_vo.errors import InvalidInputError
from kp_vo.eval.objects import (
    ObjectViewPair,
    evaluate_pairs,
    lift_keypoints,
    no_rotation_baseline,
    relative_rotation_error_deg,
    rotation_angular_distance_deg,
    summarize,
)
from kp_vo.geometry.se3 import transform

DISTANCE = 4.0
K = np.array([[40.0, 0, 31.5], [0, 40.0, 31.5], [0, 0, 1]])


def _rz(deg: float) -> np.ndarray:
    return Rotation.from_euler("z", deg, degrees=True).as_matrix()


def test_angular_distance_known_answers():
    assert rotation_angular_distance_deg(np.eye(3), np.eye(3)) == pytest.approx(0.0, abs=1e-6)
    assert rotation_angular_distance_deg(_rz(90), np.eye(3)) == pytest.approx(90.0)
    assert rotation_angular_distance_deg(_rz(180), np.eye(3)) == pytest.approx(180.0)
    R = Rotation.random(5, random_state=1).as_matrix()
    d = rotation_angular_distance_deg(R @ _rz(25), R)                   # right-multiplied: still 25 deg
    assert d.shape == (5,) and np.allclose(d, 25.0)
    with pytest.raises(InvalidInputError, match="3, 3"):
        rotation_angular_distance_deg(np.eye(3), np.eye(4))


def _look_at(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    from kp_vo.datasets.objects import look_at_pose
    return look_at_pose(np.radians(azimuth_deg), np.radians(elevation_deg), DISTANCE)


def _perfect_uvz(points_obj: np.ndarray, T_obj_cam: np.ndarray) -> np.ndarray:
    """Keypoints (u, v, z - DISTANCE) of object points seen from T_obj_cam: what a perfect net predicts."""
    X = transform(np.linalg.inv(T_obj_cam), points_obj)
    uv = (X[:, :2] / X[:, 2:]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return np.concatenate([uv, X[:, 2:] - DISTANCE], 1)


def test_perfect_keypoints_give_zero_error():
    points = np.random.default_rng(0).uniform(-1, 1, (10, 3))
    T1, T2 = _look_at(20, 30), _look_at(110, 15)
    uvz1, uvz2 = _perfect_uvz(points, T1), _perfect_uvz(points, T2)
    np.testing.assert_allclose(lift_keypoints(uvz1, K, DISTANCE), transform(np.linalg.inv(T1), points), atol=1e-9)
    R_2_1 = (np.linalg.inv(T2) @ T1)[:3, :3]
    assert relative_rotation_error_deg(uvz1, uvz2, K, R_2_1, DISTANCE) == pytest.approx(0.0, abs=1e-4)
    # against a ground truth off by 30 deg the same keypoints score 30 deg
    assert relative_rotation_error_deg(uvz1, uvz2, K, _rz(30) @ R_2_1, DISTANCE) == pytest.approx(30.0, abs=1e-4)
    with pytest.raises(InvalidInputError, match="N >= 3"):
        relative_rotation_error_deg(uvz1[:2], uvz2[:2], K, R_2_1, DISTANCE)

    # evaluate_pairs with a "network" that reads the view id from the image and answers perfectly
    views = {0: T1, 1: T2, 2: _look_at(200, 40)}
    pairs = [ObjectViewPair(np.full((8, 8, 3), a / 10, np.float32), np.full((8, 8, 3), b / 10, np.float32), K,
                            np.linalg.inv(views[b]) @ views[a], 0) for a, b in ((0, 1), (1, 2), (2, 0))]

    def predict(images: np.ndarray) -> np.ndarray:
        return np.stack([_perfect_uvz(points, views[int(img[0, 0, 0] * 10 + 0.5)]) for img in images])

    metrics = evaluate_pairs(predict, pairs, DISTANCE, batch_size=2)
    assert len(metrics.errors_deg) == 3 and metrics.mean_deg < 1e-3 and metrics.under[10.0] == 1.0


def test_summary_known_answer():
    m = summarize([5.0, 20.0, 40.0])
    assert m.mean_deg == pytest.approx(65 / 3) and m.median_deg == 20.0
    assert m.under == {10.0: pytest.approx(1 / 3), 30.0: pytest.approx(2 / 3)}
    assert m.as_dict()["under_30deg"] == pytest.approx(2 / 3)


def test_no_rotation_baseline_is_the_angle_between_the_views():
    image = np.zeros((8, 8, 3), np.float32)
    pairs = []
    for deg in (20.0, 50.0, 120.0):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = _rz(deg), [0.3, 0.0, 0.1]                   # the translation plays no part
        pairs.append(ObjectViewPair(image, image, K, T, 0))
    m = no_rotation_baseline(pairs)
    np.testing.assert_allclose(m.errors_deg, [20.0, 50.0, 120.0], atol=1e-6)
    assert m.under == {10.0: 0.0, 30.0: pytest.approx(1 / 3)}


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory):
    """A fake training output folder with a tiny UNTRAINED object KeypointNet (4 keypoints, width 8):
    checkpoint, weights file and config_used.yaml (render size 32)."""
    import torch

    from kp_vo.config import load_config, save_config
    from kp_vo.models import build_model
    from kp_vo.training.checkpoint import save_checkpoint, save_weights
    from kp_vo.training.recipes.object_keypoints import ObjectKeypointsConfig

    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("run")
    model = build_model("object_keypointnet", num_keypoints=4, width=8)
    save_config(load_config(ObjectKeypointsConfig, {"data": {"size": 32}, "num_keypoints": 4, "width": 8}),
                run / "config_used.yaml")
    checkpoint = save_checkpoint(run / "checkpoints", 3, {"object_keypointnet": model})
    weights = save_weights(run / "weights" / "object_keypointnet.safetensors", model)
    return {"run": run, "checkpoint": checkpoint, "weights": weights, "model": model}


def _run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["eval", "objects", *map(str, argv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_on_untrained_checkpoint_and_weights(untrained_run, capsys, tmp_path):
    """Smoke test only: the weights are untrained, so the errors are large; we check that it runs and
    reports numbers, and that checkpoint and weights file of one model give the same errors."""
    results = []
    for model_file in (untrained_run["checkpoint"], untrained_run["weights"]):
        out_json = tmp_path / f"{model_file.stem}.json"
        rc, out, _ = _run_cli(capsys, model_file, "--pairs", "4", "--num-objects", "2", "--json", out_json)
        assert rc == 0 and "mean_deg" in out and "32x32" in out and "config_used.yaml" in out
        res = json.loads(out_json.read_text())
        assert res["results"]["pairs"] == 4 and 0.0 <= res["results"]["mean_deg"] <= 180.0
        assert "no rotation (R = I)" in out and res["no_rotation_baseline"]["pairs"] == 4
        assert 0.0 < res["no_rotation_baseline"]["mean_deg"] <= 180.0
        assert 0.0 <= res["results"]["under_10deg"] <= res["results"]["under_30deg"] <= 1.0
        results.append(res["errors_deg"])
    assert "training checkpoint step_00000003.json (step 3)" in json.loads(
        (tmp_path / "step_00000003.json").read_text())["setup"]
    np.testing.assert_allclose(results[0], results[1], atol=1e-6)


def test_cli_on_untrained_onnx_export(untrained_run, capsys, tmp_path):
    """The same UNTRAINED model exported to ONNX runs through the CLI and predicts the keypoints of the
    torch weights (compared on keypoints: an untrained net's keypoints bunch up at the image centre,
    so its Procrustes rotations, and errors, are too ill-conditioned to compare across backends)."""
    from kp_vo.eval.objects import ObjectKeypointModel, held_out_pairs
    from kp_vo.export.onnx_export import export_module

    onnx_path = export_module(untrained_run["model"], tmp_path / "object_keypointnet.onnx", trained=False,
                              sample_hw=(32, 32))
    rc, out, _ = _run_cli(capsys, onnx_path, "--pairs", "3", "--size", "32")
    assert rc == 0 and "ONNX object_keypointnet.onnx" in out and "UNTRAINED" in out and "recipe defaults" in out
    images = np.stack([p.image1 for p in held_out_pairs(3, 32)])
    onnx_uvz = ObjectKeypointModel(onnx_path).predict(images)
    assert onnx_uvz.shape == (3, 4, 3)
    np.testing.assert_allclose(onnx_uvz, ObjectKeypointModel(untrained_run["weights"]).predict(images), atol=1e-4)


def test_cli_bad_model_files(untrained_run, capsys, tmp_path):
    from safetensors.numpy import save_file

    save_file({"foo": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    (tmp_path / "model.pt").write_bytes(b"pickle")
    broken = untrained_run["run"] / "broken"
    broken.mkdir()
    ckpt = untrained_run["checkpoint"]
    (broken / ckpt.name).write_text(ckpt.read_text())
    (broken / ckpt.with_suffix(".safetensors").name).write_bytes(ckpt.with_suffix(".safetensors").read_bytes()[:-8])
    cases = [(tmp_path / "missing.onnx", "model file not found"),
             (tmp_path / "foreign.safetensors", "not object_keypointnet weights"),
             (tmp_path / "model.pt", "expected an exported .onnx"),
             (broken / ckpt.name, "unreadable checkpoint")]
    for path, message in cases:
        rc, _, err = _run_cli(capsys, path, "--pairs", "2")
        err = err.strip()
        assert rc == 2 and err.startswith("kp-vo eval: error:") and message in err and "\n" not in err
