"""A model whose kp_vo metadata is missing, ill-typed or does not describe its graph is refused when it is
opened, with one line naming the file and the key (it used to fail later: ZeroDivisionError for a
size_multiple of 0, inf inputs for a std of 0, KeyError for an output the graph lacks)."""

import json

import numpy as np
import onnx
import pytest
import torch

from kp_vo.errors import InvalidInputError, ModelFileError
from kp_vo.export.onnx_export import export_module
from kp_vo.models import build_model
from kp_vo.runtime.session import OnnxModel


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("object_keypointnet", num_keypoints=2, width=8)
    return export_module(model, tmp_path_factory.mktemp("meta") / "obj.onnx", sample_hw=(16, 16))


def _input(**changes) -> dict:
    base = {"name": "image", "layout": "NCHW", "dtype": "float32", "channels": 3, "channel_order": "RGB",
            "value_range": [0.0, 1.0], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    return {"kp_vo.input": json.dumps({**base, **changes})}


OUTPUTS = {"uvz": "uv and depth", "prob": "maps", "orientation": "angle"}

CASES = {
    "size_multiple zero": ({"kp_vo.size_multiple": "0"}, "kp_vo.size_multiple", "positive integer"),
    "size_multiple text": ({"kp_vo.size_multiple": "eight"}, "kp_vo.size_multiple", "positive integer"),
    "std zero": (_input(std=[0.5, 0.0, 0.5]), "kp_vo.input", "std"),
    "std short": (_input(std=[0.5]), "kp_vo.input", "std must be 3 finite numbers"),
    "mean not numbers": (_input(mean=["a", "b", "c"]), "kp_vo.input", "mean"),
    "mean NaN": ({"kp_vo.input": _input()["kp_vo.input"].replace('"mean": [0.5', '"mean": [NaN')},
                 "kp_vo.input", "mean"),
    "channels zero": (_input(channels=0), "kp_vo.input", "channels"),
    "empty value range": (_input(value_range=[1.0, 0.0]), "kp_vo.input", "value_range"),
    "input not an object": ({"kp_vo.input": "[1, 2, 3]"}, "kp_vo.input", "expected a JSON dict"),
    "input not JSON": ({"kp_vo.input": "{name: image"}, "kp_vo.input", "Expecting"),
    "input deeply nested": ({"kp_vo.input": "[" * 100_000 + "]" * 100_000}, "kp_vo.input", ""),
    "outputs a list": ({"kp_vo.outputs": '["uvz", "prob"]'}, "kp_vo.outputs", "expected a JSON dict"),
    "outputs ill-typed": ({"kp_vo.outputs": '{"uvz": 3}'}, "kp_vo.outputs", "must map output names"),
    "options a string": ({"kp_vo.options": '"fast"'}, "kp_vo.options", "expected a JSON dict"),
    "trained maybe": ({"kp_vo.trained": "maybe"}, "kp_vo.trained", "not true or false"),
    "trained size": ({"kp_vo.trained_input_hw": "96xlots"}, "kp_vo.trained_input_hw", ""),
    "output missing from graph": ({"kp_vo.outputs": json.dumps({**OUTPUTS, "heatmap": "x"})}, "outputs", "heatmap"),
    "graph output not in metadata": ({"kp_vo.outputs": json.dumps({"uvz": "a", "prob": "b"})}, "outputs",
                                     "orientation"),
    "input name not in graph": (_input(name="rgb"), "input 'rgb'", "graph's inputs are ['image']"),
    "channels differ from graph": (_input(channels=1, mean=[0.5], std=[0.5]), "input 'image' has 3 channels",
                                   "says 1"),
}


def _with_props(source, target, changes: dict):
    proto = onnx.load(str(source))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update(changes)
    del proto.metadata_props[:]
    for key, value in props.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(target))
    return target


@pytest.mark.parametrize("case", CASES)
def test_bad_metadata_is_one_line_naming_the_key(model_path, tmp_path, case):
    changes, *needles = CASES[case]
    bad = _with_props(model_path, tmp_path / "bad.onnx", changes)
    with pytest.raises(ModelFileError) as info:
        OnnxModel(bad, device="cpu")
    message = str(info.value)
    assert "\n" not in message and "bad.onnx" in message
    for needle in needles:
        assert needle in message, message


def test_good_model_opens_and_wrong_inputs_are_refused(model_path):
    model = OnnxModel(model_path, device="cpu")
    assert set(model.run(np.zeros((1, 3, 16, 16), np.float32))) == set(OUTPUTS)
    with pytest.raises(InvalidInputError, match=r"input must be \(B, 3, H, W\), got \(1, 1, 16, 16\)"):
        model.run(np.zeros((1, 1, 16, 16), np.float32))
    with pytest.raises(InvalidInputError, match=r"input must be \(B, 3, H, W\), got \(3, 16, 16\)"):
        model.run(np.zeros((3, 16, 16), np.float32))
