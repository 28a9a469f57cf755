"""ONNX export: torch vs ONNX Runtime parity for every model, metadata round trip, weights, CLI, int8.

Tolerances: max abs diff 1e-4 on scores, descriptors, inverse depth and probabilities; 1e-3 px on
keypoint coordinates (values up to ~150 px, float32). Exports happen once per module.
"""

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file

from kp_vo.cli import main as cli_main
from kp_vo.errors import InvalidInputError
from kp_vo.export import export_onnx, quantize_model, read_metadata
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PHOTO = DATA / "photos" / "opencv_baboon.jpg"

CASES = {  # kind -> (options, parity input shape)
    "keypointnet": ({}, (1, 3, 96, 128)),
    "keypointnet_vgg": ({}, (2, 3, 72, 104)),
    "depthnet": ({}, (1, 3, 96, 128)),
    "viewsynth": ({}, (1, 1, 72, 104)),
    "object_keypointnet": ({"num_keypoints": 4, "width": 16}, (1, 3, 40, 48)),
}
ATOL = {"coord": 1e-3, "uvz": 1e-3}


def randomize_batchnorm(model: torch.nn.Module) -> None:
    """Non-trivial BN statistics so that parity also covers the folded normalisation."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = {}
    folder = tmp_path_factory.mktemp("onnx")
    for kind, (opts, _) in CASES.items():
        torch.manual_seed(0)
        model = build_model(kind, **opts)
        randomize_batchnorm(model)
        sample = (32, 32) if kind == "object_keypointnet" else None
        out[kind] = (model, export_module(model, folder / f"{kind}.onnx", sample_hw=sample))
    return out


def run_both(model, path, x):
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model({"image": torch.from_numpy(x)}).items()}
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": x})))
    return ref, got


@pytest.mark.parametrize("kind", list(CASES))
def test_parity_random_input(exported, kind):
    model, path = exported[kind]
    x = np.random.default_rng(0).standard_normal(CASES[kind][1]).astype(np.float32)
    ref, got = run_both(model, path, x)
    assert set(got) == set(read_metadata(path).outputs)
    for name, value in got.items():
        assert value.shape == ref[name].shape, name
        np.testing.assert_allclose(value, ref[name], rtol=0, atol=ATOL.get(name, 1e-4), err_msg=name)


@pytest.mark.skipif(not PHOTO.exists(), reason="real photos not found at ../shared/data/photos")
@pytest.mark.parametrize("kind", ["keypointnet", "depthnet"])
def test_parity_real_photo(exported, kind):
    model, path = exported[kind]
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (160, 128)), cv2.COLOR_BGR2RGB)
    meta = read_metadata(path)
    x = ((rgb.astype(np.float32) / 255.0 - meta.mean) / meta.std).transpose(2, 0, 1)[None].astype(np.float32)
    ref, got = run_both(model, path, np.ascontiguousarray(x))
    for name, value in got.items():
        np.testing.assert_allclose(value, ref[name], rtol=0, atol=ATOL.get(name, 1e-4), err_msg=name)


def test_metadata_round_trip(exported):
    import onnx
    model, path = exported["keypointnet"]
    meta = read_metadata(path)
    spec = model.spec()
    assert meta.kind == "keypointnet" and meta.size_multiple == 32 and meta.channels == 3
    assert meta.mean == spec.mean and meta.std == spec.std and meta.value_range == (0.0, 1.0)
    assert list(meta.outputs) == ["score", "coord", "descriptor"] and meta.options["descriptor_dim"] == 64
    assert meta.trained is False and meta.training_config_hash == "untrained" and meta.opset >= 17
    proto = onnx.load(str(path))
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert read_metadata(exported["keypointnet_vgg"][1]).size_multiple == 8


def test_export_with_weights_is_marked_trained(tmp_path):
    torch.manual_seed(3)
    model = build_model("object_keypointnet", num_keypoints=3, width=16)
    randomize_batchnorm(model)
    weights = tmp_path / "w.safetensors"
    save_file(model.state_dict(), str(weights), metadata={"training_config_hash": "abc123"})
    path = export_onnx("object_keypointnet", tmp_path / "ok.onnx", weights=weights, num_keypoints=3, width=16,
                       sample_hw=(24, 24))
    meta = read_metadata(path)
    assert meta.trained and meta.training_config_hash == "abc123" and len(meta.raw["kp_vo.weights_sha256"]) == 64
    x = np.random.default_rng(1).standard_normal((1, 3, 24, 32)).astype(np.float32)
    ref, got = run_both(model, path, x)                    # the file carries exactly those weights
    np.testing.assert_allclose(got["uvz"], ref["uvz"], atol=1e-3)


def test_cli_export_and_errors(tmp_path, capsys):
    out = tmp_path / "ok.onnx"
    assert cli_main(["export", "object_keypointnet", "--output", str(out), "--num-keypoints", "2"]) == 0
    meta = read_metadata(out)
    assert meta.kind == "object_keypointnet" and meta.options["num_keypoints"] == 2 and not meta.trained
    narrow = tmp_path / "narrow.onnx"
    assert cli_main(["export", "object_keypointnet", "--output", str(narrow), "--num-keypoints", "3",
                     "--width", "16"]) == 0
    assert read_metadata(narrow).options == {"num_keypoints": 3, "width": 16}
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    assert cli_main(["export", "object_keypointnet", "--output", str(tmp_path / "x.onnx"), "--weights", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.safetensors" in err[0]
    assert cli_main(["export", "object_keypointnet", "--output", str(tmp_path / "y.onnx"),
                     "--quantize", "int8-static"]) == 2                        # no --calibration folder
    assert "--calibration" in capsys.readouterr().err


@pytest.mark.skipif(not PHOTO.exists(), reason="real photos not found at ../shared/data/photos")
def test_int8_variant_agrees_with_fp32(exported, tmp_path):
    """Dynamic int8 KeypointNet (KP2D) vs fp32 on a real photo: among the 100 best fp32 cells, the
    median keypoint moves < 1 px and the median descriptor cosine is > 0.9 (untrained weights)."""
    _, path = exported["keypointnet_vgg"]
    qpath = quantize_model(path, tmp_path / "kp.int8.onnx")
    assert read_metadata(qpath).quantization == "dynamic_int8"
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(PHOTO)), (160, 128)), cv2.COLOR_BGR2RGB)
    x = np.ascontiguousarray(((rgb / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32))
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    b = ort.InferenceSession(str(qpath), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    best = np.argsort(-a[0].ravel())[:100]
    move = np.linalg.norm(a[1].reshape(2, -1)[:, best] - b[1].reshape(2, -1)[:, best], axis=0)
    cos = np.sum(a[2].reshape(a[2].shape[1], -1)[:, best] * b[2].reshape(b[2].shape[1], -1)[:, best], axis=0)
    assert np.median(move) < 1.0 and np.median(cos) > 0.9


def test_fp16_weights_variant_halves_the_file_and_keeps_outputs(exported, tmp_path, capsys):
    """fp16 weight storage: a valid kp_vo model about half the size, metadata kept, and outputs equal to
    fp32 up to float16 rounding of the weights (random input, untrained weights)."""
    _, path = exported["keypointnet_vgg"]
    hpath = quantize_model(path, tmp_path / "kp.fp16.onnx", mode="fp16")
    meta, ref = read_metadata(hpath), read_metadata(path)
    assert meta.quantization == "fp16_weights" and meta.kind == ref.kind and meta.outputs == ref.outputs
    assert 0.45 < hpath.stat().st_size / path.stat().st_size < 0.55
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    b = ort.InferenceSession(str(hpath), providers=["CPUExecutionProvider"]).run(None, {"image": x})
    assert [o.dtype for o in b] == [np.float32] * len(a)
    np.testing.assert_allclose(b[0], a[0], atol=2e-3)                       # scores in [0, 1]
    np.testing.assert_allclose(b[1], a[1], atol=0.05)                       # pixel coordinates
    cos = np.sum(a[2] * b[2], axis=1)
    assert cos.min() > 0.999
    assert cli_main(["export", "keypointnet_vgg", "--output", str(tmp_path / "cli.onnx"), "--quantize", "fp16"]) == 0
    assert read_metadata(tmp_path / "cli.fp16.onnx").quantization == "fp16_weights"
    with pytest.raises(InvalidInputError, match="unknown quantization mode"):
        quantize_model(path, tmp_path / "x.onnx", mode="fp8")
