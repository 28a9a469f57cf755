"""The torch extractors on a CUDA device (marker ``gpu``; every test skips without CUDA): selection on the
GPU equals the host selection of the same outputs, and the CUDA features agree with the CPU features in
float32 (cuDNN may use TF32) and, more loosely, under float16 autocast. scripts/gpu_check.sh runs them."""

from pathlib import Path

import numpy as np
import pytest
import torch
from test_runtime_torch_select import NET_HW, IMAGE_HW, assert_same_features, random_outputs, textured_image

import kp_vo.runtime  # noqa: F401  (registers "keypointnet", "viewsynth")
from kp_vo.features.base import Features, create_extractor
from kp_vo.runtime.extractors import keypointnet_features
from kp_vo.runtime.preprocess import image_to_input
from kp_vo.runtime.torch_select import gather_features, keypointnet_select

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (torch.cuda.is_available() "
                                                                       "is False on this machine)")]

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "keypointnet_kp2d.safetensors"
needs_shipped = pytest.mark.skipif(not SHIPPED.is_file(), reason="models/keypointnet_kp2d.safetensors is absent")
KITTI_SIZE = (368, 1224)                  # a KITTI frame's size rounded to the network's multiple of 8


def shipped_extractor(device: str, **options):
    return create_extractor("keypointnet", backend="torch", kind="keypointnet_vgg", descriptor_dim=64,
                            model_path=str(SHIPPED), device=device, max_keypoints=1000, **options)


def agreement(reference: Features, other: Features, max_px: float) -> tuple[float, float]:
    """(share of ``reference`` keypoints with an ``other`` keypoint within ``max_px``, median descriptor dot
    product of those pairs)."""
    gaps = np.linalg.norm(reference.keypoints[:, None] - other.keypoints[None], axis=-1)
    nearest = gaps.argmin(1)
    near = gaps[np.arange(len(reference)), nearest] <= max_px
    dots = np.sum(reference.descriptors[near] * other.descriptors[nearest[near]], axis=1)
    return float(near.mean()), float(np.median(dots)) if len(dots) else 0.0


@pytest.mark.parametrize("radius_px", [0.0, 4.0, 30.0])
def test_cuda_selection_equals_host_selection(radius_px):
    out = random_outputs(3)
    options = {"threshold": 0.0, "cell_nms": False, "radius_px": radius_px, "max_keypoints": 40}
    host = keypointnet_features(out, NET_HW, IMAGE_HW, **options)
    t = {k: torch.from_numpy(v[0]).cuda() for k, v in out.items()}
    index, kp = keypointnet_select(t["score"][0], t["coord"], NET_HW, IMAGE_HW, **options)
    assert index.is_cuda and kp.is_cuda                               # selected where the maps are
    assert_same_features(host, gather_features(index, kp, t["score"][0], t["descriptor"]))


@needs_shipped
def test_shipped_keypointnet_cuda_selection_equals_host_selection_of_its_outputs():
    ext = shipped_extractor("cuda")
    assert ext.on_device
    image = textured_image(*KITTI_SIZE)
    size = ext.net_size(*KITTI_SIZE)
    out = ext.net.run_on_device(image_to_input(image, ext.net.meta, size))
    assert all(v.is_cuda for v in out.values())
    host = keypointnet_features({k: v.float().cpu().numpy() for k, v in out.items()}, size, KITTI_SIZE,
                                threshold=0.0, cell_nms=False, radius_px=ext.nms_radius_px, max_keypoints=1000)
    assert_same_features(host, ext._select_on_device(out, size, KITTI_SIZE))


@needs_shipped
@pytest.mark.parametrize("precision,max_px,min_share,min_dot", [("fp32", 0.1, 0.9, 0.99), ("fp16", 0.5, 0.75, 0.95)])
def test_shipped_keypointnet_cuda_agrees_with_cpu(precision, max_px, min_share, min_dot):
    image = textured_image(*KITTI_SIZE)
    cpu = shipped_extractor("cpu").extract(image)
    ext = shipped_extractor("cuda", precision=precision)
    assert ext.provider == "torch-cuda" + ("-fp16" if precision == "fp16" else "")
    gpu = ext.extract(image)
    assert abs(len(gpu) - len(cpu)) <= 0.05 * len(cpu)
    assert gpu.keypoints.dtype == gpu.descriptors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(gpu.descriptors, axis=1), 1.0, atol=1e-4)
    share, dot = agreement(cpu, gpu, max_px)
    assert share >= min_share and dot >= min_dot, (f"{precision}: {share:.1%} of the CPU keypoints within "
                                                   f"{max_px} px on CUDA, median descriptor dot {dot:.4f}")


def test_viewsynth_cuda_selection_equals_host_path():
    torch.manual_seed(0)
    ext = create_extractor("viewsynth", backend="torch", device="cuda", max_keypoints=40)
    assert ext.on_device
    yy, xx = np.mgrid[0:120, 0:160]
    depth = (2.0 + 0.5 * np.sin(xx / 6.0) * np.cos(yy / 5.0)).astype(np.float32)
    ext.on_device = False
    host = ext.extract(depth)
    ext.on_device = True
    device = ext.extract(depth)
    assert len(device) == len(host) > 0
    share, dot = agreement(host, device, 1e-3)
    assert share >= 0.95 and dot >= 0.999, f"{share:.1%} of the keypoints equal, median descriptor dot {dot:.4f}"
