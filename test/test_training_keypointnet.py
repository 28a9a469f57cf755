"""KP2D homography adaptation: homographies, data, losses (gradcheck in float64), smoke training."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kp_vo.config import load_config
from kp_vo.datasets.augment import HomographyConfig, sample_homography, warp_image, warp_points_np
from kp_vo.datasets.photos import list_photos, split_photos
from kp_vo.errors import DatasetError, InvalidInputError
from kp_vo.training.homography import warp_points
from kp_vo.training.losses_kp2d import (KP2DLossConfig, descriptor_triplet_loss, kp2d_loss, location_loss,
                                        nearest_neighbours, score_loss)
from kp_vo.training.recipes import get_recipe
from kp_vo.training.recipes.keypointnet_homography import KeypointHomographyConfig

PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"


def make_textured_images(folder: Path, n: int = 6, size=(120, 160), seed: int = 0) -> Path:
    """Small random textured RGB images (blurred noise + discs) written as PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        img = cv2.resize(rng.uniform(0, 255, (h // 10, w // 10, 3)).astype(np.uint8), (w, h))
        for _ in range(15):
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 15)), colour, -1)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), img)
    return folder


def tiny_config(data_dir: Path, **train) -> dict:
    t = {"steps": 4, "batch_size": 2, "threads": 1, "log_every": 1, "checkpoint_every": 0, "progress": False, "export": False,
         "output_dir": str(data_dir.parent / "run")}
    t.update(train)
    return {"model": "keypointnet_vgg", "descriptor_dim": 64, "data_dir": str(data_dir), "crop_height": 64,
            "crop_width": 96, "samples_per_epoch": 16, "val_samples": 2, "train": t}


# --- homographies ---------------------------------------------------------------------------------

def test_sample_homography_keeps_centre_and_torch_matches_numpy():
    rng = np.random.default_rng(3)
    for _ in range(20):
        H = sample_homography(120, 160, rng)
        c = warp_points_np(np.array([[79.5, 59.5]]), H)[0]
        assert 0 <= c[0] <= 159 and 0 <= c[1] <= 119
        pts = rng.uniform(0, 150, (7, 2))
        got = warp_points(torch.from_numpy(pts)[None], torch.from_numpy(H)[None])[0].numpy()
        np.testing.assert_allclose(got, warp_points_np(pts, H), atol=1e-9)
    assert np.allclose(sample_homography(50, 60, np.random.default_rng(1), HomographyConfig(0, (1, 1), 0, 0)),
                       np.eye(3), atol=1e-9)


def test_warp_image_moves_pixels_where_the_homography_says():
    img = np.zeros((60, 80), np.float32)
    img[20, 30] = 1.0
    H = np.array([[1, 0, 5], [0, 1, -3], [0, 0, 1]], np.float64)        # shift right 5, up 3
    out, valid = warp_image(img, H)
    assert out[17, 35] == pytest.approx(1.0)
    assert not valid[:, :5].any() and valid[:57, 5:].all()


# --- losses ---------------------------------------------------------------------------------------

def test_losses_known_answers():
    pts = torch.tensor([[[10.0, 10.0], [30.0, 40.0]]])
    tgt = torch.tensor([[[13.0, 14.0], [30.0, 40.0], [100.0, 100.0]]])
    d, idx = nearest_neighbours(pts, tgt)
    assert idx.tolist() == [[0, 1]] and torch.allclose(d, torch.tensor([[5.0, 0.0]]))
    assert location_loss(d, torch.tensor([[True, False]])).item() == pytest.approx(5.0)
    # positive == anchor, the only negative orthogonal: distance sqrt(2) > margin -> zero loss
    a = torch.tensor([[[1.0, 0.0]]])
    loss = descriptor_triplet_loss(a, a.clone(), torch.tensor([[[0.0, 1.0]]]), pts[:, :1], tgt[:, 2:],
                                   torch.tensor([[True]]), margin=0.2)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    # the negative lies inside the exclusion radius -> ignored (no valid triplet -> 0)
    loss = descriptor_triplet_loss(a, -a, a.clone(), pts[:, :1], pts[:, :1], torch.tensor([[True]]))
    assert loss.item() == 0.0
    # hardest negative == anchor, positive opposite: 2 - 0 + 0.2
    loss = descriptor_triplet_loss(a, -a, torch.cat([a, -a], 1), pts[:, :1], tgt[:, 1:], torch.tensor([[True]]))
    assert loss.item() == pytest.approx(2.2, abs=1e-5)
    # semi-hard: of the negatives at distance 0 and 1.2 (positive at 1.0) it takes 1.2 -> 1.0 - 1.2 + 0.2 = 0;
    # hardest takes the one at 0 -> 1.0 + 0.2
    p = torch.tensor([[[0.5, 0.8660254]]])                      # |a - p| = 1.0
    n_far = torch.tensor([[[0.28, 0.96]]])                       # |a - n_far| = 1.2
    cands, far_xy = torch.cat([a, n_far], 1), torch.cat([tgt[:, 2:], tgt[:, 2:]], 1)
    semi = descriptor_triplet_loss(a, p, cands, pts[:, :1], far_xy, torch.tensor([[True]]), mining="semihard")
    hard = descriptor_triplet_loss(a, p, cands, pts[:, :1], far_xy, torch.tensor([[True]]), mining="hardest")
    assert semi.item() == pytest.approx(0.0, abs=1e-5) and hard.item() == pytest.approx(1.2, abs=1e-5)
    with pytest.raises(InvalidInputError, match="mining"):
        descriptor_triplet_loss(a, p, cands, pts[:, :1], far_xy, torch.tensor([[True]]), mining="easy")
    s = torch.tensor([[0.5, 0.5]])
    assert score_loss(s, s, torch.tensor([[1.0, 3.0]]), torch.tensor([[True, True]])).item() == pytest.approx(0.0)


