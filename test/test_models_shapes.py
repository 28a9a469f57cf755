"""Output shapes, value ranges and known answers of the torch models (small inputs, untrained weights)."""

import pytest
import torch

from kp_vo.errors import InvalidInputError
from kp_vo.models import build_model
from kp_vo.models.layers import sample_descriptors
from kp_vo.models.object_keypointnet import spatial_expectation
from kp_vo.models.viewsynth import hard_detection, soft_detection


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("kind,dim", [("keypointnet", 64), ("keypointnet", 256), ("keypointnet_vgg", 256),
                                      ("keypointnet_vgg", 64)])
def test_keypointnet_outputs(kind, dim):
    model = build_model(kind, descriptor_dim=dim)
    with torch.no_grad():
        out = model({"image": torch.randn(2, 3, 64, 96)})
    assert set(out) == {"score", "coord", "descriptor"}
    assert out["score"].shape == (2, 1, 8, 12) and out["coord"].shape == (2, 2, 8, 12)
    assert out["descriptor"].shape == (2, dim, 8, 12)
    s = out["score"]
    assert s.min() >= 0 and s.max() <= 1
    assert torch.all(s[:, :, 0] == 0) and torch.all(s[:, :, :, -1] == 0)        # border cells masked
    assert s[:, :, 1:-1, 1:-1].min() > 0
    u, v = out["coord"][:, 0], out["coord"][:, 1]
    assert u.min() >= 0 and u.max() <= 95 and v.min() >= 0 and v.max() <= 63
    # cell_range 2: a keypoint stays within one cell (7 px) of its cell centre.
    centre_u = torch.arange(12) * 8 + 3.5
    assert (u - centre_u).abs().max() <= 7.0 + 1e-5
    assert torch.allclose(out["descriptor"].norm(dim=1), torch.ones(2, 8, 12), atol=1e-5)


def test_keypointnet_training_mode_has_dense_map():
    model = build_model("keypointnet", descriptor_stride=4).train()
    out = model({"image": torch.randn(1, 3, 64, 64)})
    assert out["dense_descriptor"].shape == (1, 64, 16, 16)


