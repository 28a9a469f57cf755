"""3D-object KeypointNet training pieces: renderer, losses (known answers + gradcheck), recipe smoke
run, and one short run of the generic trainer with ONNX export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kp_vo.datasets.objects import (
    look_at_pose,
    make_chair,
    object_camera,
    project_object_points,
    random_view,
    render_object,
)
from kp_vo.geometry.se3 import so3_exp
from kp_vo.training.losses_object import (
    consistency_loss,
    orientation_loss,
    pose_loss,
    separation_loss,
    silhouette_loss,
    unproject,
    variance_loss,
)



def test_render_depth_mask_and_projection_agree():
    obj = make_chair(1)
    assert np.allclose(np.maximum(np.abs(obj.lo), np.abs(obj.hi)).max(), 1.0)   # normalised to [-1, 1]
    K = object_camera(48, 48, 4.0)
    T_obj_cam = look_at_pose(0.4, math.radians(30), 4.0)
    image, mask, depth = render_object(obj, T_obj_cam, K, 48, 48)
    assert image.shape == (48, 48, 3) and image.dtype == np.float32
    assert 0.05 < mask.mean() < 0.6 and np.all(depth[~mask] == 0)
    assert np.all((depth[mask] > 4.0 - 1.8) & (depth[mask] < 4.0 + 1.8))
    assert np.allclose(image[~mask], 0.5)
    # the object centre projects to the principal point, and a hit pixel back-projects onto a box surface
    centre = project_object_points(np.zeros((1, 3)), T_obj_cam, K)[0]
    assert np.allclose(centre, [23.5, 23.5], atol=1e-6)
    v, u = np.argwhere(mask)[len(np.argwhere(mask)) // 2]
    p_cam = depth[v, u] * np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], 1.0])
    p_obj = T_obj_cam[:3, :3] @ p_cam + T_obj_cam[:3, 3]
    inside = np.all((p_obj >= obj.lo - 1e-6) & (p_obj <= obj.hi + 1e-6), axis=1)
    on_face = np.any(np.isclose(p_obj, obj.lo, atol=1e-5) | np.isclose(p_obj, obj.hi, atol=1e-5), axis=1)
    assert np.any(inside & on_face)


def _scene(B=2, N=6, seed=0):
    """Keypoints of random 3D points seen from two cameras with a known relative pose (exact uvz)."""
    rng = np.random.default_rng(seed)
    K = torch.tensor([[[50.0, 0, 31.5], [0, 50.0, 31.5], [0, 0, 1]]], dtype=torch.float64).repeat(B, 1, 1)
    X1 = torch.from_numpy(rng.uniform(-0.8, 0.8, (B, N, 3)) + [0, 0, 4.0])
    T = torch.eye(4, dtype=torch.float64).repeat(B, 1, 1)
    for b in range(B):
        T[b, :3, :3] = torch.from_numpy(so3_exp(rng.normal(size=3) * 0.3))
    T[:, :3, 3] = torch.from_numpy(rng.normal(size=(B, 3)) * 0.1)
    X2 = X1 @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]

    def to_uvz(X):
        return torch.stack([50 * X[..., 0] / X[..., 2] + 31.5, 50 * X[..., 1] / X[..., 2] + 31.5, X[..., 2] - 4.0], -1)
    return to_uvz(X1), to_uvz(X2), K, T


def test_consistency_and_pose_losses_vanish_for_true_keypoints():
    uvz1, uvz2, K, T = _scene()
    assert torch.allclose(unproject(uvz1, K, 4.0)[..., 2], uvz1[..., 2] + 4.0)
    assert consistency_loss(uvz1, uvz2, K, T, 4.0, 64).item() < 1e-18
    X1, X2 = unproject(uvz1, K, 4.0), unproject(uvz2, K, 4.0)
    assert pose_loss(X1, X2, T[:, :3, :3], noise_std=0.0).item() < 1e-6
    # a 2-pixel error in one view's u: L_con = (1 / 2N) * mean over batch of (2 / 32)^2 + its reprojection
    moved = uvz2.clone()
    moved[..., 0] += 2.0
    assert consistency_loss(uvz1, moved, K, T, 4.0, 64).item() > 0.5 * (2 / 32) ** 2
    # noise makes the estimate worse but stays differentiable
    g = torch.Generator().manual_seed(0)
    assert pose_loss(X1, X2, T[:, :3, :3], noise_std=0.1, generator=g).item() > 1e-4


def test_separation_silhouette_variance_orientation_known_answers():
    X = torch.tensor([[[0.0, 0, 0], [0.03, 0, 0], [1.0, 0, 0]]])
    # only the pair (0, 1) is closer than delta = 0.05: 2 * (0.05^2 - 0.03^2) / 3^2
    assert separation_loss(X, 0.05).item() == pytest.approx(2 * (0.05 ** 2 - 0.03 ** 2) / 9, rel=1e-6)
    prob = torch.zeros(1, 2, 4, 4)
    prob[0, 0, 1, 1] = 1.0                               # all mass inside
    prob[0, 1, 1, 1] = prob[0, 1, 3, 3] = 0.5            # half outside
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1.0
    assert silhouette_loss(prob, mask).item() == pytest.approx(math.log(2) / 2, rel=1e-5)
    uv = torch.tensor([[[1.0, 1.0], [2.0, 2.0]]])
    # map 1: each half at distance sqrt 2 px = sqrt 2 / 2 normalised units (W / 2 = 2) -> variance 0.5
    assert variance_loss(prob, uv).item() == pytest.approx((0.0 + 0.5) / 2, rel=1e-6)
    ends = torch.tensor([[[10.0, 5.0], [20.0, 5.0]]])
    assert orientation_loss(ends, ends + torch.tensor([[[2.0, 0.0], [0.0, 0.0]]]), 8).item() == pytest.approx(0.25)


def test_object_losses_gradcheck():
    uvz1, uvz2, K, T = _scene(B=1, N=4, seed=1)
    uvz1 = (uvz1 + 0.3).requires_grad_()
    uvz2 = uvz2.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: consistency_loss(a, b, K, T, 4.0, 64), (uvz1, uvz2), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(
        lambda a, b: pose_loss(unproject(a, K, 4.0), unproject(b, K, 4.0), T[:, :3, :3], noise_std=0.0),
        (uvz1, uvz2), eps=1e-6, atol=1e-5)
    X = torch.tensor([[[0.0, 0, 0], [0.02, 0.01, 0], [0.5, 0, 0]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: separation_loss(x, 0.05), (X,), eps=1e-6, atol=1e-5)
    logits = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(1, 1, 3, 3) > 0.4).double()

    def sil_var(lg):
        p = torch.softmax(lg.flatten(2), -1).view_as(lg)
        uv = torch.stack([(p.sum(2) * torch.arange(3.0, dtype=lg.dtype)).sum(-1),
                          (p.sum(3) * torch.arange(3.0, dtype=lg.dtype)).sum(-1)], -1)
        return silhouette_loss(p, mask) + variance_loss(p, uv)
    assert torch.autograd.gradcheck(sil_var, (logits,), eps=1e-6, atol=1e-5)


def test_object_dataset_pairs_are_consistent():
    from kp_vo.config import load_config
    from kp_vo.training.recipes.object_keypoints import RECIPE
    cfg = load_config(RECIPE.config_type, {"data": {"size": 48, "num_objects": 2, "pairs_per_object": 2}})
    ds = RECIPE(cfg).build_dataset("train")
    item = ds[1]
    assert len(ds) == 4 and item["image1"].shape == (3, 48, 48) and item["mask2"].shape == (1, 48, 48)
    assert torch.equal(ds[1]["image1"], item["image1"])                   # deterministic
    # the relative pose is the one of the two random views the item was rendered from
    rng = np.random.default_rng([0, 0, 1])
    T1 = random_view(rng, 4.0)
    T2 = random_view(rng, 4.0)
    assert np.allclose(item["T_2_1"].numpy(), np.linalg.inv(T2) @ T1, atol=1e-5)
    assert item["flag1"].item() == float(item["ends1"][0, 0] > item["ends1"][1, 0])


def test_object_recipe_smoke_loss_decreases(one_thread):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.object_keypoints import RECIPE
    torch.manual_seed(0)
    cfg = load_config(RECIPE.config_type, {"data": {"size": 48, "num_objects": 2, "pairs_per_object": 2},
                                           "width": 16, "num_keypoints": 6})
    recipe = RECIPE(cfg)
    ds = recipe.build_dataset("train")
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    models = recipe.build_models()
    for m in models.values():
        m.train()
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=1e-3)
    losses = []
    for _ in range(5):
        loss, logs = recipe.compute_loss(models, batch, 0)          # same step: same pose-loss noise
        assert {"consistency", "pose", "separation", "silhouette", "variance", "orientation"} <= set(logs)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0]


def test_trainer_runs_object_recipe_and_exports(tmp_path, one_thread):
    from kp_vo.training.trainer import train
    result = train("object_keypoints", overrides={
        "train": {"steps": 3, "batch_size": 2, "output_dir": str(tmp_path / "run"), "progress": False,
                  "log_every": 1, "checkpoint_every": 0, "device": "cpu"},
        "data": {"size": 32, "num_objects": 2, "pairs_per_object": 2}, "width": 8, "num_keypoints": 4})
    assert result.step == 3 and len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert [p.name for p in result.exported] == ["object_keypointnet.onnx"]
    import onnxruntime as ort
    sess = ort.InferenceSession(str(result.exported[0]), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {sess.get_inputs()[0].name: np.random.rand(1, 3, 32, 32).astype(np.float32)})
    assert outs[0].shape == (1, 4, 3)
