"""Keypoint selection on the torch device (kp_vo.runtime.torch_select) against the host selection of
kp_vo.runtime.extractors, on CPU torch: same keypoints, scores and descriptors in the same order."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import kp_vo.runtime  # noqa: F401  (registers "keypointnet", "viewsynth")
from kp_vo.features.base import create_extractor
from kp_vo.runtime.extractors import keypointnet_features
from kp_vo.runtime.torch_select import gather_features, keypointnet_select, viewsynth_select

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "keypointnet_kp2d.safetensors"
NET_HW, IMAGE_HW = (96, 160), (110, 150)       # non-integer scale between network and image pixels


def random_outputs(seed: int, descriptor_dim: int = 16) -> dict[str, np.ndarray]:
    """KeypointNet-like outputs for a 96x160 network input: "score" (1,1,12,20) on eight levels (many ties,
    border cells 0), "coord" (1,2,12,20) cell centre + offset up to 7 px clamped to the input, and unit
    "descriptor" (1,D,12,20)."""
    rng = np.random.default_rng(seed)
    hc, wc = NET_HW[0] // 8, NET_HW[1] // 8
    score = rng.integers(0, 8, (hc, wc)).astype(np.float32) / 8
    score[[0, -1]], score[:, [0, -1]] = 0, 0
    v, u = np.mgrid[0:hc, 0:wc] * 8 + 3.5
    coord = np.stack([u, v]) + rng.uniform(-7, 7, (2, hc, wc))
    coord = np.stack([coord[0].clip(0, NET_HW[1] - 1), coord[1].clip(0, NET_HW[0] - 1)]).astype(np.float32)
    desc = rng.normal(size=(descriptor_dim, hc, wc)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=0, keepdims=True)
    return {"score": score[None, None], "coord": coord[None], "descriptor": desc[None]}


def device_features(out: dict[str, np.ndarray], **options):
    """The torch selection of ``out`` on CPU torch, as Features."""
    t = {k: torch.from_numpy(v[0]) for k, v in out.items()}
    index, kp = keypointnet_select(t["score"][0], t["coord"], NET_HW, IMAGE_HW, **options)
    return gather_features(index, kp, t["score"][0], t["descriptor"])


def assert_same_features(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-5)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_allclose(a.descriptors, b.descriptors, atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("radius_px", [0.0, 4.0, 9.0, 30.0])
@pytest.mark.parametrize("cell_nms,threshold,max_keypoints", [(False, 0.0, 0), (False, 0.3, 25), (True, 0.0, 10)])
def test_device_selection_equals_host_selection(seed, radius_px, cell_nms, threshold, max_keypoints):
    out = random_outputs(seed)
    options = {"threshold": threshold, "cell_nms": cell_nms, "radius_px": radius_px, "max_keypoints": max_keypoints}
    host = keypointnet_features(out, NET_HW, IMAGE_HW, **options)
    assert len(host) > 0
    assert_same_features(host, device_features(out, **options))


@pytest.mark.parametrize("radius_px", [3.0, 8.0, 20.0])
def test_device_selection_respects_radius_count_and_norm(radius_px):
    out = random_outputs(5, descriptor_dim=32)
    f = device_features(out, threshold=0.0, cell_nms=False, radius_px=radius_px, max_keypoints=12)
    gaps = np.linalg.norm(f.keypoints[:, None] - f.keypoints[None], axis=-1) + 1e3 * np.eye(len(f))
    assert len(f) == 12 and gaps.min() > radius_px                    # no two kept within the radius
    assert np.all(np.diff(f.scores) <= 0)                             # best first
    np.testing.assert_allclose(np.linalg.norm(f.descriptors, axis=1), 1.0, atol=1e-5)
    assert f.keypoints.dtype == f.scores.dtype == f.descriptors.dtype == np.float32
    everyone = device_features(out, threshold=0.0, cell_nms=False, radius_px=radius_px, max_keypoints=0)
    assert_same_features(f, everyone.subset(np.arange(12)))          # top-k of the survivors


def test_device_selection_with_no_candidate():
    out = random_outputs(0)
    f = device_features(out, threshold=1.0, cell_nms=False, radius_px=4.0, max_keypoints=10)
    assert len(f) == 0 and f.descriptors.shape == (0, 16)


def textured_image(height: int = 240, width: int = 320) -> np.ndarray:
    """(H, W, 3) uint8: seeded random 8x8-pixel blocks, blurred, so corners exist without data files."""
    rng = np.random.default_rng(0)
    blocks = cv2.resize(rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8), (width, height),
                        interpolation=cv2.INTER_NEAREST)
    return cv2.GaussianBlur(blocks, (5, 5), 1.5)


@pytest.mark.skipif(not SHIPPED.is_file(), reason="models/keypointnet_kp2d.safetensors is absent")
def test_shipped_keypointnet_torch_path_equals_host_path(monkeypatch):
    """The shipped KP2D KeypointNet on CPU torch: selection with torch ops (the CUDA path, forced here) gives
    the host's features, and the dense maps never come back to the host (TorchModel.run is not called)."""
    ext = create_extractor("keypointnet", backend="torch", kind="keypointnet_vgg", descriptor_dim=64,
                           model_path=str(SHIPPED), device="cpu", threads=2, max_keypoints=300)
    image = textured_image()
    assert not ext.on_device                                          # CPU torch selects with numpy
    host = ext.extract(image)
    ext.on_device = True
    monkeypatch.setattr(ext.net, "run", lambda x: pytest.fail("dense outputs copied to the host"))
    device = ext.extract(image)
    assert len(device) == 300
    assert_same_features(host, device)


def test_viewsynth_torch_path_equals_host_path(monkeypatch):
    torch.manual_seed(0)
    ext = create_extractor("viewsynth", backend="torch", device="cpu", threads=2, max_keypoints=40)
    yy, xx = np.mgrid[0:60, 0:90]
    depth = (2.0 + 0.5 * np.sin(xx / 6.0) * np.cos(yy / 5.0)).astype(np.float32)
    host = ext.extract(depth)
    ext.on_device = True
    monkeypatch.setattr(ext.net, "run", lambda x: pytest.fail("dense outputs copied to the host"))
    device = ext.extract(depth)
    assert len(device) > 0
    assert_same_features(host, device)


def test_viewsynth_select_counts_and_masks():
    score = torch.tensor([[0.9, 0.1, 0.5], [0.7, 0.7, 0.2]])
    valid = torch.tensor([[True, True, False], [True, True, True]])
    index, kp = viewsynth_select(score, valid, (16, 24), (16, 24), threshold=0.15, max_keypoints=3)
    assert index.tolist() == [0, 3, 4]                                # 0.5 masked, ties in cell order
    np.testing.assert_allclose(kp[index].numpy(), [[3.5, 3.5], [3.5, 11.5], [11.5, 11.5]])
