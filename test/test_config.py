"""Typed nested config: defaults, partial YAML overrides, errors naming the dotted key, round trip."""

import pytest
import yaml

from kp_vo.config import ConfigError, load_config, merge, save_config, to_dict
from kp_vo.pipeline import PipelineConfig


def test_defaults_and_partial_override(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("odometry:\n  window_size: 9\nextractor:\n  name: sift\n  options: {max_keypoints: 500}\n")
    config = load_config(PipelineConfig, path)
    assert config.odometry.window_size == 9 and config.extractor.name == "sift"
    assert config.extractor.options == {"max_keypoints": 500}
    assert config.odometry.min_inliers == PipelineConfig().odometry.min_inliers  # untouched defaults stay


def test_merge_does_not_mutate():
    base = PipelineConfig()
    changed = merge(base, {"odometry": {"pnp_threshold_px": 3}})
    assert changed.odometry.pnp_threshold_px == 3.0 and isinstance(changed.odometry.pnp_threshold_px, float)
    assert base.odometry.pnp_threshold_px == 2.0


def test_an_option_override_keeps_the_other_options():
    """``--set extractor.options.model_path=M`` over a config with max_keypoints must keep max_keypoints
    (it was dropped once, so KITTI runs of other models silently used 1000 keypoints instead of 2000)."""
    base = merge(PipelineConfig(), {"extractor": {"name": "keypointnet", "options": {"max_keypoints": 2000,
                                                                                      "nested": {"a": 1, "b": 2}}}})
    changed = merge(base, {"extractor": {"options": {"model_path": "m.onnx", "nested": {"b": 3}}}})
    assert changed.extractor.options == {"max_keypoints": 2000, "model_path": "m.onnx", "nested": {"a": 1, "b": 3}}
    assert base.extractor.options == {"max_keypoints": 2000, "nested": {"a": 1, "b": 2}}     # not mutated
    assert merge(base, {"extractor": {"name": "orb"}}).extractor.options["max_keypoints"] == 2000


@pytest.mark.parametrize("overrides, message", [
    ({"odometry": {"windw_size": 3}}, "odometry.windw_size"),
    ({"odometry": {"window_size": "seven"}}, "expected an integer"),
    ({"odometry": {"bundle_adjustment": 1}}, "expected true/false"),
    ({"odometry": 5}, "expected a mapping"),
    ({"extractor": {"name": None}}, "null is not allowed"),
])
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        merge(PipelineConfig(), overrides)


def test_unreadable_yaml_is_one_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("odometry: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(PipelineConfig, path)


def test_saved_config_loads_back_equal(tmp_path):
    config = merge(PipelineConfig(), {"odometry": {"window_size": 5}, "extractor": {"name": "sift"}})
    save_config(config, tmp_path / "used.yaml")
    assert yaml.safe_load((tmp_path / "used.yaml").read_text()) == to_dict(config)
    assert load_config(PipelineConfig, tmp_path / "used.yaml") == config