def test_losses_gradcheck_float64():
    torch.manual_seed(0)
    B, N, M, D = 1, 5, 6, 4
    warped = (torch.rand(B, N, 2, dtype=torch.float64) * 20).requires_grad_()
    tgt = (torch.rand(B, M, 2, dtype=torch.float64) * 20).requires_grad_()
    mask = torch.ones(B, N, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda p, q: location_loss(nearest_neighbours(p, q)[0], mask), (warped, tgt))
    anc, pos, cand = (torch.randn(B, k, D, dtype=torch.float64, requires_grad=True) for k in (N, N, M))
    assert torch.autograd.gradcheck(
        lambda a, p, c: descriptor_triplet_loss(a, p, c, warped.detach(), tgt.detach(), mask, margin=1.0,
                                                negative_px=2.0), (anc, pos, cand))
    assert torch.autograd.gradcheck(
        lambda a, p, c: descriptor_triplet_loss(a, p, c, warped.detach(), tgt.detach(), mask, margin=1.0,
                                                negative_px=2.0, mining="hardest"), (anc, pos, cand))
    s1, s2 = (torch.rand(B, N, dtype=torch.float64, requires_grad=True) for _ in range(2))
    dist = (torch.rand(B, N, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, d: score_loss(a, b, d, mask), (s1, s2, dist))
    H = (torch.eye(3, dtype=torch.float64) + 0.01 * torch.randn(3, 3, dtype=torch.float64))[None].requires_grad_()
    assert torch.autograd.gradcheck(warp_points, (warped, H))


def _outputs(coord, score, desc, dense):
    return {"coord": coord, "score": score, "descriptor": desc, "dense_descriptor": dense}


def test_kp2d_loss_is_zero_location_for_perfect_keypoints():
    # identity homography, both views predict the same keypoints and descriptors
    hc, wc, d = 4, 6, 8
    v, u = torch.meshgrid(torch.arange(hc) * 8 + 3.5, torch.arange(wc) * 8 + 3.5, indexing="ij")
    coord = torch.stack([u, v])[None].float()
    dense = torch.nn.functional.normalize(torch.randn(1, d, hc * 2, wc * 2), dim=1)
    from kp_vo.models.layers import sample_descriptors
    desc = sample_descriptors(dense, coord, hc * 8, wc * 8)
    score = torch.full((1, 1, hc, wc), 0.5)
    out = _outputs(coord, score, desc, dense)
    total, scalars = kp2d_loss(out, out, torch.eye(3)[None], KP2DLossConfig(border_px=0.0))
    assert scalars["loc"] == pytest.approx(0.0, abs=1e-5) and scalars["matched"] == 1.0
    assert scalars["score"] == pytest.approx(0.0, abs=1e-6)


# --- data -----------------------------------------------------------------------------------------

def test_split_is_documented_and_disjoint(tmp_path):
    files = list_photos(make_textured_images(tmp_path / "imgs", n=11))
    train, held = split_photos(files, 5, "train"), split_photos(files, 5, "eval")
    assert [f.name for f in held] == ["img_00.png", "img_05.png", "img_10.png"]
    assert not set(train) & set(held) and len(train) + len(held) == 11
    with pytest.raises(InvalidInputError):
        split_photos(files, 1, "train")
    with pytest.raises(DatasetError):
        list_photos(tmp_path / "missing")


def test_pairs_are_related_by_their_homography(tmp_path):
    data = make_textured_images(tmp_path / "imgs")
    cfg = load_config(KeypointHomographyConfig, {**tiny_config(data), "photometric": {"p": 0.0, "grayscale_p": 0.0}})
    recipe = get_recipe("keypointnet_homography")(cfg)
    item = recipe.build_dataset("train")[0]
    src, tgt, H = item["source"].numpy(), item["target"].numpy(), item["H_tgt_src"].numpy().astype(np.float64)
    ys, xs = np.mgrid[8:56:4, 8:88:4]
    p = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    q = warp_points_np(p, H)
    ok = (q[:, 0] > 2) & (q[:, 0] < 93) & (q[:, 1] > 2) & (q[:, 1] < 61)
    assert ok.sum() > 20
    qi = np.round(q[ok]).astype(int)
    a = src[:, p[ok, 1].astype(int), p[ok, 0].astype(int)]
    b = tgt[:, qi[:, 1], qi[:, 0]]
    assert np.median(np.abs(a - b)) < 0.08       # same content, up to rounding/interpolation
    assert item["target_valid"].shape == (1, 64, 96)


def test_recipe_rejects_bad_config(tmp_path):
    R = get_recipe("keypointnet_homography")
    with pytest.raises(InvalidInputError):
        R(load_config(R.config_type, {"crop_height": 100}))
    with pytest.raises(InvalidInputError):
        R(load_config(R.config_type, {"model": "depthnet"}))


def _val_scalars(recipe, model) -> dict:
    """KP2D loss scalars of ``model`` on the recipe's fixed validation pairs (batch statistics, no grad)."""
    batch = torch.utils.data.default_collate([recipe.build_dataset("val")[i] for i in range(4)])
    with torch.no_grad():
        loss, scalars = recipe.compute_loss({"keypointnet": model.train()}, batch, 0)
    return {"loss": float(loss), **scalars}


def test_smoke_training_loss_decreases(tmp_path):
    """The descriptor loss falls on held-out pairs without the descriptors collapsing (the location
    term, in px, barely moves in so few steps and dominates the total)."""
    from kp_vo.models.checkpoints import load_weights, read_state_dict
    from kp_vo.training.trainer import seed_everything, train
    data = make_textured_images(tmp_path / "imgs")
    cfg = tiny_config(data, steps=20, lr=2e-3)
    cfg.update({"val_samples": 4, "photometric": {"p": 0.0, "grayscale_p": 0.0},
                "homography": {"perspective": 0.05, "rotation_deg": 5.0, "scale": [0.95, 1.05]}})
    R = get_recipe("keypointnet_homography")
    recipe = R(load_config(R.config_type, cfg))
    seed_everything(0)
    before = _val_scalars(recipe, recipe.build_models()["keypointnet"])
    result = train("keypointnet_homography", cfg)
    assert len(result.losses) == 20 and np.isfinite(result.losses).all()
    trained = recipe.build_models()["keypointnet"]
    load_weights(trained, read_state_dict(result.weights[0])[0], "keypointnet_vgg")
    after = _val_scalars(recipe, trained)
    assert after["loss"] < before["loss"], (before, after)
    assert after["desc"] < 0.8 * before["desc"], (before, after)
    assert after["desc_spread"] > 0.5, after  # not collapsed


def test_real_photos_dataset():
    if not PHOTOS.is_dir():
        pytest.skip(f"real photos not found at {PHOTOS} (../shared/data beside the repository)")
    files = list_photos(PHOTOS)
    held = split_photos(files, 5, "eval")
    assert len(held) == (len(files) + 4) // 5
    R = get_recipe("keypointnet_homography")
    recipe = R(load_config(R.config_type, {"data_dir": str(PHOTOS), "crop_height": 128, "crop_width": 160}))
    val = recipe.build_dataset("val")
    a, b = val[1], val[1]
    assert torch.equal(a["source"], b["source"]) and a["source"].shape == (3, 128, 160)   # deterministic val
    assert 0.0 <= float(a["source"].min()) and float(a["source"].max()) <= 1.0


def test_descriptor_spread_tells_collapsed_from_spread_descriptors():
    from kp_vo.training.losses_kp2d import descriptor_spread

    rng = torch.Generator().manual_seed(0)
    spread = torch.nn.functional.normalize(torch.randn(2, 200, 64, generator=rng), dim=-1)
    collapsed = torch.nn.functional.normalize(torch.ones(2, 200, 64) + 0.01 * torch.randn(2, 200, 64, generator=rng),
                                              dim=-1)
    assert 1.3 < descriptor_spread(spread) < 1.5  # random unit vectors in 64-D: ~sqrt(2)
    assert descriptor_spread(collapsed) < 0.05
