"""``kp-vo make-bag``: a dataset sequence (KITTI, TUM, synthetic, ...) as a rosbag2 for ``ros2 bag play``.

Topics written (ROS 2 Humble types, stamps = the sequence's stamps; a sequence whose times are
relative, e.g. KITTI's starting at 0.0 s, is moved by ``BAG_EPOCH_NS``, as TF reads a zero stamp
as "the latest"):

    /camera/image_raw         sensor_msgs/Image       mono8 (grayscale) or rgb8
    /camera/depth/image_raw   sensor_msgs/Image       32FC1 metres, 0 = invalid (RGB-D sequences)
    /camera/camera_info       sensor_msgs/CameraInfo  rectified pinhole (P = [K | 0])
    /tf_static                tf2_msgs/TFMessage      base_link -> camera_optical_frame (REP-103:
                                                      camera z forward = base x, x right = base -y)
    /tf                       tf2_msgs/TFMessage      ground truth gt_world -> gt_camera (camera poses)
    /ground_truth             geometry_msgs/PoseStamped  the same ground truth (for evo)

The bag is written under a temporary name beside ``output`` and renamed when complete, so an
interrupted write leaves no half bag (the next write removes its leftovers, see ``kp_vo.fileio``).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import BagWriter
from kp_vo.errors import DatasetError
from kp_vo.fileio import atomic_dir
from kp_vo.types import Frame

logger = logging.getLogger(__name__)

# 2000-01-01T00:00:00Z. A sequence whose first stamp is earlier has relative times: make_bag adds this.
BAG_EPOCH_NS = 946_684_800 * 1_000_000_000

# Rotation of the camera optical frame in base_link (x forward, y left, z up): columns are the
# optical x (right), y (down), z (forward) axes expressed in base_link.
R_BASE_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass
class BagTopics:
    image: str = "/camera/image_raw"
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/camera_info"
    ground_truth: str = "/ground_truth"
    base_frame: str = "base_link"
    camera_frame: str = "camera_optical_frame"
    gt_world_frame: str = "gt_world"
    gt_camera_frame: str = "gt_camera"


def default_T_base_cam() -> np.ndarray:
    """(4, 4) pose of a forward-looking camera optical frame in base_link (no lever arm)."""
    T = np.eye(4)
    T[:3, :3] = R_BASE_OPTICAL
    return T


def write_frames_bag(frames: Iterable[Frame], output: str | Path, ground_truth: np.ndarray | None = None,
                     storage: str = "sqlite3", topics: BagTopics | None = None,
                     T_base_cam: np.ndarray | None = None) -> int:
    """Write ``frames`` (stamps as given) into a new rosbag2 at ``output``; returns the number of frames written.

    ground_truth: optional (N, 4, 4) T_world_cam per frame (in iteration order); frames whose
    ``T_world_cam_gt`` is set use that instead. DatasetError when ``output`` exists; nothing is left
    at ``output`` when writing fails.
    """
    topics = topics or BagTopics()
    T_base_cam = default_T_base_cam() if T_base_cam is None else np.asarray(T_base_cam, dtype=np.float64)
    if Path(output).exists():
        raise DatasetError(f"{output} exists already; choose another --output (make-bag writes a new bag)")
    count = 0
    with atomic_dir(output) as partial, BagWriter(partial, storage=storage) as bag:
        f = bag.factory
        for i, frame in enumerate(frames):
            frame.validate()
            stamp = int(frame.stamp_ns)
            if count == 0:
                static = cv.transform_stamped_msg(f, stamp, topics.base_frame, topics.camera_frame, T_base_cam)
                bag.write("/tf_static", cv.tf_message(f, [static]), stamp)
            bag.write(topics.camera_info, cv.camera_info_msg(f, stamp, topics.camera_frame, frame.camera), stamp)
            encoding = "mono8" if frame.image.ndim == 2 else "rgb8"
            bag.write(topics.image, cv.image_msg(f, stamp, topics.camera_frame, frame.image, encoding), stamp)
            if frame.depth is not None:
                depth = np.nan_to_num(frame.depth.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
                bag.write(topics.depth, cv.image_msg(f, stamp, topics.camera_frame, depth, "32FC1"), stamp)
            T_gt = frame.T_world_cam_gt
            if T_gt is None and ground_truth is not None and i < len(ground_truth):
                T_gt = ground_truth[i]
            if T_gt is not None:
                tf = cv.transform_stamped_msg(f, stamp, topics.gt_world_frame, topics.gt_camera_frame, T_gt)
                bag.write("/tf", cv.tf_message(f, [tf]), stamp)
                pose = f("geometry_msgs/msg/PoseStamped")(header=cv.header_msg(f, stamp, topics.gt_world_frame),
                                                          pose=cv.pose_msg(f, T_gt))
                bag.write(topics.ground_truth, pose, stamp)
            count += 1
    logger.info("wrote %d frames to %s", count, output)
    return count


def on_bag_timeline(frames: Iterable[Frame]) -> Iterator[Frame]:
    """``frames`` with ``BAG_EPOCH_NS`` added to every stamp when the first one lies before it (relative times)."""
    offset = None
    for frame in frames:
        if offset is None:
            offset = BAG_EPOCH_NS if frame.stamp_ns < BAG_EPOCH_NS else 0
        yield dataclasses.replace(frame, stamp_ns=frame.stamp_ns + offset) if offset else frame


def make_bag(source: str | Path, output: str | Path, sequence: str | None = None, storage: str = "sqlite3",
             progress: bool = False, **sequence_options: Any) -> int:
    """Open ``source`` with ``kp_vo.datasets.open_sequence`` and write it as a rosbag2 (see module doc);
    ``progress``: a progress bar on stderr."""
    from tqdm import tqdm

    from kp_vo.datasets import open_sequence

    seq = open_sequence(source, sequence=sequence, **sequence_options)
    gt = seq.ground_truth()
    logger.info("writing %s (%d frames, depth=%s) to %s", seq.name, len(seq), seq.has_depth, output)
    frames = tqdm(seq, total=len(seq), unit="frame", disable=not progress, mininterval=0.5, dynamic_ncols=True)
    with frames:
        return write_frames_bag(on_bag_timeline(frames), output, ground_truth=gt, storage=storage)
