"""KP3D training pieces: differentiable Procrustes, photometric losses, keypoint losses, recipe smoke run."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kp_vo.errors import InvalidInputError
from kp_vo.geometry.se3 import rotation_angle_deg, so3_exp
from kp_vo.training.losses_kp3d import KeypointLossConfig, keypoint_pair_losses, lift, project
from kp_vo.training.photometric import (
    automasked_photometric_loss,
    inverse_warp,
    photometric_error,
    smoothness_loss,
    ssim,
)
from kp_vo.training.procrustes_torch import rotation_angular_distance, weighted_procrustes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _random_rotations(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([so3_exp(rng.normal(size=3) * rng.uniform(0.05, 1.0)) for _ in range(n)])


# ---------------------------------------------------------------- Procrustes
def test_procrustes_recovers_known_transform_and_ignores_zero_weight_outliers():
    rng = np.random.default_rng(0)
    R = torch.from_numpy(_random_rotations(3, 1))
    t = torch.from_numpy(rng.normal(size=(3, 3)))
    X = torch.from_numpy(rng.normal(size=(3, 12, 3)))
    Y = X @ R.transpose(1, 2) + t[:, None]
    Y[:, :3] += 5.0                                          # three gross outliers
    w = torch.ones(3, 12, dtype=torch.float64)
    w[:, :3] = 0.0
    R_hat, t_hat = weighted_procrustes(X, Y, w)
    assert torch.allclose(R_hat, R, atol=1e-9) and torch.allclose(t_hat, t, atol=1e-9)
    R_bad, _ = weighted_procrustes(X, Y)                    # unweighted: the outliers bias it
    assert not torch.allclose(R_bad, R, atol=1e-3)


def test_procrustes_returns_a_rotation_not_a_reflection():
    rng = np.random.default_rng(2)
    X = torch.from_numpy(rng.normal(size=(1, 8, 3)))
    Y = X * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)   # mirrored copy: best fit is a reflection
    R_hat, _ = weighted_procrustes(X, Y)
    assert torch.det(R_hat[0]).item() == pytest.approx(1.0, abs=1e-9)
    assert torch.allclose(R_hat[0] @ R_hat[0].T, torch.eye(3, dtype=torch.float64), atol=1e-9)


def test_procrustes_gradcheck():
    rng = np.random.default_rng(3)
    X = torch.from_numpy(rng.normal(size=(2, 5, 3))).requires_grad_()
    R = torch.from_numpy(_random_rotations(2, 4))
    Y = (X.detach() @ R.transpose(1, 2) + 0.05 * torch.from_numpy(rng.normal(size=(2, 5, 3)))).requires_grad_()
    w = torch.from_numpy(rng.uniform(0.5, 1.5, (2, 5))).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: weighted_procrustes(a, b, c), (X, Y, w), eps=1e-6, atol=1e-5)


def test_procrustes_gradcheck_through_the_reflection_fix():
    """Mirrored targets: the best orthogonal fit is a reflection, so the rotation flips one axis of the
    SVD; the analytic derivative must follow the flipped factor."""
    rng = np.random.default_rng(7)
    X = torch.from_numpy(rng.normal(size=(2, 6, 3))).requires_grad_()
    Y = (X.detach() * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)
         + 0.05 * torch.from_numpy(rng.normal(size=(2, 6, 3)))).requires_grad_()
    assert torch.det(weighted_procrustes(X, Y)[0]).detach().numpy() == pytest.approx([1.0, 1.0])
    assert torch.autograd.gradcheck(lambda a, b: weighted_procrustes(a, b)[0], (X, Y), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_procrustes_gradients_stay_finite_on_degenerate_point_sets(dtype):
    """Collinear keypoints (what an untrained keypoint net predicts: every point on the viewing ray) and
    a symmetric planar set give a cross covariance with repeated singular values; the rotation's
    gradient stays finite there, so the pose loss cannot turn the weights into NaN."""
    direction = torch.tensor([0.2, -0.1, 1.0], dtype=dtype)
    line = torch.linspace(-1.0, 1.0, 10, dtype=dtype)[:, None] * direction                 # (10, 3) collinear
    square = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [0, 1.0, 0], [0, -1.0, 0]], dtype=dtype)  # s1 = s2
    for points in (line, square):
        X = points[None].clone().requires_grad_()
        Y = (points[None] @ torch.from_numpy(_random_rotations(1, 8)).to(dtype).transpose(1, 2)).requires_grad_()
        R_hat, _ = weighted_procrustes(X, Y)
        loss = rotation_angular_distance(R_hat, torch.eye(3, dtype=dtype)[None]).sum()
        loss.backward()
        assert torch.isfinite(X.grad).all() and torch.isfinite(Y.grad).all()
        assert torch.allclose(R_hat[0] @ R_hat[0].T, torch.eye(3, dtype=dtype), atol=1e-5)


def test_procrustes_rejects_bad_shapes():
    with pytest.raises(InvalidInputError):
        weighted_procrustes(torch.zeros(1, 4, 3), torch.zeros(1, 5, 3))
    with pytest.raises(InvalidInputError):
        weighted_procrustes(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), torch.ones(1, 3))


def test_angular_distance_matches_rotation_angle():
    Ra, Rb = _random_rotations(20, 5), _random_rotations(20, 6)
    got = torch.rad2deg(rotation_angular_distance(torch.from_numpy(Ra), torch.from_numpy(Rb))).numpy()
    want = np.array([rotation_angle_deg(a.T @ b) for a, b in zip(Ra, Rb)])
    np.testing.assert_allclose(got, want, atol=1e-4)
    R = torch.from_numpy(Ra[:3]).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: rotation_angular_distance(r, torch.from_numpy(Rb[:3])), (R,),
                                    eps=1e-6, atol=1e-5)
    # exactly half a turn apart: the value is pi and the gradient finite (arcsin's is infinite at 1)
    flip = torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=torch.float64))[None].requires_grad_()
    angle = rotation_angular_distance(flip, torch.eye(3, dtype=torch.float64)[None])
    assert angle.item() == pytest.approx(np.pi, abs=1e-6)
    angle.sum().backward()
    assert torch.isfinite(flip.grad).all()


# ---------------------------------------------------------------- photometric
def _texture(h=24, w=32, seed=0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), 1.0)
    return torch.from_numpy(img)[None, None].repeat(1, 3, 1, 1)


def test_ssim_and_photometric_known_answers():
    img = _texture()
    assert torch.allclose(ssim(img, img), torch.ones_like(img), atol=1e-5)
    assert photometric_error(img, img).abs().max().item() < 1e-6
    shifted = torch.roll(img, 2, dims=-1)
    err = photometric_error(img, shifted)
    assert err.shape == (1, 1, 24, 32) and err.mean().item() > 0.02
    # L1 part: a constant offset of 0.1 on a flat image gives (1 - gamma) * 0.1 (SSIM ~ 1 for flat images)
    flat = torch.full((1, 3, 8, 8), 0.5)
    expected = 0.15 * 0.1 + 0.85 * (1 - ssim(flat, flat + 0.1)).mean().item() / 2
    assert photometric_error(flat, flat + 0.1).mean().item() == pytest.approx(expected, rel=1e-4)


def test_photometric_and_smoothness_gradcheck():
    a = _texture(4, 5)[:, :1].double().requires_grad_()
    b = _texture(4, 5, seed=1)[:, :1].double()
    assert torch.autograd.gradcheck(lambda x: photometric_error(x, b), (a,), eps=1e-6, atol=1e-5)
    d = (torch.rand(1, 1, 4, 5, dtype=torch.float64) + 0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: smoothness_loss(x, b), (d,), eps=1e-6, atol=1e-5)
    assert smoothness_loss(torch.ones(1, 1, 4, 5), b.float()).item() == 0.0


def test_inverse_warp_known_translation():
    img = _texture(24, 32)
    K = torch.tensor([[[20.0, 0, 15.5], [0, 20.0, 11.5], [0, 0, 1]]])
    depth = torch.full((1, 1, 24, 32), 5.0)
    T = torch.eye(4)[None]
    synth, valid = inverse_warp(img, depth, T, K)
    assert torch.allclose(synth, img, atol=1e-5) and valid.all()
    T[0, 0, 3] = 0.5                          # context camera 0.5 m to the left: u_c = u_t + fx * 0.5 / 5 = u_t + 2
    synth, valid = inverse_warp(img, depth, T, K)
    assert torch.allclose(synth[..., :, :-2], img[..., :, 2:], atol=1e-5)
    assert valid[..., :, :-2].all() and not valid[..., :, -2:].any()


def test_automask_drops_static_pixels():
    target = _texture(24, 32)
    context = target.clone()
    context[..., 16:] = torch.roll(target, 3, dims=-1)[..., 16:]     # only the right half moved
    synth = target.clone()                                           # a perfect warp
    loss, mask = automasked_photometric_loss(target, [synth], [context])
    assert loss.item() < 1e-6
    assert mask[..., :15].sum() == 0                                 # static half masked out
    assert mask[..., 18:].float().mean() > 0.9                       # moving half kept
    _, mask_off = automasked_photometric_loss(target, [synth], [context], automask=False)
    assert mask_off.all()


# ---------------------------------------------------------------- keypoint losses
def _pair_outputs(T_c_t: np.ndarray):
    """Target keypoints on a grid over a slanted plane, the context keypoints their exact projections."""
    H, W = 64, 96
    K = torch.tensor([[[60.0, 0, 47.5], [0, 60.0, 31.5], [0, 0, 1]]])
    v, u = torch.meshgrid(torch.arange(8) * 8 + 3.5, torch.arange(12) * 8 + 3.5, indexing="ij")
    p_t = torch.stack([u, v], 0)[None]                                      # (1, 2, 8, 12)
    depth_t = 5.0 + 0.02 * torch.arange(W).float().view(1, 1, 1, W).expand(1, 1, H, W)
    P_t = lift(p_t.flatten(2).transpose(1, 2), 5.0 + 0.02 * p_t[:, 0].flatten(1), K)
    T = torch.from_numpy(T_c_t).float()[None]
    P_c = P_t @ T[:, :3, :3].transpose(1, 2) + T[:, None, :3, 3]
    p_c, _ = project(P_c, K)
    depth_c = torch.full((1, 1, H, W), 5.0)
    desc = torch.nn.functional.normalize(torch.randn(1, 16, 8, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    dense = torch.nn.functional.normalize(torch.randn(1, 16, 32, 48), dim=1)
    score = torch.full((1, 1, 8, 12), 0.5)
    kp_t = {"coord": p_t, "descriptor": desc, "score": score, "dense_descriptor": dense}
    kp_c = {"coord": p_c.transpose(1, 2).reshape(1, 2, 8, 12), "descriptor": desc, "score": score,
            "dense_descriptor": dense}
    return kp_t, kp_c, depth_t, depth_c, K


def test_keypoint_pair_losses_recover_the_true_pose():
    cv2.setRNGSeed(0)
    T_true = np.eye(4)
    T_true[:3, :3] = so3_exp(np.array([0.0, 0.03, 0.0]))
    T_true[:3, 3] = [0.1, 0.0, -0.4]
    kp_t, kp_c, depth_t, depth_c, K = _pair_outputs(T_true)
    T_hat, terms = keypoint_pair_losses(kp_t, kp_c, depth_t, depth_c, K, KeypointLossConfig(top_k=96))
    assert terms["pnp_failed"].item() == 0.0 and terms["inliers"].item() > 50
    np.testing.assert_allclose(T_hat[0].numpy(), T_true, atol=2e-3)
    assert terms["geom"].item() < 1e-2
    assert terms["score"].item() == pytest.approx(0.0, abs=1e-6)       # equal scores, equal distances


def test_keypoint_pose_follows_the_depth_scale_so_the_scale_gets_no_gradient():
    """Monocular scale is unobservable: scaling both depth maps by s scales the keypoint pose's
    translation by s (d t / d s = t) and leaves L_geom and L_const unchanged (zero gradient), although
    the RANSAC-PnP initial pose is solved on detached points."""
    cv2.setRNGSeed(0)
    T_true = np.eye(4)
    T_true[:3, :3] = so3_exp(np.array([0.0, 0.03, 0.0]))
    T_true[:3, 3] = [0.1, 0.0, -0.4]
    kp_t, kp_c, depth_t, depth_c, K = _pair_outputs(T_true)
    u = torch.arange(depth_t.shape[-1]).float()
    wrong_t = depth_t * (1.0 + 0.05 * torch.sin(u / 7.0))          # a depth error, so L_geom > 0
    s = torch.ones((), requires_grad=True)
    T_hat, terms = keypoint_pair_losses(kp_t, kp_c, wrong_t * s, depth_c * s, K, KeypointLossConfig(top_k=96))
    t = T_hat[0, :3, 3]
    dt_ds = torch.stack([torch.autograd.grad(t[i], s, retain_graph=True)[0] for i in range(3)])
    assert terms["geom"].item() > 0.05
    d_geom, = torch.autograd.grad(terms["geom"], s, retain_graph=True)
    d_const, = torch.autograd.grad(terms["const"], s)
    np.testing.assert_allclose(dt_ds.numpy(), t.detach().numpy(), atol=1e-5)
    assert abs(d_geom.item()) < 1e-5 and abs(d_const.item()) < 1e-5   # 0.31 and 0.029 with X0's t detached



def test_kp3d_recipe_smoke_loss_decreases(one_thread):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.kp3d import RECIPE
    torch.manual_seed(0)
    cv2.setRNGSeed(0)
    cfg = load_config(RECIPE.config_type, {"data": {"synthetic_frames": 5, "dts": [1], "width": 64, "height": 64,
                                                    "val_fraction": 0.0}})
    recipe = RECIPE(cfg)
    ds = recipe.build_dataset("train")
    item = ds[0]
    assert item["target"].shape == (3, 64, 64) and item["context"].shape == (2, 3, 64, 64)
    assert torch.allclose(item["T_c_t_gt"][0, :3, 3].norm(), torch.tensor(1.0), atol=0.1)   # 1 m per frame
    batch = torch.utils.data.default_collate([item])
    models = recipe.build_models()
    for m in models.values():
        m.train()
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=1e-3)
    losses = []
    for step in range(4):
        loss, logs = recipe.compute_loss(models, batch, step)
        assert torch.isfinite(loss) and {"photo", "geom", "desc", "score", "const", "smooth", "homography",
                                         "homography_matched"} <= set(logs)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert min(losses[-2:]) < losses[0]


def _augmented_dataset(augment: dict, seed):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.kp3d import RECIPE, KeypointAugmentedSnippets, snippet_dataset
    cfg = load_config(RECIPE.config_type, {"data": {"synthetic_frames": 5, "dts": [1], "width": 96, "height": 64,
                                                    "val_fraction": 0.0}, "augment": augment})
    snippets = snippet_dataset(cfg.data, "train")
    return snippets, KeypointAugmentedSnippets(snippets, cfg.augment, seed)


def test_kp3d_homography_view_is_the_target_warped_by_its_homography():
    from kp_vo.datasets.augment import warp_image
    snippets, augmented = _augmented_dataset({"jitter": False}, seed=3)
    raw, item = snippets[1], augmented[1]
    assert torch.equal(item["target"], raw["target"]) and torch.equal(item["context"], raw["context"])
    assert "kpn_target" not in item and "kpn_context" not in item     # the KeypointNet sees the raw frames
    H = item["H_tgt_src"].numpy().astype(np.float64)
    assert not np.allclose(H, np.eye(3), atol=1e-3)
    expected, valid = warp_image(raw["target"].permute(1, 2, 0).numpy(), H)
    assert valid.mean() > 0.3
    # the item's H is the float32 rounding of the one the view was warped with
    np.testing.assert_allclose(item["homography_view"].permute(1, 2, 0).numpy(), expected, atol=5e-3)


def test_kp3d_jitter_changes_only_the_keypointnet_inputs_and_is_seeded_for_validation():
    snippets, augmented = _augmented_dataset({"homography_weight": 0.0, "photometric": {"p": 1.0}}, seed=7)
    raw, item = snippets[0], augmented[0]
    assert "homography_view" not in item
    assert torch.equal(item["target"], raw["target"]) and torch.equal(item["context"], raw["context"])  # depth losses
    assert (item["kpn_target"] - raw["target"]).abs().mean() > 0.01
    assert (item["kpn_context"][0] - item["kpn_context"][1]).abs().mean() > 0.01
    assert float(item["kpn_target"].min()) >= 0.0 and float(item["kpn_target"].max()) <= 1.0
    again = augmented[0]
    assert all(torch.equal(item[k], again[k]) for k in item)


def test_kp3d_without_augmentation_trains_on_the_raw_snippets():
    from kp_vo.config import load_config
    from kp_vo.training.recipes.kp3d import RECIPE, SnippetDataset
    cfg = load_config(RECIPE.config_type, {"data": {"synthetic_frames": 5, "dts": [1], "width": 64, "height": 64,
                                                    "val_fraction": 0.0},
                                           "augment": {"homography_weight": 0.0, "jitter": False}})
    assert isinstance(RECIPE(cfg).build_dataset("train"), SnippetDataset)
    with pytest.raises(InvalidInputError, match="homography_weight"):
        RECIPE(load_config(RECIPE.config_type, {"augment": {"homography_weight": -1.0}})).build_models()


def test_kp3d_dataset_on_kitti():
    root = DATA / "kitti"
    if not (root / "sequences" / "07").is_dir():
        pytest.skip(f"KITTI sample not found at {root}")
    from kp_vo.config import load_config
    from kp_vo.training.recipes.kp3d import RECIPE
    cfg = load_config(RECIPE.config_type, {"data": {"source": str(root), "sequence": "07", "height": 64,
                                                    "width": 192, "max_frames": 12, "dts": [2]}})
    ds = RECIPE(cfg).build_dataset("train")
    item = ds[0]
    assert item["target"].shape == (3, 64, 192) and item["context"].shape == (2, 3, 64, 192)
    # fx scales with the width: 707.0912 * 192 / 1226
    assert item["K"][0, 0].item() == pytest.approx(707.0912 * 192 / 1226, rel=1e-4)
    T = item["T_c_t_gt"][1]
    assert torch.allclose(T[:3, :3] @ T[:3, :3].T, torch.eye(3), atol=1e-4)


def test_trainer_runs_kp3d(tmp_path, one_thread):
    """Three trainer steps; ONNX export is off here (it takes ~10 s for the two ResNets on this machine);
    the recipe's export() is the same export_module path the other recipes' trainer tests run."""
    from kp_vo.training.trainer import train
    result = train("kp3d", overrides={
        "train": {"steps": 3, "batch_size": 1, "output_dir": str(tmp_path / "run"), "progress": False,
                  "log_every": 1, "checkpoint_every": 0, "device": "cpu",
                  "export": False},
        "data": {"synthetic_frames": 6, "dts": [1], "width": 64, "height": 64}})
    assert result.step == 3 and len(result.losses) == 3 and all(np.isfinite(result.losses))
    assert result.exported == []


def test_kp3d_config_errors_are_one_line_kpvo_errors(tmp_path):
    from kp_vo.config import load_config
    from kp_vo.errors import KpVoError, ModelFileError
    from kp_vo.training.recipes.kp3d import RECIPE
    with pytest.raises(InvalidInputError, match="pose_source"):
        RECIPE(load_config(RECIPE.config_type, {"loss": {"pose_source": "posenet"}})).build_models()
    with pytest.raises(ModelFileError):
        RECIPE(load_config(RECIPE.config_type, {"model": {"keypointnet_weights": str(tmp_path / "none.safetensors")}})
               ).build_models()
    with pytest.raises(KpVoError):
        RECIPE(load_config(RECIPE.config_type, {"data": {"height": 60}})).build_dataset("train")


# ---------------------------------------------------------------- KP3D adaptation of the VGG KeypointNet on real video
SHIPPED_KPN = Path(__file__).resolve().parents[1] / "models" / "keypointnet_kp2d.safetensors"


def _vgg_cfg(**sections):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.kp3d import RECIPE
    base = {"data": {"synthetic_frames": 5, "dts": [1], "width": 64, "height": 64, "val_fraction": 0.0},
            "model": {"keypointnet_kind": "keypointnet_vgg", "descriptor_dim": 64, "depthnet_width": 16}}
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value}
    return load_config(RECIPE.config_type, base)


def _photo_folder(folder: Path, n: int = 10) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = cv2.GaussianBlur((rng.random((80, 100, 3)) * 255).astype(np.uint8), (3, 3), 0)
        cv2.imwrite(str(folder / f"p{i:02d}.png"), img)
    return folder


def test_kp3d_vgg_keypointnet_loss_step_gives_finite_gradients_to_the_vgg_weights(tmp_path, one_thread):
    from kp_vo.models.keypointnet_vgg import KeypointNetVGG
    from kp_vo.training.recipes.kp3d import RECIPE
    torch.manual_seed(0)
    cv2.setRNGSeed(0)
    recipe = RECIPE(_vgg_cfg(augment={"photos_dir": str(_photo_folder(tmp_path / "photos")),
                                      "photos_crop": [32, 64]}))
    models = recipe.build_models()
    assert isinstance(models["keypointnet"], KeypointNetVGG)
    for m in models.values():
        m.train()
    batch = torch.utils.data.default_collate([recipe.build_dataset("train")[0]])
    assert batch["photo_source"].shape == (1, 3, 32, 64)
    loss, logs = recipe.compute_loss(models, batch, 0)
    assert torch.isfinite(loss) and {"geom", "desc", "score", "homography", "photos", "photos_matched"} <= set(logs)
    loss.backward()
    grads = [p.grad for p in models["keypointnet"].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert models["keypointnet"].enc[0].conv.weight.grad.abs().sum() > 0       # the trunk learns, not only heads
    assert models["keypointnet"].desc_out.weight.grad.abs().sum() > 0


def test_kp3d_starts_from_the_shipped_float16_vgg_weights_and_frozen_bn_keeps_their_statistics(one_thread):
    if not SHIPPED_KPN.is_file():
        pytest.skip(f"{SHIPPED_KPN} not found")
    from kp_vo.models.checkpoints import read_state_dict
    from kp_vo.training.recipes.kp3d import RECIPE
    shipped, _ = read_state_dict(SHIPPED_KPN)
    recipe = RECIPE(_vgg_cfg(model={"keypointnet_weights": str(SHIPPED_KPN), "keypointnet_frozen_bn": True}))
    models = recipe.build_models()
    kpn = models["keypointnet"]
    state = kpn.state_dict()
    assert set(state) == set(shipped)
    for key in ("enc.0.conv.weight", "desc_out.weight", "score_out.bias", "enc.7.bn.running_var"):
        assert state[key].dtype == torch.float32
        assert torch.equal(state[key], shipped[key].float()), key
    fresh = RECIPE(_vgg_cfg()).build_models()["keypointnet"].state_dict()
    assert not torch.equal(fresh["enc.0.conv.weight"], state["enc.0.conv.weight"])
    for m in models.values():
        m.train()
    mean_before = kpn.enc[0].bn.running_mean.clone()
    batch = torch.utils.data.default_collate([recipe.build_dataset("train")[0]])
    recipe.compute_loss(models, batch, 0)[0].backward()
    assert torch.equal(kpn.enc[0].bn.running_mean, mean_before)                # frozen: statistics not updated
    assert kpn.enc[0].bn.weight.grad is not None                                # ... affine parameters still train


def test_kp3d_rejects_an_unknown_keypointnet_kind():
    from kp_vo.training.recipes.kp3d import RECIPE
    with pytest.raises(InvalidInputError, match="keypointnet_kind"):
        RECIPE(_vgg_cfg(model={"keypointnet_kind": "superpoint"})).build_models()


def test_kp3d_mirror_flips_frames_intrinsics_and_poses():
    from kp_vo.training.recipes.kp3d import RECIPE, snippet_dataset
    cfg = _vgg_cfg(data={"width": 96}, augment={"flip_p": 1.0, "homography_weight": 0.0, "jitter": False})
    raw, item = snippet_dataset(cfg.data, "train")[1], RECIPE(cfg).build_dataset("train")[1]
    assert torch.equal(item["target"], raw["target"].flip(-1)) and torch.equal(item["context"], raw["context"].flip(-1))
    assert item["K"][0, 2].item() == pytest.approx(95 - raw["K"][0, 2].item())
    mirror = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(item["T_c_t_gt"], mirror @ raw["T_c_t_gt"] @ mirror)
    val_cfg = _vgg_cfg(data={"width": 96, "synthetic_frames": 8, "val_fraction": 0.5},
                       augment={"flip_p": 1.0, "homography_weight": 0.0, "jitter": False})
    val = RECIPE(val_cfg).build_dataset("val")                                    # validation is never mirrored
    assert torch.equal(val[0]["target"], snippet_dataset(val_cfg.data, "val")[0]["target"])


def test_kp3d_photo_pairs_split_like_the_homography_recipe(tmp_path):
    from kp_vo.training.recipes.kp3d import RECIPE
    photos = _photo_folder(tmp_path / "photos")
    cfg = _vgg_cfg(data={"synthetic_frames": 8, "val_fraction": 0.5},
                   augment={"photos_dir": str(photos), "photos_crop": [32, 64]})
    train, val = RECIPE(cfg).build_dataset("train"), RECIPE(cfg).build_dataset("val")
    assert {p.name for p in train.pairs.files} == {f"p{i:02d}.png" for i in range(10) if i % 5}
    assert {p.name for p in val.pairs.files} == {"p00.png", "p05.png"}            # held out, validation only
    a, b = val[0], val[0]
    assert all(torch.equal(a[k], b[k]) for k in ("photo_source", "photo_target", "photo_H"))  # fixed pairs
    assert a["photo_target"].shape == (3, 32, 64) and a["photo_H"].shape == (3, 3)


def test_kp3d_real_video_splits_00_and_adds_the_raw_drive_to_training_only():
    root, raw = DATA / "kitti", DATA / "kitti_raw" / "2011_09_26" / "2011_09_26_drive_x130432_sync"
    if not (root / "sequences" / "00").is_dir() or not raw.is_dir():
        pytest.skip(f"KITTI 00 or the raw drive not found under {DATA}")
    from kp_vo.training.recipes.kp3d import snippet_dataset
    cfg = _vgg_cfg(data={"source": str(root), "sequence": "00", "val_fraction": 0.1, "dts": [1, 2],
                         "height": 64, "width": 224, "extra_train": [str(raw)]}).data
    train, val = snippet_dataset(cfg, "train"), snippet_dataset(cfg, "val")
    # 00 frames 0-179 train (dt 1: 178 snippets, dt 2: 176), 180-199 validate (18 + 16); raw drive 91 frames (89 + 87)
    assert [len(d) for d in train.datasets] == [178 + 176, 89 + 87] and len(train) == 530
    assert len(val) == 18 + 16 and min(t - dt for t, dt in val.items) == 180
    assert max(t + dt for t, dt in train.datasets[0].items) <= 179
    item = train[len(train) - 1]                                                  # a raw-drive snippet
    assert item["target"].shape == (3, 64, 224) and bool(item["has_gt"])
    assert item["K"][0, 0].item() == pytest.approx(train.datasets[1].K[0, 0])
