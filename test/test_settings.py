"""Settings typed as text (kp_vo.settings): KEY=VALUE items, dotted keys, extractor / model specs."""

from __future__ import annotations

import pytest

from kp_vo.config import ConfigError
from kp_vo.errors import InvalidInputError
from kp_vo.settings import Spec, nest, parse_options, parse_settings, parse_spec


def test_options_are_yaml_values_and_malformed_items_name_the_flag():
    assert parse_options(["width=320", "name=room", "flag=true", "zoom=[1, 2]", "empty="], "--option") == {
        "width": 320, "name": "room", "flag": True, "zoom": [1, 2], "empty": None}
    assert parse_options(None, "--option") == {}
    with pytest.raises(ConfigError, match="--option expects KEY=VALUE, got 'width'"):
        parse_options(["width"], "--option")
    with pytest.raises(ConfigError, match="--option expects KEY=VALUE"):
        parse_options(["=3"], "--option")
    with pytest.raises(ConfigError, match="--option zoom: value .* is not a YAML value"):
        parse_options(["zoom=[1, 2"], "--option")


def test_dotted_keys_nest_and_conflicts_are_one_line_errors():
    assert nest({"a.b": 1, "a.c": 2, "d": 3}, "parameter") == {"a": {"b": 1, "c": 2}, "d": 3}
    assert nest({"ros.frames.odom": "odom"}, "parameter") == {"ros": {"frames": {"odom": "odom"}}}
    with pytest.raises(ConfigError, match="parameter a.b conflicts with a"):
        nest({"a": 1, "a.b": 2}, "parameter")
    with pytest.raises(ConfigError, match="empty part"):
        nest({"a..b": 1}, "--set")


def test_settings_are_nested_options():
    assert parse_settings(["train.steps=10", "model=vgg"], "--set") == {"train": {"steps": 10}, "model": "vgg"}
    with pytest.raises(ConfigError, match="--set train.steps.x conflicts with train.steps"):
        parse_settings(["train.steps=10", "train.steps.x=1"], "--set")


def test_specs_split_name_path_and_options():
    assert parse_spec("orb") == Spec("orb", "", {})
    assert parse_spec("keypointnet:kpn.onnx,scale=0.5,cell_nms=true") == Spec(
        "keypointnet", "kpn.onnx", {"scale": 0.5, "cell_nms": True})
    assert parse_spec("depthnet,scale=2") == Spec("depthnet", "", {"scale": 2})
    with pytest.raises(InvalidInputError, match="key=value"):
        parse_spec("orb,grid_cell")
