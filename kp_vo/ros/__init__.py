"""ROS 2 adapters (the only modules importing rclpy, message packages, tf2_ros, message_filters).

Entry points: ``vo_node = kp_vo.ros.vo_node:main``, ``reloc_node = kp_vo.ros.reloc_node:main``.
Importing this package itself needs no ROS.
"""
