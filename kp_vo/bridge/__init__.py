"""ROS-free bridge between ROS messages / bags and the kp_vo core.

conversions: message fields <-> numpy, intrinsics, poses; message builders.
node_config: the ``ros`` section of the node parameters (NodeConfig) and its split from the pipeline's.
node_core:   the VO node's logic (sync, stamp order, loops, camera_info wait, outputs).
odom_frames: REP-105 frames: continuous odom -> base_link, the map -> odom correction, twist.
camera_model: camera_info -> pinhole camera; distorted images rectified, or refused.
scale:       whether the odometry is metric (diagnostics, ros.require_metric).
parameters:  the nodes' parameters as data (declarations, run-time changes, README table).
latest_frame: the live-rate policy (newest frame wins, stale ones dropped) and its measurements.
reloc_core:  the relocalization node's logic (pose + map -> odom).
bagio:       rosbags reader/writer helpers.
bag_runner:  ``kp-vo bag``: the node core over a recorded bag.
make_bag:    ``kp-vo make-bag``: a dataset sequence as a rosbag2.
soak:        the node core over a long synthetic run, with its memory and latency series
             (``scripts/soak.py``, ``test/test_soak.py``).
"""
