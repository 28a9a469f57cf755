"""ViewSynth training pieces: correspondences, contrastive loss (D2-Net weighted), VSN, recipe smoke run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kp_vo.training.losses_viewsynth import cell_centres, cell_correspondences, contrastive_loss_d2, view_synthesis_loss
from kp_vo.training.vsn import ViewSynthesisNetwork



def _one_hot_descriptors(h: int, w: int, perm=None) -> torch.Tensor:
    n = h * w
    eye = torch.eye(n, dtype=torch.float64)
    if perm is not None:
        eye = eye[perm]
    return eye.T.reshape(1, n, h, w)             # descriptor of cell i = e_perm(i)


def test_contrastive_loss_known_answers():
    h, w = 2, 2
    uv2 = cell_centres(h, w, torch.zeros(1, dtype=torch.float64))[None]   # identity correspondences
    valid = torch.ones(1, 4, dtype=torch.bool)
    s = torch.rand(1, 1, h, w, dtype=torch.float64) + 0.1
    d = _one_hot_descriptors(h, w)
    # matching descriptors, orthogonal negatives at distance sqrt 2 < m: E = 2 * 0.5 (m - sqrt 2)^2
    loss, stats = contrastive_loss_d2(d, d, s, s, uv2, valid, margin=1.5, tau=0.5)
    assert loss.item() == pytest.approx((1.5 - math.sqrt(2)) ** 2, rel=1e-9)
    assert stats["pos"] == pytest.approx(0.0) and stats["matches"] == 4
    # a wide safe radius leaves no negatives: only the positive term (0) remains
    loss, _ = contrastive_loss_d2(d, d, s, s, uv2, valid, margin=1.5, tau=4.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    # swapped descriptors: p = sqrt 2 and a negative at distance 0 both ways -> E = p^2 + m^2
    d2 = _one_hot_descriptors(h, w, perm=[1, 0, 3, 2])
    loss, _ = contrastive_loss_d2(d, d2, s, s, uv2, valid, margin=1.5, tau=0.5)
    assert loss.item() == pytest.approx(2.0 + 1.5 ** 2, rel=1e-9)
    # no valid correspondence: zero, not NaN
    loss, _ = contrastive_loss_d2(d, d, s, s, uv2, torch.zeros_like(valid), margin=1.5, tau=0.5)
    assert loss.item() == 0.0


def test_contrastive_loss_weighting_follows_scores():
    h, w = 1, 2
    uv2 = cell_centres(h, w, torch.zeros(1, dtype=torch.float64))[None]
    valid = torch.ones(1, 2, dtype=torch.bool)
    d1 = _one_hot_descriptors(h, w)
    d2 = d1.clone()
    d2[0, :, 0, 1] = F.normalize(torch.tensor([1.0, 1.0], dtype=torch.float64), dim=0)   # cell 1 mismatched
    e0 = 0.5 * (1.5 - (d1[0, :, 0, 0] - d2[0, :, 0, 1]).norm()) ** 2 + 0.5 * (1.5 - (d2[0, :, 0, 0] - d1[0, :, 0, 1]).norm()) ** 2
    p1 = (d1[0, :, 0, 1] - d2[0, :, 0, 1]).norm()
    e1 = p1 ** 2 + 0.5 * (1.5 - (d1[0, :, 0, 1] - d2[0, :, 0, 0]).norm()).clamp(min=0) ** 2 \
        + 0.5 * (1.5 - (d2[0, :, 0, 1] - d1[0, :, 0, 0]).norm()).clamp(min=0) ** 2
    s1 = torch.tensor([[[[1.0, 3.0]]]], dtype=torch.float64)
    loss, _ = contrastive_loss_d2(d1, d2, s1, s1, uv2, valid, margin=1.5, tau=0.5)
    want = (1.0 * e0 + 9.0 * e1) / 10.0
    assert loss.item() == pytest.approx(want.item(), rel=1e-9)


def test_contrastive_loss_gradcheck():
    g = torch.Generator().manual_seed(0)
    d1 = F.normalize(torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    d2 = F.normalize(torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    s1 = (torch.rand(1, 1, 2, 2, generator=g, dtype=torch.float64) + 0.1).requires_grad_()
    s2 = torch.rand(1, 1, 2, 2, generator=g, dtype=torch.float64) + 0.1
    uv2 = cell_centres(2, 2, s2)[None] + 1.3                                      # off-centre: bilinear sampling
    valid = torch.ones(1, 4, dtype=torch.bool)
    def fn(a, b, c):
        return contrastive_loss_d2(a, b, c, s2, uv2, valid, margin=1.5, tau=0.5)[0]

    assert torch.autograd.gradcheck(fn, (d1, d2, s1), eps=1e-6, atol=1e-5)


def test_cell_correspondences_identity_and_occlusion():
    K = torch.tensor([[[20.0, 0, 15.5], [0, 20.0, 15.5], [0, 0, 1]]])
    depth = torch.full((1, 1, 32, 32), 2.0)
    T = torch.eye(4)[None]
    uv2, valid = cell_correspondences(depth, depth, K, K, T)
    assert torch.allclose(uv2[0], cell_centres(4, 4, depth)) and valid.all()
    T_shift = T.clone()
    T_shift[0, 0, 3] = -0.8                          # 8 px to the left in view 2: the first column leaves the image
    uv2, valid = cell_correspondences(depth, depth, K, K, T_shift)
    assert torch.allclose(uv2[0, :, 0], cell_centres(4, 4, depth)[:, 0] - 8.0, atol=1e-4)
    assert (~valid.view(4, 4)[:, 0]).all() and valid.view(4, 4)[:, 1:].all()
    occluder = depth.clone()
    occluder[..., :, 16:] = 1.0                      # something in front on the right half of view 2
    _, valid = cell_correspondences(depth, occluder, K, K, T)
    assert valid.view(4, 4)[:, :2].all() and not valid.view(4, 4)[:, 2:].any()


def test_vsn_shapes_frustum_and_loss():
    torch.manual_seed(0)
    vsn = ViewSynthesisNetwork(feature_dim=8, f_t=96).eval()
    K = torch.tensor([[[20.0, 0, 15.5], [0, 20.0, 15.5], [0, 0, 1]]]).repeat(2, 1, 1)
    depth = torch.full((2, 1, 32, 32), 2.0)
    T_1_2 = torch.eye(4).repeat(2, 1, 1)
    T_1_2[1, 0, 3] = 0.8                             # view-2 points move right in view 1: the last column leaves
    out = vsn(torch.rand(2, 8, 4, 4), depth, depth, K, K, T_1_2)
    assert out["depth"].shape == (2, 1, 4, 4) and (out["depth"] >= 0).all() and (out["depth"] <= 1).all()
    assert out["frustum"][0].all() and not out["frustum"][1, 0, :, -1].any() and out["frustum"][1, 0, :, :-1].all()
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 2.0], [3.0, 100.0]]]])
    mask = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    assert view_synthesis_loss(pred, target, mask).item() == pytest.approx(2.0)
    assert view_synthesis_loss(pred, target, torch.zeros_like(mask)).item() == 0.0


def _fit(recipe, models: dict, batch: dict, steps: int, lr: float, min_matches: int = 0) -> list[float]:
    """Adam on one fixed batch; the loss of every step (each step must find > min_matches matches)."""
    for m in models.values():
        m.train()
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=lr)
    losses = []
    for step in range(steps):
        loss, logs = recipe.compute_loss(models, batch, step)
        assert logs["matches"] > min_matches
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses


def test_viewsynth_recipe_smoke_loss_decreases(one_thread):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.viewsynth import RECIPE
    torch.manual_seed(0)
    cfg = load_config(RECIPE.config_type, {"data": {"synthetic_frames": 42, "height": 48, "width": 64}})
    recipe = RECIPE(cfg)
    ds = recipe.build_dataset("train")
    gaps = {j - i for i, j in ds.pairs}
    assert gaps == {10, 30}
    item = ds[len(ds) - 1]
    assert item["depth1"].shape == (1, 48, 64) and item["T_2_1"].shape == (4, 4)
    batch = torch.utils.data.default_collate([ds[0], item])
    losses = _fit(recipe, recipe.build_models(), batch, steps=4, lr=1e-4, min_matches=10)
    assert losses[-1] < losses[0]


def test_trainer_runs_viewsynth_and_exports_only_the_features(tmp_path, one_thread):
    import numpy as np
    import onnxruntime as ort

    from kp_vo.training.trainer import train
    result = train("viewsynth", overrides={
        "train": {"steps": 3, "batch_size": 1, "output_dir": str(tmp_path / "run"), "progress": False,
                  "log_every": 1, "checkpoint_every": 0, "device": "cpu"},
        "data": {"synthetic_frames": 42, "height": 32, "width": 32}})
    assert result.step == 3 and all(np.isfinite(result.losses))
    assert [p.name for p in result.exported] == ["viewsynth.onnx"]                # the VSN is training-only
    sess = ort.InferenceSession(str(result.exported[0]), providers=["CPUExecutionProvider"])
    outs = dict(zip([o.name for o in sess.get_outputs()],
                    sess.run(None, {sess.get_inputs()[0].name: np.random.rand(1, 1, 32, 32).astype(np.float32)})))
    assert outs["descriptor"].shape == (1, 512, 4, 4)
    # The run's last checkpoint exports to the same network (the feature net is picked out of it).
    from kp_vo.export import export_onnx
    again = export_onnx("viewsynth", tmp_path / "again.onnx", weights=tmp_path / "run" / "checkpoints" / "step_00000003.safetensors")
    x = np.random.default_rng(1).random((1, 1, 32, 32), dtype=np.float32)
    first = sess.run(["descriptor"], {sess.get_inputs()[0].name: x})[0]
    other = ort.InferenceSession(str(again), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(other.run(["descriptor"], {other.get_inputs()[0].name: x})[0], first, atol=1e-5)


def test_corrupt_depth_noise_edges_and_range():
    import numpy as np

    from kp_vo.training.recipes.viewsynth import SensorNoiseConfig, corrupt_depth
    depth = np.full((64, 80), 4.0, np.float32)
    depth[:, 40:] = 2.0                                          # a depth edge at column 40
    depth[:5, :5] = 0.0                                          # invalid corner
    rng = np.random.default_rng(0)
    assert np.array_equal(corrupt_depth(depth, SensorNoiseConfig(), rng), depth)   # all off: unchanged
    noisy = corrupt_depth(depth, SensorNoiseConfig(axial=0.002), rng)
    far, near = (noisy - depth)[10:, :38], (noisy - depth)[10:, 42:]
    assert far.std() == pytest.approx(0.002 * 16, rel=0.1) and near.std() == pytest.approx(0.002 * 4, rel=0.1)
    assert np.all(noisy[:5, :5] == 0)                            # invalid stays invalid
    holes = corrupt_depth(depth, SensorNoiseConfig(edge_dropout=1.0), rng) == 0
    assert holes[10:, 39:41].all() and not holes[10:, :38].any() and not holes[10:, 42:].any()
    ranged = corrupt_depth(depth, SensorNoiseConfig(max_range=3.0), rng)
    assert np.all(ranged[:, :40] == 0) and np.all(ranged[:, 40:] == 2.0)
    assert np.array_equal(depth[:, 40:], np.full((64, 40), 2.0, np.float32))   # the input is not modified


def test_random_rooms_data_splits_noise_and_width(one_thread):
    from kp_vo.config import load_config
    from kp_vo.training.recipes.viewsynth import RECIPE, VAL_ROOM_SEED
    cfg = load_config(RECIPE.config_type, {
        "width": 8, "data": {"source": "random_rooms", "rooms": 2, "val_rooms": 1, "synthetic_frames": 35,
                             "height": 48, "width": 64, "sensor_noise": {"axial": 0.003, "edge_dropout": 0.5}}})
    recipe = RECIPE(cfg)
    train, val = recipe.build_dataset("train"), recipe.build_dataset("val")
    train_seeds = {ds.sequence.seed for ds in train.datasets}
    assert train_seeds == {0, 1} and [ds.sequence.seed for ds in val.datasets] == [VAL_ROOM_SEED]
    assert len(train) == 2 * ((35 - 10) + (35 - 30))             # pairs 10 and 30 frames apart in each room
    item = train[0]
    d, x = item["depth1"], item["input1"]
    assert d.shape == x.shape == (1, 48, 64) and (d > 0).all()
    assert (x == 0).any() and 0 < (x - d)[x > 0].abs().mean() < 0.05        # holes and noise on the input only
    torch.manual_seed(0)
    models = recipe.build_models()
    out = models["features"]({"image": torch.rand(1, 1, 48, 64)})
    assert out["descriptor"].shape == (1, 64, 6, 8)              # 8 * width channels
    batch = torch.utils.data.default_collate([train[i] for i in (0, 7, 30, 45)])
    losses = _fit(recipe, models, batch, steps=6, lr=1e-3)
    assert losses[-1] < losses[0]


def test_random_rooms_rejects_an_empty_split():
    from kp_vo.config import load_config
    from kp_vo.errors import InvalidInputError
    from kp_vo.training.recipes.viewsynth import RECIPE
    recipe = RECIPE(load_config(RECIPE.config_type, {"data": {"source": "random_rooms", "val_rooms": 0}}))
    with pytest.raises(InvalidInputError, match="at least one val room"):
        recipe.build_dataset("val")
