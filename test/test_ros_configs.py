"""The ROS parameter files, launch files and RViz config, checked without ROS."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
import yaml

from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.reloc_core import RelocConfig
from kp_vo.cli.common import load_configs
from kp_vo.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = ["kitti_mono.yaml", "tum_rgbd.yaml", "kinect_reloc.yaml"]


@pytest.mark.parametrize("name", PARAM_FILES)
def test_parameter_files_fit_the_typed_configs(name):
    pipeline = pytest.importorskip("kp_vo.pipeline")
    data = yaml.safe_load((ROOT / "config" / name).read_text())
    assert "vo_node" in data and set(data["vo_node"]) == {"ros__parameters"}
    for node, section in data.items():
        params = dict(section["ros__parameters"])
        node_config = load_config(NodeConfig, params.pop("ros"))
        reloc = params.pop("reloc", None)
        if node == "reloc_node":
            assert load_config(RelocConfig, reloc).publish_map_to_odom is True
        load_config(pipeline.PipelineConfig, params)   # raises on an unknown key
        assert node_config.mode in ("mono", "rgbd")
    config, node_config = load_configs(str(ROOT / "config" / name))
    assert node_config.mode == ("mono" if name == "kitti_mono.yaml" else "rgbd")
    assert config.odometry.depth_source == ("triangulation" if name == "kitti_mono.yaml" else "sensor")


def test_kp_vo_run_takes_a_ros_parameter_file_with_command_line_overrides():
    import argparse

    from kp_vo.cli.common import pipeline_config

    args = argparse.Namespace(config=str(ROOT / "config" / "kitti_mono.yaml"), extractor="keypointnet",
                              depth_source=None)
    config = pipeline_config(args)
    assert config.extractor.name == "keypointnet"
    assert config.extractor.options == {"max_keypoints": 2000}
    assert config.odometry.depth_source == "triangulation"


def test_bad_parameter_file_is_one_line_error(tmp_path):
    from kp_vo.errors import KpVoError

    bad = tmp_path / "bad.yaml"
    bad.write_text("vo_node:\n  ros__parameters:\n    ros:\n      sync_slopp: 0.1\n")
    with pytest.raises(KpVoError, match="sync_slopp"):
        load_configs(str(bad))


@pytest.mark.parametrize("name", ["kitti_mono.launch.py", "tum_rgbd.launch.py", "kinect_reloc.launch.py"])
def test_launch_files_parse_and_declare_their_arguments(name):
    source = (ROOT / "launch" / name).read_text()
    tree = ast.parse(source)
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    declared = {n.args[0].value for n in ast.walk(tree)
                if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"}
    assert {"config", "rviz", "bag"} <= declared
    assert "keypoint_model" in declared
    # every parameter file / executable named exists
    for exe in ("vo_node",):
        assert f'executable="{exe}"' in source
    config_default = [c for c in PARAM_FILES if c in source]
    assert config_default, "launch file names no parameter file"


def test_kitti_launch_can_switch_to_depthnet_depth_with_valid_config_keys():
    import re

    from kp_vo.config import load_config
    from kp_vo.pipeline import PipelineConfig

    source = (ROOT / "launch" / "kitti_mono.launch.py").read_text()
    for arg in ("depth_source", "depth_model", "depth_scale"):
        assert f'DeclareLaunchArgument("{arg}"' in source
    nested: dict = {}
    for key in re.findall(r'overrides\["([a-z_.]+)"\]', source):
        if key.startswith("ros."):
            continue                                                 # node parameters, not the pipeline's
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = {"estimator": "depthnet", "depth_source": "network", "scale": 1.0}.get(leaf, "x")
    nested["extractor"]["name"] = "keypointnet"
    config = load_config(PipelineConfig, nested)                    # unknown keys would raise
    assert config.odometry.depth_source == "network" and config.depth.estimator == "depthnet"


def _launch_defaults(source):
    return {n.args[0].value: next((getattr(k.value, "value", None) for k in n.keywords if k.arg == "default_value"),
                                  None)
            for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "DeclareLaunchArgument"}


class _Action:
    """Stands in for a launch action or substitution: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _launched_nodes(name: str, monkeypatch, **arguments) -> list[_Action]:
    """The kp_vo ``Node`` actions that launch file ``name``'s ``_nodes`` returns for ``arguments`` (the
    others at their declared defaults), run against stand-ins of the ROS launch API (no ROS needed)."""
    source = (ROOT / "launch" / name).read_text()
    values = {**_launch_defaults(source), **arguments}

    class LaunchConfiguration:
        def __init__(self, argument: str):
            self.argument = argument

        def perform(self, context) -> str:
            return values[self.argument]

    api = {"launch": {"LaunchDescription": _Action}, "launch.conditions": {"IfCondition": _Action},
           "launch.actions": {"DeclareLaunchArgument": _Action, "ExecuteProcess": _Action, "OpaqueFunction": _Action},
           "launch.substitutions": {"LaunchConfiguration": LaunchConfiguration},
           "launch_ros": {}, "launch_ros.actions": {"Node": _Action},
           "ament_index_python": {}, "ament_index_python.packages": {"get_package_share_directory": str}}
    for module, names in api.items():
        monkeypatch.setitem(sys.modules, module, types.SimpleNamespace(**names))
    namespace: dict = {}
    exec(compile(source, name, "exec"), namespace)
    return [a for a in namespace["_nodes"](None) if a.kwargs.get("package") == "kp_vo"]


