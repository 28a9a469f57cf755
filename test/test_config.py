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
    with pytest.raises(ConfigError, match=r"bad.yaml is not valid YAML: expected ',' or '\]'.* at line 2") as info:
        load_config(PipelineConfig, path)
    assert "\n" not in str(info.value)


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefg", "bcdefgh"))


@pytest.mark.parametrize("content, message", [
    (b"- odometry\n- extractor\n", "must be a mapping at the top level, got list"),
    (b"just words\n", "must be a mapping at the top level, got str"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text"),
    (b"odometry:\n  window_size: 5\nodomtery: {}\n", "unknown config key 'odomtery'"),
    (b"odometry: 5\n", "odometry: expected a mapping, got int"),
    (b"extractor:\n  options: 12\n", "extractor.options: expected a mapping, got 12"),
    (b"odometry: {window_size: [1, 2]}\n", "odometry.window_size: expected an integer"),
    (("extractor:\n  options:\n    bomb: *h\n" ).encode(), "is not valid YAML: found undefined alias"),
    ((BOMB + "extractor:\n  options:\n    bomb: *h\n").encode(), "YAML nodes once its aliases are expanded"),
    (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
    (b"a: 1\n" + b"#" * (1 << 20), "larger than"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(PipelineConfig, path)
    assert "\n" not in str(info.value)


def test_harmless_aliases_are_read(tmp_path):
    path = tmp_path / "aliases.yaml"
    path.write_text("extractor:\n  options: &opts {max_keypoints: 700}\ndepth:\n  options: *opts\n")
    config = load_config(PipelineConfig, path)
    assert config.extractor.options == config.depth.options == {"max_keypoints": 700}
    with pytest.raises(ConfigError, match="cannot read config .*missing.yaml: No such file"):
        load_config(PipelineConfig, tmp_path / "missing.yaml")


def test_saved_config_loads_back_equal(tmp_path):
    config = merge(PipelineConfig(), {"odometry": {"window_size": 5}, "extractor": {"name": "sift"}})
    save_config(config, tmp_path / "used.yaml")
    assert yaml.safe_load((tmp_path / "used.yaml").read_text()) == to_dict(config)
    assert load_config(PipelineConfig, tmp_path / "used.yaml") == config
