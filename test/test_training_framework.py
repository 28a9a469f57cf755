"""Training framework: checkpoints (safetensors + JSON), logger, trainer resume, CLI parsing, 2-process DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from kp_vo.config import ConfigError
from kp_vo.errors import InvalidInputError, ModelFileError
from kp_vo.training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from kp_vo.training.logger import ScalarLogger, read_metrics
from kp_vo.training.recipes import available_recipes, get_recipe

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training_keypointnet import make_textured_images, tiny_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path):
    model, opt = _model_and_optimizer()
    path = save_checkpoint(tmp_path, 3, {"net": model}, opt, extra={"note": "x"})
    expected_rand = torch.rand(5)
    expected_np = np.random.rand(3)
    model2, opt2 = _model_and_optimizer()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=5.0)
    loaded = load_checkpoint(path, {"net": model2}, opt2)
    assert loaded.step == 3 and loaded.extra == {"note": "x"}
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert opt2.param_groups[0]["lr"] == pytest.approx(1e-2)
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert set(s1) == set(s2)
    for k in s1:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))
    assert torch.equal(torch.rand(5), expected_rand)
    assert np.array_equal(np.random.rand(3), expected_np)
    # the tensor file is plain safetensors, the sidecar plain JSON (no pickles)
    meta = json.loads(path.read_text())
    assert meta["step"] == 3 and meta["tensors"].endswith(".safetensors")


def test_checkpoint_keeps_newest_and_detects_corruption(tmp_path):
    model, opt = _model_and_optimizer()
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, {"net": model}, opt, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003.json", "step_00000004.json"]
    latest = latest_checkpoint(tmp_path)
    assert latest.name == "step_00000004.json"
    tensors = latest.with_suffix(".safetensors")
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        load_checkpoint(latest, {"net": model}, opt)
    with pytest.raises(ModelFileError, match="do not fit"):
        load_checkpoint(tmp_path / "step_00000003.json", {"net": nn.Linear(2, 2)})


def test_logger_writes_jsonl(tmp_path):
    log = ScalarLogger(tmp_path)
    log.log(1, {"loss": 2.0, "acc": float("nan")})
    log.log(2, {"loss": 1.5}, split="val")
    log.close()
    train = read_metrics(tmp_path / "metrics.jsonl")
    assert train == [{"step": 1, "split": "train", "time": train[0]["time"], "loss": 2.0, "acc": None}]
    assert read_metrics(tmp_path / "metrics.jsonl", "val")[0]["loss"] == 1.5
    ScalarLogger(tmp_path / "off", enabled=False).log(1, {"loss": 1.0})
    assert not (tmp_path / "off").exists()


def test_registry_and_config_errors(tmp_path):
    assert available_recipes() == ["depthnet_selfsup", "keypointnet_distill", "keypointnet_homography", "kp3d", "object_keypoints",
                                   "viewsynth"]
    with pytest.raises(InvalidInputError, match="unknown training recipe"):
        get_recipe("nope")
    from kp_vo.training.trainer import train
    with pytest.raises(ConfigError, match="train.stepz"):
        train("keypointnet_homography", {"train": {"stepz": 3}})


def test_cli_set_parsing():
    from kp_vo.settings import parse_settings
    assert parse_settings(["train.steps=10", "train.lr=0.1", "model=keypointnet_vgg", "zoom=[1, 2]"], "--set") == {
        "train": {"steps": 10, "lr": 0.1}, "model": "keypointnet_vgg", "zoom": [1, 2]}
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        parse_settings(["oops"], "--set")


def test_trainer_single_process_resume(tmp_path):
    from kp_vo.training.trainer import train
    data = make_textured_images(tmp_path / "imgs", n=4, size=(72, 100))
    cfg = tiny_config(data, steps=2, checkpoint_every=1, val_every=2, val_batches=1)
    first = train("keypointnet_homography", cfg)
    assert first.start_step == 0 and first.step == 2 and len(first.losses) == 2
    assert first.checkpoint.name == "step_00000002.json"
    out = Path(cfg["train"]["output_dir"])
    assert (out / "config_used.yaml").is_file() and (out / "weights" / "keypointnet.safetensors").is_file()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert len(read_metrics(out / "metrics.jsonl", "val")) == 1
    cfg["train"].update(steps=3, resume="auto", export=True)
    second = train("keypointnet_homography", cfg)
    assert second.start_step == 2 and second.step == 3 and len(second.losses) == 1
    from kp_vo.export.metadata import read_metadata
    assert [p.name for p in second.exported] == ["keypointnet_vgg_d64.onnx"]
    meta = read_metadata(second.exported[0])
    assert meta.kind == "keypointnet_vgg" and meta.trained
    meta = json.loads(second.checkpoint.read_text())
    assert meta["step"] == 3
    with pytest.raises(ModelFileError):
        cfg["train"]["resume"] = str(tmp_path / "nothing.json")
        train("keypointnet_homography", cfg)


DDP_SCRIPT = """
import json, os, sys
from pathlib import Path
from kp_vo.training.trainer import train
cfg = json.loads(sys.argv[1])
r = train("keypointnet_homography", cfg)
out = Path(sys.argv[2]) / f"rank{os.environ['RANK']}_{r.step}.json"
out.write_text(json.dumps([r.world_size, r.start_step, r.step, len(r.losses)]))
"""


def _torchrun(script: Path, cfg: dict, port: int, results: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           str(script), json.dumps(cfg), str(results)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_processes_train_and_resume(tmp_path):
    import socket
    data = make_textured_images(tmp_path / "imgs", n=4, size=(72, 100))
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    cfg = tiny_config(data, steps=2, checkpoint_every=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _torchrun(script, cfg, port, tmp_path)
    for rank in (0, 1):     # world size, start step, end step, steps run
        assert json.loads((tmp_path / f"rank{rank}_2.json").read_text()) == [2, 0, 2, 2]
    assert latest_checkpoint(Path(cfg["train"]["output_dir"]) / "checkpoints").name == "step_00000002.json"
    cfg["train"].update(steps=3, resume="auto")
    _torchrun(script, cfg, port + 1 if port < 65535 else port - 1, tmp_path)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}_3.json").read_text()) == [2, 2, 3, 1]
    meta = json.loads(latest_checkpoint(Path(cfg["train"]["output_dir"]) / "checkpoints").read_text())
    assert meta["step"] == 3 and meta["extra"]["world_size"] == 2


def test_learning_rate_schedule_follows_milestones_and_applies_on_resume(tmp_path):
    from kp_vo.training.recipe import TrainConfig
    from kp_vo.training.trainer import learning_rate, train
    tc = TrainConfig(lr=1e-3, lr_milestones=(2, 4), lr_gamma=0.5)
    assert [learning_rate(tc, s) for s in range(6)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    assert learning_rate(TrainConfig(lr=2e-4), 10**6) == 2e-4
    data = make_textured_images(tmp_path / "imgs", n=4, size=(72, 100))
    cfg = tiny_config(data, steps=2, checkpoint_every=1, lr=1e-3)
    train("keypointnet_homography", cfg)
    # resumed with a schedule the first run did not have: the rate comes from the new config, not the
    # optimiser state saved at step 2
    cfg["train"].update(steps=4, resume="auto", lr_milestones=[3], lr_gamma=0.1)
    train("keypointnet_homography", cfg)
    lrs = {r["step"]: r["lr"] for r in read_metrics(Path(cfg["train"]["output_dir"]) / "metrics.jsonl")}
    assert lrs[1] == lrs[2] == lrs[3] == pytest.approx(1e-3) and lrs[4] == pytest.approx(1e-4)
    with pytest.raises(InvalidInputError, match="lr_milestones"):
        train("keypointnet_homography", tiny_config(data, lr_milestones=[0]))


def _nan_gradients_at(steps_with_nan):
    """A compute_loss wrapper whose loss stays finite but whose gradients are NaN at the given steps
    (d sqrt(x)/dx is infinite at 0, times 0 from the product: NaN)."""
    from kp_vo.training.recipes.keypointnet_homography import KeypointNetHomography
    original = KeypointNetHomography.compute_loss

    def compute_loss(self, models, batch, step):
        loss, scalars = original(self, models, batch, step)
        if steps_with_nan is None or step in steps_with_nan:
            weights = torch.cat([p.flatten() for m in models.values() for p in m.parameters()])
            loss = loss + torch.sqrt(0.0 * weights.sum())
        return loss, scalars
    return compute_loss


def test_trainer_skips_updates_with_non_finite_gradients(tmp_path, monkeypatch):
    """One batch with NaN gradients must not reach the weights: that update is skipped and counted,
    training goes on; NaN at every step stops the run with a one-line error."""
    from kp_vo.training import trainer
    from kp_vo.training.recipes.keypointnet_homography import KeypointNetHomography
    from kp_vo.training.trainer import train
    monkeypatch.setattr(KeypointNetHomography, "compute_loss", _nan_gradients_at({1}))
    data = make_textured_images(tmp_path / "imgs", n=4, size=(72, 100))
    result = train("keypointnet_homography", tiny_config(data, steps=3))
    assert result.step == 3 and result.skipped_steps == 1
    from safetensors.torch import load_file
    weights = load_file(str(result.weights[0]))
    assert all(torch.isfinite(w).all() for w in weights.values())
    metrics = read_metrics(Path(result.output_dir) / "metrics.jsonl")
    assert [r["skipped_steps"] for r in metrics] == [0, 1, 1]

    monkeypatch.setattr(KeypointNetHomography, "compute_loss", _nan_gradients_at(None))
    monkeypatch.setattr(trainer, "MAX_NONFINITE_IN_A_ROW", 2)
    with pytest.raises(trainer.TrainingError, match="non-finite gradients at 2 steps in a row"):
        train("keypointnet_homography", tiny_config(data, steps=3, output_dir=str(tmp_path / "run2")))
