"""RGB-D VO on TUM RGB-D bags (original topic names by default) or `kp-vo make-bag` TUM bags.

    ros2 launch kp_vo tum_rgbd.launch.py bag:=rgbd_dataset_freiburg1_xyz rviz:=true
    ros2 launch kp_vo tum_rgbd.launch.py bag:=my_bag image_topic:=/camera/image_raw \
        depth_topic:=/camera/depth/image_raw camera_info_topic:=/camera/camera_info

Arguments: bag, config, extractor, keypoint_model, depth_model, rate, rviz, image_topic,
image_transport (raw or compressed: <image_topic>/compressed; depth stays raw), depth_topic,
camera_info_topic, camera_frame + publish_camera_tf (a static base_link -> camera TF for bags
without one: optical z forward = base x, x right = base -y; bags from `kp-vo make-bag` carry
their own /tf_static, pass publish_camera_tf:=false for them).
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
    if get("depth_model"):
        overrides["depth.estimator"] = "depthnet"
        overrides["depth.options.model_path"] = get("depth_model")
    overrides["ros.image_transport"] = get("image_transport")
    use_sim_time = bool(get("bag"))
    actions = [Node(
        package="kp_vo", executable="vo_node", name="vo_node", output="screen",
        parameters=[get("config"), overrides, {"use_sim_time": use_sim_time}],
        remappings=[("image", get("image_topic")), ("image/compressed", get("image_topic") + "/compressed"),
                    ("depth", get("depth_topic")),
                    ("camera_info", get("camera_info_topic"))],
    )]
    if get("publish_camera_tf") == "true":
        actions.append(Node(package="tf2_ros", executable="static_transform_publisher", name="camera_tf",
                            arguments=["--frame-id", "base_link", "--child-frame-id", get("camera_frame"),
                                       "--roll", "-1.5707963", "--yaw", "-1.5707963"]))
    if get("bag"):
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", get("bag"), "--clock", "--rate", get("rate")],
                                      output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory("kp_vo")
    return LaunchDescription([
        DeclareLaunchArgument("bag", default_value="", description="rosbag2 to play (empty: live topics)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "tum_rgbd.yaml")),
        DeclareLaunchArgument("extractor", default_value=""),
        DeclareLaunchArgument("keypoint_model", default_value="",
                              description="KeypointNet .onnx file (empty: the shipped keypointnet_kp2d.onnx)"),
        DeclareLaunchArgument("depth_model", default_value="", description="DepthNet .onnx (instead of sensor depth)"),
        DeclareLaunchArgument("rate", default_value="1.0"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument("image_topic", default_value="/camera/rgb/image_color"),
        DeclareLaunchArgument("depth_topic", default_value="/camera/depth/image"),
        DeclareLaunchArgument("camera_info_topic", default_value="/camera/rgb/camera_info"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image on the image topic) | compressed "
                                          "(sensor_msgs/CompressedImage on <image topic>/compressed)"),
        DeclareLaunchArgument("camera_frame", default_value="openni_rgb_optical_frame"),
        DeclareLaunchArgument("publish_camera_tf", default_value="true"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "kp_vo.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
