"""Live RGB-D odometry + relocalization against a saved map on a Kinect-type camera.

    ros2 launch kp_vo kinect_reloc.launch.py driver:=azure map:=/maps/lab.kpmap rviz:=true

`driver` picks the topic names of the camera driver (remapped to the nodes' generic names):
    openni  (openni2_camera / freenect, Kinect v1, Xtion):  /camera/rgb/image_rect_color,
            /camera/depth_registered/image_raw, /camera/rgb/camera_info
    kinect2 (iai_kinect2, Kinect v2, qhd):                   /kinect2/qhd/image_color_rect,
            /kinect2/qhd/image_depth_rect, /kinect2/qhd/camera_info
    azure   (Azure_Kinect_ROS_Driver, depth registered):    /rgb/image_raw,
            /depth_to_rgb/image_raw, /rgb/camera_info
Images must be rectified (kp_vo reads P of camera_info). The camera driver itself is not
started here; run it alongside (or play a bag of it with bag:=...).
Arguments: driver, map, config, extractor, keypoint_model, bag, rviz, camera_frame,
publish_camera_tf, publish_map_to_odom.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

DRIVER_TOPICS = {
    "openni": ("/camera/rgb/image_rect_color", "/camera/depth_registered/image_raw", "/camera/rgb/camera_info",
               "camera_rgb_optical_frame"),
    "kinect2": ("/kinect2/qhd/image_color_rect", "/kinect2/qhd/image_depth_rect", "/kinect2/qhd/camera_info",
                "kinect2_rgb_optical_frame"),
    "azure": ("/rgb/image_raw", "/depth_to_rgb/image_raw", "/rgb/camera_info", "rgb_camera_link"),
}


def _nodes(context):
    get = lambda name: LaunchConfiguration(name).perform(context)
    driver = get("driver")
    if driver not in DRIVER_TOPICS:
        raise RuntimeError(f"driver must be one of {sorted(DRIVER_TOPICS)}, got {driver!r}")
    image, depth, info, default_frame = DRIVER_TOPICS[driver]
    remaps = [("image", image), ("depth", depth), ("camera_info", info)]
    common = {"use_sim_time": bool(get("bag"))}
    if get("extractor"):
        common["extractor.name"] = get("extractor")
    if get("keypoint_model"):
        common["extractor.name"] = get("extractor") or "keypointnet"
        common["extractor.options.model_path"] = get("keypoint_model")
    reloc = dict(common)
    reloc["reloc.publish_map_to_odom"] = get("publish_map_to_odom") == "true"
    if get("map"):
        reloc["reloc.map_path"] = get("map")
        common["ros.map_path"] = get("map")
    camera_frame = get("camera_frame") or default_frame
    actions = [
        Node(package="kp_vo", executable="vo_node", name="vo_node", output="screen",
             parameters=[get("config"), common], remappings=remaps),
        Node(package="kp_vo", executable="reloc_node", name="reloc_node", output="screen",
             parameters=[get("config"), reloc], remappings=remaps),
    ]
    if get("publish_camera_tf") == "true":
        # camera optical frame in base_link: z forward = base x, x right = base -y, y down = base -z
        actions.append(Node(package="tf2_ros", executable="static_transform_publisher", name="camera_tf",
                            arguments=["--frame-id", "base_link", "--child-frame-id", camera_frame,
                                       "--roll", "-1.5707963", "--yaw", "-1.5707963"]))
    if get("bag"):
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", get("bag"), "--clock"], output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory("kp_vo")
    return LaunchDescription([
        DeclareLaunchArgument("driver", default_value="openni", description="openni | kinect2 | azure"),
        DeclareLaunchArgument("map", default_value="", description="keypoint map file (kp-vo map build ...)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "kinect_reloc.yaml")),
        DeclareLaunchArgument("extractor", default_value=""),
        DeclareLaunchArgument("keypoint_model", default_value=""),
        DeclareLaunchArgument("bag", default_value="", description="bag of the camera topics instead of live"),
        DeclareLaunchArgument("rviz", default_value="false"),
        DeclareLaunchArgument("camera_frame", default_value="", description="default: the driver's optical frame"),
        DeclareLaunchArgument("publish_camera_tf", default_value="true",
                              description="static base_link -> camera TF (false when a robot description has it)"),
        DeclareLaunchArgument("publish_map_to_odom", default_value="true"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "kp_vo.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
