"""Runtime extractors: ONNX Runtime vs torch backends on a real photo, size handling, depth, providers."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import kp_vo.runtime  # noqa: F401  (registers "keypointnet", "viewsynth", "depthnet")
from kp_vo.errors import InvalidInputError
from kp_vo.export import export_onnx
from kp_vo.features.base import create_depth_estimator, create_extractor
from kp_vo.models import build_model
from kp_vo.runtime.extractors import suppress_close
from kp_vo.runtime.preprocess import fit_size, to_input_pixels
from kp_vo.runtime.session import OnnxModel, choose_providers

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTO = DATA / "photos" / "opencv_baboon.jpg"


@pytest.fixture(scope="module")
def keypointnet_files(tmp_path_factory):
    """(weights .safetensors, exported .onnx) of one seeded KP3D KeypointNet."""
    folder = tmp_path_factory.mktemp("rt")
    torch.manual_seed(0)
    model = build_model("keypointnet")
    weights = folder / "kpn.safetensors"
    save_file(model.state_dict(), str(weights))
    return weights, export_onnx("keypointnet", folder / "kpn.onnx", weights=weights)


@pytest.fixture(scope="module")
def photo():
    if not PHOTO.exists():
        pytest.skip("real photos not found at ../shared/data/photos")
    return cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (150, 110)), cv2.COLOR_BGR2RGB)


def test_onnx_and_torch_extractors_agree_on_real_photo(keypointnet_files, photo):
    weights, onnx_path = keypointnet_files
    opts = {"max_keypoints": 50, "threads": 2, "device": "cpu"}
    a = create_extractor("keypointnet", model_path=onnx_path, **opts)
    b = create_extractor("keypointnet", model_path=weights, backend="torch", **opts)
    assert a.provider == "CPUExecutionProvider" and b.provider == "torch-cpu"
    fa, fb = a.extract(photo), b.extract(photo)
    assert fa.metric == "l2" and len(fa) == 50 and fa.descriptors.shape == (50, 64)
    assert np.all(np.diff(fa.scores) <= 0)                                          # sorted by score
    assert fa.keypoints[:, 0].max() <= 149 and fa.keypoints[:, 1].max() <= 109 and fa.keypoints.min() >= 0
    np.testing.assert_allclose(np.linalg.norm(fa.descriptors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(fa.keypoints, fb.keypoints, atol=1e-3)
    np.testing.assert_allclose(fa.descriptors, fb.descriptors, atol=1e-4)
    np.testing.assert_allclose(fa.scores, fb.scores, atol=1e-5)


def test_selection_options(keypointnet_files, photo):
    _, onnx_path = keypointnet_files
    all_cells = create_extractor("keypointnet", model_path=onnx_path, device="cpu", max_keypoints=0,
                                 nms_radius_px=0).extract(photo)
    h, w = fit_size(110, 150, 32)
    assert (h, w) == (96, 160)
    assert len(all_cells) == (h // 8 - 2) * (w // 8 - 2)              # every non-border cell (border scores 0)
    nms = create_extractor("keypointnet", model_path=onnx_path, device="cpu", max_keypoints=0,
                           cell_nms=True, nms_radius_px=0).extract(photo)
    assert 0 < len(nms) < len(all_cells)
    thr = float(np.median(all_cells.scores))
    high = create_extractor("keypointnet", model_path=onnx_path, device="cpu", max_keypoints=0,
                            score_threshold=thr, nms_radius_px=0).extract(photo)
    assert np.all(high.scores > thr) and len(high) <= len(all_cells) // 2 + 1
    small = create_extractor("keypointnet", model_path=onnx_path, device="cpu", input_height=64, input_width=96,
                             nms_radius_px=0)
    f = small.extract(photo)
    assert len(f) == 6 * 10 and f.keypoints[:, 0].max() <= 149           # mapped back to the 150x110 photo


def test_suppress_close_known_answer():
    # Best first: 0 suppresses 1 (1 px away); 1 would suppress 2, but 1 is gone and 2 is 3 px from 0.
    uv = np.array([[10.0, 10.0], [11.0, 10.0], [13.0, 10.0], [10.0, 10.5], [50.0, 50.0]])
    assert suppress_close(uv, 2.0).tolist() == [0, 2, 4]
    assert suppress_close(uv, 0.0).tolist() == [0, 1, 2, 3, 4]
    assert suppress_close(uv[:1], 2.0).tolist() == [0]


def test_keypoint_suppression_in_the_extractor(keypointnet_files, photo):
    _, onnx_path = keypointnet_files
    f = create_extractor("keypointnet", model_path=onnx_path, device="cpu", max_keypoints=40,
                         nms_radius_px=6.0).extract(photo)
    gaps = np.linalg.norm(f.keypoints[:, None] - f.keypoints[None], axis=-1) + 1e3 * np.eye(len(f))
    assert len(f) == 40 and gaps.min() > 6.0 - 1e-3                      # max_keypoints counts the survivors
    assert np.all(np.diff(f.scores) <= 0)                                # still best first
    with pytest.raises(InvalidInputError, match="nms_radius_px must be >= 0"):
        create_extractor("keypointnet", model_path=onnx_path, nms_radius_px=-1)


def test_input_checks(keypointnet_files):
    _, onnx_path = keypointnet_files
    net = OnnxModel(onnx_path, expected_kind="keypointnet", device="cpu", threads=1)
    with pytest.raises(InvalidInputError, match="multiple of 32"):
        net.run(np.zeros((1, 3, 40, 64), np.float32))
    with pytest.raises(InvalidInputError, match="1, 3, H, W|B, 3, H, W"):
        net.run(np.zeros((1, 1, 64, 64), np.float32))
    ext = create_extractor("keypointnet", model_path=onnx_path, device="cpu")
    with pytest.raises(InvalidInputError):
        ext.extract(np.zeros((64, 64), np.float32))
    with pytest.raises(InvalidInputError):
        create_extractor("keypointnet", model_path=onnx_path, backend="tensorflow")


def test_provider_choice_and_auto_fallback(keypointnet_files):
    import onnxruntime as ort
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("auto", avail) == avail
    assert choose_providers("cpu", avail) == ["CPUExecutionProvider"]
    assert choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(InvalidInputError):
        choose_providers("tpu", avail)
    net = OnnxModel(keypointnet_files[1], device="auto")
    assert net.provider in ort.get_available_providers() and net.provider == net.session.get_providers()[0]


def test_torch_precision_option():
    with pytest.raises(InvalidInputError, match="fp16' needs CUDA"):
        create_extractor("keypointnet", backend="torch", device="cpu", precision="fp16")
    with pytest.raises(InvalidInputError, match="unknown precision 'int4'"):
        create_extractor("keypointnet", backend="torch", device="cpu", precision="int4")
    with pytest.raises(InvalidInputError, match="unknown options"):       # fixed at export for .onnx files
        create_extractor("keypointnet", precision="fp16")


def test_size_helpers():
    assert fit_size(370, 1226, 32, target=(192, 640)) == (192, 640)
    assert fit_size(370, 1226, 32, scale=0.5) == (192, 608)
    assert fit_size(10, 10, 8) == (8, 8)
    uv = to_input_pixels(np.array([[0.0, 0.0], [63.0, 31.0]], np.float32), (32, 64), (64, 128))
    np.testing.assert_allclose(uv, [[0.5, 0.5], [126.5, 62.5]])         # pixel centres scale about -0.5


def test_depthnet_estimator_scale(photo):
    torch.manual_seed(0)
    est = create_depth_estimator("depthnet", backend="torch", device="cpu", min_depth=1.0, max_depth=80.0)
    depth = est.estimate(photo)
    assert depth.shape == photo.shape[:2] and depth.dtype == np.float32
    assert depth.min() >= 1.0 - 1e-3 and depth.max() <= 80.0 + 1e-2
    est.scale = 2.5
    np.testing.assert_allclose(est.estimate(photo), 2.5 * depth, rtol=1e-5)
    with pytest.raises(InvalidInputError):
        create_depth_estimator("depthnet", backend="torch", scale=0.0)


def test_depthnet_estimator_runs_at_the_size_its_file_records(photo, tmp_path, monkeypatch):
    from kp_vo.cli import main as cli_main
    from kp_vo.export import read_metadata

    path = tmp_path / "d.onnx"
    assert cli_main(["export", "depthnet", "--output", str(path), "--width", "8", "--trained-size", "64x96"]) == 0
    assert read_metadata(path).trained_input_hw == (64, 96)
    seen = []
    est = create_depth_estimator("depthnet", model_path=str(path), threads=1)
    run = est.net.run
    monkeypatch.setattr(est.net, "run", lambda x: seen.append(x.shape) or run(x))
    assert est.estimate(photo).shape == photo.shape[:2]
    given = create_depth_estimator("depthnet", model_path=str(path), threads=1, input_height=64, input_width=128)
    run2 = given.net.run
    monkeypatch.setattr(given.net, "run", lambda x: seen.append(x.shape) or run2(x))
    given.estimate(photo)
    assert [s[-2:] for s in seen] == [(64, 96), (64, 128)]        # recorded size, unless the user sets one
    with pytest.raises(SystemExit):
        cli_main(["export", "depthnet", "--output", str(tmp_path / "x.onnx"), "--trained-size", "96"])


def test_viewsynth_extractor_on_synthetic_depth():
    torch.manual_seed(0)
    ext = create_extractor("viewsynth", backend="torch", device="cpu", max_keypoints=30)
    yy, xx = np.mgrid[0:60, 0:90]
    depth = (2.0 + 0.5 * np.sin(xx / 6.0) * np.cos(yy / 5.0)).astype(np.float32)
    depth[:5, :5] = 0.0
    f = ext.extract(depth)
    assert 0 < len(f) <= 30 and f.descriptors.shape[1] == 512 and np.all(np.diff(f.scores) <= 0)
    assert f.keypoints[:, 0].max() <= 89 and f.keypoints[:, 1].max() <= 59
    mm = ext.extract((depth * 1000).astype(np.uint16))                       # uint16 millimetres
    np.testing.assert_allclose(mm.keypoints, f.keypoints)
    with pytest.raises(InvalidInputError, match="no valid"):
        ext.extract(np.zeros((40, 40), np.float32))


def test_registration_is_cheap():
    import subprocess
    import sys
    code = ("import sys, kp_vo.runtime; from kp_vo.features.base import available_extractors; "
            "print('keypointnet' in available_extractors(), 'viewsynth' in available_extractors(), "
            "'torch' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "False", "False"]
    code = ("import sys; from kp_vo.runtime.session import OnnxModel; from kp_vo.export import read_metadata; "
            "print('torch' in sys.modules)")                     # the ONNX path never needs torch
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False"]


def test_onnx_keypointnet_takes_the_kind_its_file_declares(tmp_path):
    """An exported KP2D (VGG) KeypointNet serves as extractor "keypointnet" without naming its kind; an
    explicit kind must match the file."""
    from kp_vo.errors import ModelFileError
    torch.manual_seed(0)
    path = export_onnx("keypointnet_vgg", tmp_path / "vgg.onnx")
    ext = create_extractor("keypointnet", model_path=path, device="cpu", threads=1, max_keypoints=50)
    assert ext.net.meta.kind == "keypointnet_vgg"
    image = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    feats = ext.extract(image)
    assert feats.keypoints.shape == (50, 2) and feats.descriptors.shape == (50, 256)       # KP2D default
    with pytest.raises(ModelFileError, match="vgg.onnx.*expected 'keypointnet'$"):
        create_extractor("keypointnet", model_path=path, device="cpu", kind="keypointnet")
