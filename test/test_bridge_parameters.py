"""The nodes' parameter declarations as data: complete, typed, documented; run-time changes; README table."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.parameters import (
    apply_changes,
    check_change,
    node_specs,
    parameter_table,
    readme_with_table,
    unknown_overrides,
)
from kp_vo.config import ConfigError, load_config

from test_bridge_node_core import FakeOdometry  # noqa: E402  (test helper)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("node", ["vo_node", "reloc_node"])
def test_every_spec_is_typed_documented_and_its_default_fits_its_range(node):
    specs = node_specs(node)
    assert len({s.name for s in specs}) == len(specs)
    for s in specs:
        assert s.type in (bool, int, float, str) and isinstance(s.default, s.type) and len(s.description) > 8, s
        if s.choices:
            assert s.default in s.choices, s
        if s.range:
            assert s.range[0] <= s.default <= s.range[1], s


def test_the_declarations_cover_the_typed_configs_field_for_field():
    from kp_vo.pipeline import PipelineConfig

    def leaves(obj, prefix=""):
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                yield from leaves(value, f"{prefix}{f.name}.")
            elif not isinstance(value, dict):
                yield f"{prefix}{f.name}", value

    vo = {s.name: s.default for s in node_specs("vo_node")}
    expected = dict(leaves(NodeConfig(), "ros.")) | dict(leaves(PipelineConfig()))
    assert vo == expected


def test_the_shipped_parameter_files_name_only_declared_parameters():
    import yaml

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    for name in ("kitti_mono.yaml", "tum_rgbd.yaml", "kinect_reloc.yaml"):
        for node, section in yaml.safe_load((ROOT / "config" / name).read_text()).items():
            assert unknown_overrides(list(flat(section["ros__parameters"])), node_specs(node)) == [], (name, node)
    assert unknown_overrides(["ros.sync_slopp", "use_sim_time", "extractor.options.model_path"],
                             node_specs("vo_node")) == ["ros.sync_slopp"]


def test_run_time_changes_take_effect_and_others_are_refused_with_a_reason():
    specs = node_specs("vo_node")
    core = VoNodeCore(NodeConfig(), FakeOdometry())
    core.reconfigure(apply_changes(core.config, specs, {"ros.lost_tf": "hold", "ros.warn_period": 1,
                                                        "ros.publish_tf": False}))
    assert core.config.lost_tf == "hold" and core.config.warn_period == 1.0 and not core.config.publish_tf
    assert core._throttle.period_ns == 1_000_000_000
    refusals = {
        "ros.mode": ("rgbd", "read-only: it is used at start-up only"),
        "odometry.window_size": (3, "read-only"),
        "ros.lost_tf": ("drift", "must be one of none, hold"),
        "ros.warn_period": (-1.0, r"must be in \[0.0, 3600.0\]"),
        "ros.publish_tf": ("yes", "must be a bool"),
        "ros.nonsense": (1, "no such parameter"),
        "extractor.options.max_keypoints": (10, "read-only"),
    }
    for name, (value, reason) in refusals.items():
        with pytest.raises(ConfigError, match=reason):
            apply_changes(core.config, specs, {name: value})
    assert core.config.lost_tf == "hold"          # a refused set changes nothing
    assert check_change(None, "ros.nonsense", 1) == "ros.nonsense: no such parameter"


def test_readme_table_is_the_generated_one():
    text = (ROOT / "kp_vo" / "ros" / "README.md").read_text()
    assert readme_with_table(text) == text, "run: python -m kp_vo.bridge.parameters"
    assert "| `ros.lost_tf` | both | str | `none` | none \\| hold | yes |" in parameter_table()


def test_node_parameters_round_trip_through_the_typed_config():
    """What a node declares (defaults) loads back into the configs unchanged."""
    from kp_vo.bridge.node_config import split_node_parameters
    from kp_vo.settings import nest
    from kp_vo.pipeline import PipelineConfig

    flat = {s.name: s.default for s in node_specs("vo_node")}
    node_config, rest = split_node_parameters(nest(flat, "parameter"))
    assert node_config == NodeConfig() and load_config(PipelineConfig, rest) == PipelineConfig()