@pytest.mark.parametrize("name, image_topic", [("kitti_mono.launch.py", "/camera/image_raw"),
                                               ("tum_rgbd.launch.py", "/camera/rgb/image_color"),
                                               ("kinect_reloc.launch.py", "/camera/rgb/image_rect_color")])
def test_launch_files_pass_the_image_transport_to_the_nodes(name, image_topic, monkeypatch):
    """``image_transport`` (default raw) becomes every node's ``ros.image_transport``, and the node's
    compressed input ``image/compressed`` is remapped to ``<image topic>/compressed``."""
    assert _launch_defaults((ROOT / "launch" / name).read_text())["image_transport"] == "raw"
    for transport in ("raw", "compressed"):
        nodes = _launched_nodes(name, monkeypatch, image_transport=transport)
        assert nodes
        for node in nodes:
            parameters = {k: v for p in node.kwargs["parameters"] if isinstance(p, dict) for k, v in p.items()}
            assert parameters["ros.image_transport"] == transport
            remaps = dict(node.kwargs["remappings"])
            assert remaps["image"] == image_topic and remaps["image/compressed"] == image_topic + "/compressed"
    assert load_config(NodeConfig, {"image_transport": "compressed"}).image_transport == "compressed"


def test_kinect_launch_knows_the_drivers():
    source = (ROOT / "launch" / "kinect_reloc.launch.py").read_text()
    tree = ast.parse(source)
    topics = next(ast.literal_eval(n.value) for n in tree.body
                  if isinstance(n, ast.Assign) and n.targets[0].id == "DRIVER_TOPICS")
    assert set(topics) == {"openni", "kinect2", "azure", "azure_rect"}
    # Azure: raw images rectified by the nodes, or image_proc's rectified topics taken as rectified
    assert topics["azure"][:4] == ("/rgb/image_raw", "/depth_to_rgb/image_raw", "/rgb/camera_info", "rectify")
    assert topics["azure_rect"][:4] == ("/rgb/image_rect_color", "/depth_to_rgb/image_rect", "/rgb/camera_info",
                                        "rectified")
    assert all(t[3] == "rectified" for name, t in topics.items() if name != "azure")
    assert all("rect" in t[0] for name, t in topics.items() if name != "azure")
    assert 'executable="reloc_node"' in source


def test_camera_tf_and_rviz_only_when_asked():
    """The drivers publish their own tree: the Kinect launch adds base_link -> its root only when asked
    (never a second parent for the driver's optical frame); rviz2 is off by default everywhere."""
    kinect = (ROOT / "launch" / "kinect_reloc.launch.py").read_text()
    assert _launch_defaults(kinect)["publish_camera_tf"] == "false"
    assert '"--child-frame-id", root]' in kinect and "rgb_camera_link" not in kinect
    for name in ("kitti_mono.launch.py", "tum_rgbd.launch.py", "kinect_reloc.launch.py"):
        source = (ROOT / "launch" / name).read_text()
        assert _launch_defaults(source)["rviz"] == "false"
        assert 'condition=IfCondition(LaunchConfiguration("rviz"))' in source


@pytest.mark.parametrize("name, node", [("kinect_reloc.launch.py", "vo_node"), ("kinect_reloc.launch.py", "reloc_node"),
                                        ("tum_rgbd.launch.py", "vo_node"), ("kitti_mono.launch.py", "vo_node")])
def test_launch_parameter_overrides_are_declared_parameters(name, node):
    import re

    from kp_vo.bridge.parameters import node_specs, unknown_overrides

    source = (ROOT / "launch" / name).read_text()
    keys = re.findall(r'(?:overrides|common|reloc)\["([a-z_.]+)"\]', source)
    keys += re.findall(r'"((?:ros|reloc)\.[a-z_.]+)":', source)
    if node == "vo_node":
        keys = [k for k in keys if not k.startswith("reloc.")]
    assert keys and unknown_overrides(keys, node_specs(node)) == []


def test_rviz_config_shows_the_node_topics():
    rviz = yaml.safe_load((ROOT / "config" / "kp_vo.rviz").read_text())
    manager = rviz["Visualization Manager"]
    topics = {d["Topic"]["Value"] for d in manager["Displays"] if "Topic" in d}
    assert {"/odom", "/path", "/debug_image", "/pose"} <= topics
    assert manager["Global Options"]["Fixed Frame"] == "odom"


def test_ci_workflow_builds_and_tests_on_a_distro_whose_python_takes_the_pins():
    """Jazzy (Python 3.12); Humble's Python 3.10 cannot install the pinned numpy (>= 3.11)."""
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "ros2.yml").read_text())
    text = (ROOT / ".github" / "workflows" / "ros2.yml").read_text()
    assert "colcon build" in text and "colcon test" in text
    distros = {inc["ros_distro"] for job in wf["jobs"].values()
               for inc in job.get("strategy", {}).get("matrix", {}).get("include", [])}
    assert distros == {"jazzy"}
