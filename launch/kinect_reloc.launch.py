"""Live RGB-D odometry + relocalization against a saved map on a Kinect-type camera.

    ros2 launch kp_vo kinect_reloc.launch.py driver:=azure map:=/maps/lab.kpmap rviz:=true

`driver` picks the topic names of the camera driver (remapped to the nodes' generic names), the
rectified ones where the driver offers them, and how the nodes treat camera_info distortion
(``ros.distortion``):
    openni     (openni2_camera / freenect, Kinect v1, Xtion): /camera/rgb/image_rect_color,
               /camera/depth_registered/image_raw, /camera/rgb/camera_info (rectified)
    kinect2    (iai_kinect2, Kinect v2, qhd): /kinect2/qhd/image_color_rect,
               /kinect2/qhd/image_depth_rect, /kinect2/qhd/camera_info (rectified)
    azure      (Azure_Kinect_ROS_Driver's driver.launch.py, raw images only, depth registered):
               /rgb/image_raw, /depth_to_rgb/image_raw, /rgb/camera_info (the nodes rectify them)
    azure_rect (the same driver with image_proc rectifying, as its kinect_rgbd launch does):
               /rgb/image_rect_color, /depth_to_rgb/image_rect, /rgb/camera_info (rectified)
The camera driver itself is not started here; run it alongside (or play a bag of it with bag:=...).
The drivers publish their own TF tree; publish_camera_tf:=true adds base_link -> the driver's root
frame (camera_link, kinect2_link, camera_base) for a robot without a description that has it.
vo_node leaves map -> odom to reloc_node while publish_map_to_odom is true.
Arguments: driver, map, config, extractor, keypoint_model, bag, rviz, camera_frame,
publish_camera_tf, publish_map_to_odom, image_transport (raw or compressed: the colour image on
<driver's image topic>/compressed; depth stays raw).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

# driver: (image, depth, camera_info, ros.distortion, root frame of the driver's TF tree, whether that root
#          has optical axes: z forward, x right)
DRIVER_TOPICS = {
    "openni": ("/camera/rgb/image_rect_color", "/camera/depth_registered/image_raw", "/camera/rgb/camera_info",
               "rectified", "camera_link", False),
    "kinect2": ("/kinect2/qhd/image_color_rect", "/kinect2/qhd/image_depth_rect", "/kinect2/qhd/camera_info",
                "rectified", "kinect2_link", True),
    "azure": ("/rgb/image_raw", "/depth_to_rgb/image_raw", "/rgb/camera_info", "rectify", "camera_base", False),
    "azure_rect": ("/rgb/image_rect_color", "/depth_to_rgb/image_rect", "/rgb/camera_info", "rectified",
                   "camera_base", False),
}
# optical axes in base_link: z forward = base x, x right = base -y, y down = base -z
OPTICAL_RPY = ["--roll", "-1.5707963", "--yaw", "-1.5707963"]


def _nodes(context):
    def get(name):
        return LaunchConfiguration(name).perform(context)

    driver = get("driver")
    if driver not in DRIVER_TOPICS:
        raise RuntimeError(f"driver must be one of {sorted(DRIVER_TOPICS)}, got {driver!r}")
    image, depth, info, distortion, root, root_optical = DRIVER_TOPICS[driver]
    remaps = [("image", image), ("image/compressed", image + "/compressed"), ("depth", depth), ("camera_info", info)]
    common = {"use_sim_time": bool(get("bag")), "ros.distortion": distortion,
              "ros.image_transport": get("image_transport")}
    if get("camera_frame"):
        common["ros.frames.camera"] = get("camera_frame")
    if get("extractor"):
        common["extractor.name"] = get("extractor")
    if get("keypoint_model"):
        common["extractor.name"] = get("extractor") or "keypointnet"
        common["extractor.options.model_path"] = get("keypoint_model")
    reloc = dict(common)
    reloc["reloc.publish_map_to_odom"] = get("publish_map_to_odom") == "true"
    common["ros.publish_map_tf"] = not reloc["reloc.publish_map_to_odom"]   # one owner of map -> odom
    if get("map"):
        reloc["reloc.map_path"] = get("map")
        common["ros.map_path"] = get("map")
    actions = [
        Node(package="kp_vo", executable="vo_node", name="vo_node", output="screen",
             parameters=[get("config"), common], remappings=remaps),
        Node(package="kp_vo", executable="reloc_node", name="reloc_node", output="screen",
             parameters=[get("config"), reloc], remappings=remaps),
    ]
    if get("publish_camera_tf") == "true":
        # base_link -> the root of the driver's tree (never a second parent for its optical frame)
        actions.append(Node(package="tf2_ros", executable="static_transform_publisher", name="camera_tf",
                            arguments=["--frame-id", "base_link", "--child-frame-id", root]
                            + (OPTICAL_RPY if root_optical else [])))
    if get("bag"):
        actions.append(ExecuteProcess(cmd=["ros2", "bag", "play", get("bag"), "--clock"], output="screen"))
    return actions


def generate_launch_description():
    share = get_package_share_directory("kp_vo")
    return LaunchDescription([
        DeclareLaunchArgument("driver", default_value="openni", description="openni | kinect2 | azure | azure_rect"),
        DeclareLaunchArgument("map", default_value="", description="keypoint map file (kp-vo map build ...)"),
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "kinect_reloc.yaml")),
        DeclareLaunchArgument("extractor", default_value=""),
        DeclareLaunchArgument("keypoint_model", default_value=""),
        DeclareLaunchArgument("bag", default_value="", description="bag of the camera topics instead of live"),
        DeclareLaunchArgument("rviz", default_value="false", description="start rviz2 (optional, not a dependency)"),
        DeclareLaunchArgument("camera_frame", default_value="",
                              description="camera optical frame (empty: the images' header frame_id)"),
        DeclareLaunchArgument("publish_camera_tf", default_value="false",
                              description="static base_link -> the driver's root frame (the driver publishes its "
                                          "own tree below it)"),
        DeclareLaunchArgument("publish_map_to_odom", default_value="true"),
        DeclareLaunchArgument("image_transport", default_value="raw",
                              description="raw (sensor_msgs/Image on the image topic) | compressed "
                                          "(sensor_msgs/CompressedImage on <image topic>/compressed)"),
        OpaqueFunction(function=_nodes),
        Node(package="rviz2", executable="rviz2", arguments=["-d", os.path.join(share, "config", "kp_vo.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
