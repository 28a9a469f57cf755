"""Frame-to-keyframe visual odometry."""
