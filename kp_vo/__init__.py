"""kp_vo: learned-keypoint visual odometry and relocalization (ROS 2 package, ROS-free core)."""

__version__ = "0.1.0"
