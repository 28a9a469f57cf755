"""Self-supervised DepthNet pretraining: Rodrigues, PoseNet, the multi-scale view-synthesis loss, and a
trainer smoke run whose DepthNet weights load into the kp3d recipe."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kp_vo.config import load_config
from kp_vo.geometry.se3 import so3_exp
from kp_vo.models import build_model
from kp_vo.models.posenet import (
    axis_angle_to_rotation,
    invert_transform,
    pose_vector_to_transform,
)
from kp_vo.training.photometric import multiscale_photometric_loss

SMALL = {"synthetic_frames": 3, "dts": [1], "height": 64, "width": 96, "val_fraction": 0.0}



# ---------------------------------------------------------------- Rodrigues
def test_axis_angle_to_rotation_known_answers_and_orthonormal():
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.equal(axis_angle_to_rotation(torch.zeros(3, dtype=torch.float64)), eye)
    Rz = axis_angle_to_rotation(torch.tensor([0.0, 0.0, math.pi / 2], dtype=torch.float64))
    want = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(Rz, want, atol=1e-12)                      # x -> y, y -> -x
    rng = np.random.default_rng(0)
    omega = rng.normal(size=(16, 3)) * rng.uniform(1e-5, 3.0, (16, 1))   # tiny (Taylor branch) to large angles
    R = axis_angle_to_rotation(torch.from_numpy(omega))
    np.testing.assert_allclose(R.numpy(), np.stack([so3_exp(w) for w in omega]), atol=1e-10)
    assert torch.allclose(R @ R.transpose(-1, -2), eye.expand(16, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(16, dtype=torch.float64), atol=1e-12)


def test_axis_angle_to_rotation_gradcheck_including_zero():
    omega = torch.tensor([[0.3, -0.2, 0.5], [1e-5, 2e-5, -1e-5], [0.0, 0.0, 0.0]], dtype=torch.float64,
                         requires_grad=True)
    assert torch.autograd.gradcheck(axis_angle_to_rotation, (omega,), eps=1e-7, atol=1e-6)
    pose = torch.tensor([[0.1, 0.2, -0.1, 1.0, -2.0, 0.5]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pose_vector_to_transform, (pose,), eps=1e-6, atol=1e-6)
    T = pose_vector_to_transform(pose.detach())
    assert torch.allclose(T[0, :3, 3], pose[0, 3:].detach()) and torch.equal(T[0, 3], torch.tensor(
        [0.0, 0.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(invert_transform(T) @ T, torch.eye(4, dtype=torch.float64)[None], atol=1e-12)


# ---------------------------------------------------------------- PoseNet
def test_posenet_shapes_and_near_identity_start(one_thread):
    torch.manual_seed(0)
    net = build_model("posenet")
    out = net({"image": torch.randn(2, 6, 64, 96)})
    assert out["pose"].shape == (2, 6) and out["T_c_t"].shape == (2, 4, 4)
    # the 0.01 output scale: a fresh net proposes a near-identity motion
    assert out["pose"].abs().max().item() < 0.05
    eye = torch.eye(4).expand(2, 4, 4)
    assert (out["T_c_t"] - eye).abs().max().item() < 0.05
    R = out["T_c_t"][:, :3, :3]
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5)
    assert net.spec().input_channels == 6 and len(net.spec().mean) == 6
    with pytest.raises(Exception, match="6, H, W"):
        net({"image": torch.randn(1, 3, 64, 96)})


# ---------------------------------------------------------------- loss
def test_photometric_loss_true_depth_and_pose_beat_a_wrong_pose():
    from kp_vo.training.recipes.kp3d import Kp3dDataConfig, snippet_dataset
    ds = snippet_dataset(load_config(Kp3dDataConfig, SMALL), "train")
    item = ds[0]
    t, _ = ds.items[0]
    depth = torch.from_numpy(np.asarray(ds.sequence[t].depth, np.float32))[None, None]    # exact render depth
    assert depth.shape[-2:] == (64, 96)
    inv = torch.where(depth > 0, 1.0 / depth.clamp(min=1e-3), torch.full_like(depth, 1e-3))   # sky: far away
    target, K = item["target"][None], item["K"][None]
    ctxs = [item["context"][None, c] for c in range(2)]
    T_true = [item["T_c_t_gt"][None, c] for c in range(2)]
    scales = [inv, torch.nn.functional.avg_pool2d(inv, 2)]
    good, smooth, mask = multiscale_photometric_loss(target, ctxs, T_true, K, scales)
    assert mask.shape == (1, 1, 64, 96) and mask.mean().item() > 0.3 and torch.isfinite(smooth)
    wrong = []
    for T in T_true:                       # 3 deg of yaw and a sideways drift
        Tw = T.clone()
        Tw[0, :3, :3] = torch.from_numpy(so3_exp(np.array([0.0, 0.05, 0.0]))).float() @ T[0, :3, :3]
        Tw[0, 0, 3] += 0.3
        wrong.append(Tw)
    bad, _, _ = multiscale_photometric_loss(target, ctxs, wrong, K, scales)
    bad_nomask, _, _ = multiscale_photometric_loss(target, ctxs, wrong, K, scales, automask=False)
    good_nomask, _, _ = multiscale_photometric_loss(target, ctxs, T_true, K, scales, automask=False)
    assert good.item() < 0.8 * bad.item()
    assert good_nomask.item() < 0.8 * bad_nomask.item()


# ---------------------------------------------------------------- recipe
class _ForwardMotionPoseNet(torch.nn.Module):
    """Stand-in PoseNet: always 'the second frame is 1 m ahead of the first' (T_second_first, t = -z)."""

    def __init__(self):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(()))
        self.spec = build_model("posenet").spec

    def forward(self, inputs):
        T = torch.eye(4).repeat(inputs["image"].shape[0], 1, 1)
        T[:, 2, 3] = -1.0
        return {"T_c_t": T + 0.0 * self.bias}


@pytest.mark.parametrize("temporal_order, want_deg", [(True, 0.0), (False, 90.0)])
def test_pairs_in_temporal_order_invert_the_earlier_context(temporal_order, want_deg, one_thread):
    """Context 0 precedes the target: with temporal_order its pair is fed (context, target) and the
    pose inverted, so a net that only knows 'forward motion' is right for both contexts."""
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE
    recipe = RECIPE(load_config(RECIPE.config_type, {"data": SMALL,
                                                     "model": {"posenet_temporal_order": temporal_order}}))
    batch = torch.utils.data.default_collate([recipe.build_dataset("train")[0]])
    models = {"depthnet": build_model("depthnet").train(), "posenet": _ForwardMotionPoseNet()}
    _, logs = recipe.compute_loss(models, batch, 0)
    assert logs["trans_dir_err_deg"] == pytest.approx(want_deg, abs=1.0)   # 0 + 0, or (180 + 0) / 2


def test_trainer_run_loss_decreases_exports_and_weights_load_into_kp3d(tmp_path, one_thread):
    from kp_vo.export import read_metadata
    from kp_vo.models.checkpoints import read_state_dict
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE
    from kp_vo.training.recipes.kp3d import RECIPE as KP3D
    from kp_vo.training.trainer import train
    # one snippet (3 frames, dt 1), so every step sees the same batch; lr raised for a 5-step run
    result = train("depthnet_selfsup", overrides={
        "train": {"steps": 5, "batch_size": 1, "lr": 1e-3, "output_dir": str(tmp_path / "run"), "progress": False,
                  "log_every": 1, "checkpoint_every": 0, "device": "cpu", "export": True},
        "data": SMALL})
    assert result.step == 5 and all(np.isfinite(result.losses))
    assert min(result.losses[-2:]) < result.losses[0]
    assert result.checkpoint is not None and result.checkpoint.is_file()
    logs = result.last_scalars
    assert {"photo", "smooth", "automask_kept", "rot_err_deg", "trans_dir_err_deg"} <= set(logs)
    assert 0.0 < logs["automask_kept"] <= 1.0 and np.isfinite(list(logs.values())).all()
    [onnx_path] = result.exported
    meta = read_metadata(onnx_path)
    assert onnx_path.name == "depthnet_selfsup.onnx" and meta.kind == "depthnet" and meta.trained
    weights = tmp_path / "run" / "weights" / "depthnet.safetensors"
    assert weights in result.weights
    kp3d = KP3D(load_config(KP3D.config_type, {"model": {"depthnet_weights": str(weights)}})).build_models()
    saved, _ = read_state_dict(weights)
    loaded = kp3d["depthnet"].state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    # the next schedule stage starts from both nets' weights
    stage2 = RECIPE(load_config(RECIPE.config_type, {"model": {
        "depthnet_weights": str(weights), "posenet_weights": str(weights.with_name("posenet.safetensors"))}}))
    models = stage2.build_models()
    assert torch.equal(models["depthnet"].state_dict()["encoder.conv1.weight"], saved["encoder.conv1.weight"])


def test_bad_loss_options_are_one_line_errors():
    from kp_vo.errors import InvalidInputError
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE
    with pytest.raises(InvalidInputError, match="gamma"):
        RECIPE(load_config(RECIPE.config_type, {"loss": {"gamma": 1.5}})).build_models()


def test_cli_lists_the_recipe(capsys):
    from kp_vo.cli import build_parser
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "depthnet_selfsup" in capsys.readouterr().out


def test_synthetic_streets_train_and_validate_on_different_streets():
    from kp_vo.training.recipes.kp3d import VAL_STREET_SEED, Kp3dDataConfig, snippet_dataset
    cfg = load_config(Kp3dDataConfig, {"source": "synthetic_streets", "streets": 2, "val_streets": 1,
                                       "synthetic_frames": 4, "dts": [1], "height": 32, "width": 96})
    train, val = snippet_dataset(cfg, "train"), snippet_dataset(cfg, "val")
    assert len(train) == 2 * 2 and len(val) == 2                 # frames 1, 2 of each 4-frame street
    assert [d.sequence.scene.seed for d in train.datasets] == [0, 1]
    assert [d.sequence.scene.seed for d in val.datasets] == [VAL_STREET_SEED]
    a, b = train[0], train[2]                                    # same frame index, different streets
    assert a["target"].shape == (3, 32, 96) and not torch.equal(a["target"], b["target"])
    assert bool(a["has_gt"]) and a["target"].dtype == torch.float32 and a["target"].max() <= 1.0
    with pytest.raises(Exception, match="at least one val street"):
        snippet_dataset(load_config(Kp3dDataConfig, {"source": "synthetic_streets", "val_streets": 0}), "val")


def test_augmented_snippets_mirror_frames_intrinsics_and_poses_consistently():
    """A mirrored snippet is the mirror image of the plain one, with cx -> W - 1 - cx and the ground-truth
    poses conjugated by the x mirror; a brightness change is shared by the three frames; validation
    snippets are never augmented."""
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE, AugmentedSnippets
    data = {**SMALL, "synthetic_frames": 4, "val_fraction": 0.0}
    plain = RECIPE(load_config(RECIPE.config_type, {"data": data})).build_dataset("train")
    assert not isinstance(plain, AugmentedSnippets)
    flip = RECIPE(load_config(RECIPE.config_type, {"data": data, "augment": {"flip_p": 1.0}}))
    ds = flip.build_dataset("train")
    assert isinstance(ds, AugmentedSnippets)
    a, m = plain[0], ds[0]
    W = a["target"].shape[-1]
    assert torch.equal(m["target"], a["target"].flip(-1)) and torch.equal(m["context"], a["context"].flip(-1))
    assert m["K"][0, 2] == pytest.approx(W - 1 - float(a["K"][0, 2])) and m["K"][1, 2] == a["K"][1, 2]
    S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(m["T_c_t_gt"], S @ a["T_c_t_gt"] @ S)
    # a point seen at pixel u in the plain target is at W - 1 - u in the mirrored one: projection agrees
    X = torch.tensor([1.5, -0.3, 7.0])
    u, um = (a["K"] @ X)[0] / X[2], (m["K"] @ (S[:3, :3] @ X))[0] / X[2]
    assert float(um) == pytest.approx(W - 1 - float(u), abs=1e-4)
    bright = RECIPE(load_config(RECIPE.config_type, {"data": data, "augment": {"brightness": 0.2}}))
    b = bright.build_dataset("train")[0]
    frames_a = torch.cat([a["target"][None], a["context"]])
    frames_b = torch.cat([b["target"][None], b["context"]])
    inner = (frames_a > 0.25) & (frames_a < 0.75)                      # away from the clipping
    shift = (frames_b - frames_a)[inner]
    assert float(shift.max() - shift.min()) < 1e-5 and abs(float(shift.mean())) <= 0.2
    held_out = RECIPE(load_config(RECIPE.config_type, {"data": {**data, "synthetic_frames": 6, "val_fraction": 0.5},
                                                       "augment": {"flip_p": 1.0}}))
    assert not isinstance(held_out.build_dataset("val"), AugmentedSnippets)


def test_options_added_later_leave_the_config_hash_of_older_configs_alone():
    from kp_vo.training.recipe import config_hash
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE
    base = load_config(RECIPE.config_type, {"data": SMALL})
    same = load_config(RECIPE.config_type, {"data": SMALL, "augment": {"flip_p": 0.0}})
    other = load_config(RECIPE.config_type, {"data": SMALL, "augment": {"flip_p": 0.5}})
    assert config_hash(base) == config_hash(same) != config_hash(other)