@pytest.mark.parametrize("kind", ["keypointnet", "keypointnet_vgg"])
def test_keypoint_coordinates_stay_float32_under_half_precision_autocast(kind):
    # Half precision has 1-px spacing past 1024 px; KITTI frames are 1226 px wide. bfloat16 on the CPU
    # stands in for CUDA's float16 autocast (coarser still, so a stricter check).
    model = build_model(kind, descriptor_dim=64).eval()
    image = torch.rand(1, 3, 64, 1280)
    with torch.no_grad():
        ref = model({"image": image})["coord"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            coord = model({"image": image})["coord"]
    assert coord.dtype == torch.float32
    assert float(coord[:, 0].max()) > 1200
    assert float((coord - ref).abs().max()) < 0.05


def test_sample_descriptors_hits_cell_centres():
    # A stride-4 dense map whose channel 0 is the cell column index: sampling at the pixel centre of
    # cell j (u = 4 j + 1.5) must return exactly j before normalisation (checked via a 2-channel trick).
    dense = torch.zeros(1, 2, 4, 6)
    dense[0, 0] = torch.arange(6).float().view(1, 6)
    dense[0, 1] = 1.0
    coords = torch.stack([torch.tensor([[1.5, 9.5, 21.5]]), torch.tensor([[1.5, 5.5, 13.5]])], 0).unsqueeze(0)
    d = sample_descriptors(dense, coords, 16, 24)[0, :, 0]        # (2, 3)
    ratio = d[0] / d[1]
    assert torch.allclose(ratio, torch.tensor([0.0, 2.0, 5.0]), atol=1e-5)


def test_depthnet_range_and_scales():
    model = build_model("depthnet", min_depth=0.5, max_depth=50.0)
    with torch.no_grad():
        out = model({"image": torch.randn(1, 3, 64, 96)})
    assert list(out) == ["inv_depth"] and out["inv_depth"].shape == (1, 1, 64, 96)
    inv = out["inv_depth"]
    assert inv.min() >= 1 / 50.0 and inv.max() <= 1 / 0.5
    train_out = model.train()({"image": torch.randn(1, 3, 64, 96)})
    assert {k: tuple(v.shape) for k, v in train_out.items()} == {
        "inv_depth": (1, 1, 64, 96), "inv_depth_1": (1, 1, 32, 48), "inv_depth_2": (1, 1, 16, 24),
        "inv_depth_3": (1, 1, 8, 12)}


def test_reduced_width_depthnet_and_posenet():
    full, half = build_model("depthnet"), build_model("depthnet", width=32)
    n_full, n_half = (sum(p.numel() for p in m.parameters()) for m in (full, half))
    assert 0.2 < n_half / n_full < 0.3                       # conv weights scale with width^2
    assert half.encoder.channels == (32, 32, 64, 128, 256) and full.encoder.channels == (64, 64, 128, 256, 512)
    assert half.spec().options["width"] == 32
    with torch.no_grad():
        inv = half({"image": torch.randn(1, 3, 64, 96)})["inv_depth"]
    assert inv.shape == (1, 1, 64, 96) and inv.min() >= 1 / 100.0 and inv.max() <= 1 / 0.1
    pose = build_model("posenet", width=16, encoder_width=16)
    assert pose.encoder.channels[-1] == 128 and pose.spec().options == {"width": 16, "encoder_width": 16}
    with torch.no_grad():
        assert pose({"image": torch.randn(2, 6, 64, 96)})["T_c_t"].shape == (2, 4, 4)


def test_viewsynth_outputs():
    model = build_model("viewsynth")
    with torch.no_grad():
        out = model({"image": torch.rand(1, 1, 64, 96)})
    assert out["descriptor"].shape == (1, 512, 8, 12)
    assert torch.allclose(out["score"].sum(), torch.tensor(1.0), atol=1e-5)
    assert set(out["keypoint_mask"].unique().tolist()) <= {0.0, 1.0}


def test_d2_detection_known_answer():
    f = torch.zeros(1, 2, 5, 5)
    f[0, 0, 2, 2] = 3.0          # channel-0 peak, strongest channel there -> detected
    f[0, 1, 2, 1] = 1.0          # channel-1 local max, strongest there -> detected
    f[0, 0, 2, 1] = 0.5
    mask = hard_detection(f)[0, 0]
    assert mask[2, 2] == 1 and mask[2, 1] == 1 and mask.sum() == 2
    soft = soft_detection(f)[0, 0]
    assert torch.isclose(soft.sum(), torch.tensor(1.0)) and soft.argmax() == 2 * 5 + 2


def test_object_keypointnet_outputs_and_expectation():
    model = build_model("object_keypointnet", num_keypoints=5, width=16)
    with torch.no_grad():
        out = model({"image": torch.randn(2, 3, 32, 40)})
    assert out["uvz"].shape == (2, 5, 3) and out["prob"].shape == (2, 5, 32, 40)
    assert torch.allclose(out["prob"].flatten(2).sum(-1), torch.ones(2, 5), atol=1e-5)
    assert set(out["orientation"].flatten().tolist()) <= {0.0, 1.0}
    uv = out["uvz"][..., :2]
    assert uv.min() >= 0 and uv[..., 0].max() <= 39 and uv[..., 1].max() <= 31
    logits = torch.full((1, 1, 6, 7), -1e4)
    logits[0, 0, 4, 5] = 0.0
    prob, e = spatial_expectation(logits)
    assert torch.allclose(e[0, 0], torch.tensor([5.0, 4.0]))
    forced = model({"image": torch.randn(1, 3, 32, 40), "orientation": torch.tensor([0.0])})
    assert forced["orientation"].item() == 0.0


@pytest.mark.parametrize("kind,opts", [("keypointnet", {"descriptor_dim": 128}), ("depthnet", {"min_depth": 0}),
                                       ("depthnet", {"width": 30}),
                                       ("nope", {}), ("viewsynth", {"bogus": 1})])
def test_bad_model_options(kind, opts):
    with pytest.raises(InvalidInputError):
        build_model(kind, **opts)
