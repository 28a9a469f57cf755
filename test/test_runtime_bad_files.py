"""Bad model files: each one is a ModelFileError whose one-line message names the file and the problem."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper

import kp_vo.runtime  # noqa: F401
from kp_vo.errors import ModelFileError
from kp_vo.export.onnx_export import export_module
from kp_vo.features.base import create_extractor
from kp_vo.models import build_model
from kp_vo.runtime.session import OnnxModel


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A real but tiny kp_vo export (object KeypointNet, kind "object_keypointnet")."""
    torch.manual_seed(0)
    model = build_model("object_keypointnet", num_keypoints=2, width=8)
    return export_module(model, tmp_path_factory.mktemp("bad") / "obj.onnx", sample_hw=(16, 16))


def one_line(exc_info, *needles):
    msg = str(exc_info.value)
    assert "\n" not in msg
    for n in needles:
        assert n in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError) as e:
        OnnxModel(tmp_path / "nope.onnx", device="cpu")
    one_line(e, "nope.onnx", "not found")


def test_truncated_file(small_model, tmp_path):
    cut = tmp_path / "cut.onnx"
    data = small_model.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError) as e:
        create_extractor("keypointnet", model_path=cut, device="cpu")
    one_line(e, "cut.onnx", "corrupt")


def test_garbage_file(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    with pytest.raises(ModelFileError) as e:
        OnnxModel(junk, device="cpu")
    one_line(e, "junk.onnx")


def test_wrong_kind(small_model):
    with pytest.raises(ModelFileError) as e:
        create_extractor("keypointnet", model_path=small_model, device="cpu")
    one_line(e, "obj.onnx", "'object_keypointnet'", "expected 'keypointnet'")


def tiny_graph(opset: int, props: dict | None, path):
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 3, 8, 8])
    g = helper.make_graph([helper.make_node("Identity", ["image"], ["score"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    for k, v in (props or {}).items():
        m.metadata_props.add(key=k, value=v)
    onnx.save(m, str(path))
    return path


def test_wrong_opset(small_model, tmp_path):
    props = {p.key: p.value for p in onnx.load(str(small_model)).metadata_props}
    old = tiny_graph(13, props, tmp_path / "old.onnx")
    with pytest.raises(ModelFileError) as e:
        OnnxModel(old, device="cpu")
    one_line(e, "old.onnx", "opset 13")


def test_foreign_onnx_without_metadata(tmp_path):
    foreign = tiny_graph(17, None, tmp_path / "foreign.onnx")
    with pytest.raises(ModelFileError) as e:
        OnnxModel(foreign, device="cpu")
    one_line(e, "foreign.onnx", "not a kp_vo model")
