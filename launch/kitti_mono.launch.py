"""Monocular VO on KITTI-style grayscale images (e.g. a bag from `kp-vo make-bag KITTI --sequence 07`).

    ros2 launch kp_vo kitti_mono.launch.py bag:=/path/to/kitti07_bag rviz:=true
    ros2 launch kp_vo kitti_mono.launch.py bag:=/path/to/kitti07_bag extractor:=keypointnet   # shipped model
    ros2 launch kp_vo kitti_mono.launch.py keypoint_model:=/path/keypointnet.onnx
    ros2 launch kp_vo kitti_mono.launch.py bag:=... depth_source:=network depth_scale:=S   # DepthNet depth

Arguments: bag (played with `ros2 bag play --clock` when set), config, extractor,
keypoint_model, depth_source (empty: the config's, triangulation, or network when depth_model is
set; network: DepthNet depth on keyframes), depth_model (empty: the shipped models/depthnet.onnx),
depth_scale (metres per DepthNet unit),
rate, rviz, image_topic, image_transport (raw or compressed: <image_topic>/compressed),
camera_info_topic.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _nodes(context):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    if get("extractor"):
        overrides["extractor.name"] = get("extractor")
    if get("keypoint_model"):
        overrides["extractor.name"] = get("extractor") or "keypointnet"
        overrides["extractor.options.model_path"] = get("keypoint_model")
    depth_source = get("depth_source") or ("network" if get("depth_model") else "")
    if depth_source:
        overrides["odometry.depth_source"] = depth_source
    if depth_source == "network":
        overrides["depth.estimator"] = "depthnet"
        if get("depth_model"):
            overrides["depth.options.model_path"] = get("depth_model")
        overrides["depth.options.scale"] = float(get("depth_scale"))
    overrides["ros.image_transport"] = get("image_transport")
    use_sim_time = bool(get("bag"))
    actions = [Node(
        package="kp_vo", executable="vo_node", name="vo_node", output="screen",
        parameters=[get("config"), overrides, {"use_sim_time": use_sim_time}],
        remappings=[("image", get("image_topic")), ("image/compressed", get("image_topic") + "/compressed"),
                    ("camera_info", get("camera_info_topic"))],
    )]
    if get("bag"):
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", get("bag"), "--clock", "--rate", get("rate")],
                                      output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory("kp_vo")
    return LaunchDescription([
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 to play (empty: live topics)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "kitti_mono.yaml")),
        DeclareLaunchArgument("extractor", default_value="", description="orb, sift, keypointnet (empty: config)"),
        DeclareLaunchArgument("keypoint_model", default_value="",
                              description="KeypointNet .onnx file (empty: the shipped keypointnet_kp2d.onnx)"),
        DeclareLaunchArgument("depth_source", default_value="",
                              description="triangulation or network (empty: the config's)"),
        DeclareLaunchArgument("depth_model", default_value="",
                              description="DepthNet .onnx (empty: the shipped depthnet.onnx)"),
        DeclareLaunchArgument("depth_scale", default_value="1.0", description="metres per DepthNet depth unit"),
        DeclareLaunchArgument("rate", default_value="1.0", description="bag playback rate"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument("image_topic", default_value="/camera/image_raw"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image on the image topic) | compressed "
                                          "(sensor_msgs/CompressedImage on <image topic>/compressed)"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "kp_vo.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
