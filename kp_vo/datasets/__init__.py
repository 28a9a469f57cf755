"""Dataset loaders yielding ``kp_vo.types.Frame``s, and ``open_sequence`` which picks one from a path.

Layouts recognised by ``open_sequence(path, sequence=None, **options)``:
    "synthetic", "synthetic:street", "synthetic:room"   rendered scenes (SyntheticSequence)
    "synthetic:random_room" (option seed=K)              room K of random layout (SyntheticSequence)
    ROOT with sequences/ (KITTI odometry root)           KittiOdometry(ROOT, sequence)
    ROOT/sequences/SS (a KITTI sequence folder)          KittiOdometry(ROOT/sequences/SS)
    KITTI raw day folder (calib_cam_to_cam.txt)          KittiRaw(DAY/DAY_drive_NNNN_sync), sequence = NNNN
    KITTI raw drive folder (image_0K/data, oxts)         KittiRaw(folder) (options camera, lidar_depth)
    7-Scenes scene folder (seq-XX/frame-*.color.png)     SevenScenes(SCENE, sequence) ("seq-01", "train", ...)
    7-Scenes seq-XX folder                               SevenScenes(SCENE/seq-XX)
    folder with rgb.txt and a *_gt.txt (CoRBS)           CoRBS(folder)
    "corbs:FOLDER" (CoRBS with groundtruth.txt)          CoRBS(FOLDER)
    folder with rgb.txt (+ depth.txt) (TUM RGB-D)        TumRgbd(folder)
    folder of png/jpg images                             ImageFolder(folder, camera=...) (needs ``camera``
                                                         (CameraIntrinsics) or ``intrinsics`` (fx, fy, cx, cy))
Options ``start``, ``stride``, ``max_frames`` work for every loader; others go to the loader.
(The renderer function is ``kp_vo.datasets.synthetic.render`` / ``kp_vo.datasets.render.render``; it is not
re-exported here so that ``kp_vo.datasets.render`` stays the module.)
"""

from __future__ import annotations

import logging
from pathlib import Path

from kp_vo.datasets.base import IndexedSequence, Sequence, select_indices
from kp_vo.datasets.corbs import CoRBS, looks_like_corbs
from kp_vo.datasets.image_folder import ImageFolder, list_images
from kp_vo.datasets.kitti import KittiOdometry, parse_kitti_calib
from kp_vo.datasets.kitti_raw import KittiRaw, drive_names, find_drive, is_day_folder, is_drive_folder
from kp_vo.datasets.sevenscenes import SevenScenes, is_scene_folder, is_sequence_folder
from kp_vo.datasets.synthetic import (
    SyntheticSequence,
    make_scene,
    room_trajectory,
    street_trajectory,
)
from kp_vo.datasets.tum import TumRgbd
from kp_vo.errors import DatasetError
from kp_vo.trajio import read_kitti_poses
from kp_vo.types import CameraIntrinsics

__all__ = ["CoRBS", "ImageFolder", "IndexedSequence", "KittiOdometry", "KittiRaw", "Sequence", "SevenScenes",
           "SyntheticSequence", "TumRgbd", "make_scene", "open_sequence", "parse_kitti_calib", "read_kitti_poses",
           "room_trajectory", "select_indices", "street_trajectory"]

logger = logging.getLogger(__name__)


def _image_folder_camera(path: Path, options: dict) -> CameraIntrinsics:
    camera = options.pop("camera", None)
    intrinsics = options.pop("intrinsics", None)
    if camera is None and intrinsics is None:
        raise DatasetError(f"{path}: an image folder needs intrinsics (option camera=CameraIntrinsics or "
                           f"intrinsics=(fx, fy, cx, cy))")
    if camera is not None:
        return camera
    try:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
    except (TypeError, ValueError):
        raise DatasetError(f"intrinsics must be (fx, fy, cx, cy), got {intrinsics!r}") from None
    import cv2  # size from the first image
    first = list_images(path)
    img = cv2.imread(str(first[0]), cv2.IMREAD_UNCHANGED) if first else None
    if img is None:
        raise DatasetError(f"{path}: no readable png/jpg image")
    return CameraIntrinsics(fx, fy, cx, cy, img.shape[1], img.shape[0])


def open_sequence(path: str, sequence: str | None = None, **options) -> Sequence:
    """The loader for ``path`` (see module docstring); raises DatasetError for unknown layouts."""
    spec = str(path)
    if spec == "synthetic" or spec.startswith("synthetic:"):
        kind = spec.partition(":")[2] or sequence or "street"
        if options.get("max_frames") is not None and options.get("num_frames") is None and options.get("trajectory") is None:
            # Render just enough frames for the selection instead of the default length.
            options["num_frames"] = int(options.get("start") or 0) + (int(options["max_frames"]) - 1) * int(
                options.get("stride") or 1) + 1
        return SyntheticSequence(kind, **options)
    force_corbs = spec.startswith("corbs:")
    root = Path(spec[len("corbs:"):] if force_corbs else spec).expanduser()
    if not root.exists():
        raise DatasetError(f"{root}: no such dataset path (expected a folder, or 'synthetic[:street|room|random_room]')")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected a KITTI, 7-Scenes, TUM RGB-D, CoRBS or image folder)")
    if force_corbs:
        return CoRBS(root, **options)
    if (root / "sequences").is_dir():
        if sequence is None:
            found = sorted(p.name for p in (root / "sequences").iterdir() if p.is_dir())
            raise DatasetError(f"{root}: KITTI odometry root needs a sequence (available: {', '.join(found) or 'none'})")
        return KittiOdometry(root, sequence, **options)
    if root.parent.name == "sequences" and (root / "calib.txt").is_file():
        if sequence is not None and str(sequence).zfill(2) != root.name:
            raise DatasetError(f"{root}: path is KITTI sequence {root.name} but sequence={sequence!r} was given")
        return KittiOdometry(root, None, **options)
    if is_day_folder(root):
        return KittiRaw(find_drive(root, sequence), **options)
    if is_drive_folder(root):
        if sequence is not None and str(sequence) not in drive_names(root):
            raise DatasetError(f"{root}: path is KITTI raw drive {root.name} but sequence={sequence!r} was given")
        return KittiRaw(root, **options)
    if is_sequence_folder(root) or is_scene_folder(root):
        return SevenScenes(root, sequence, **options)
    if looks_like_corbs(root):
        return CoRBS(root, **options)
    if (root / "rgb.txt").is_file() or (root / "depth.txt").is_file():
        return TumRgbd(root, **options)
    if list_images(root):
        camera = _image_folder_camera(root, options)
        return ImageFolder(root, camera, **options)
    raise DatasetError(f"{root}: unknown dataset layout (expected 'sequences/' (KITTI), seq-XX/frame-*.color.png "
                       f"(7-Scenes), calib_cam_to_cam.txt (KITTI raw day), rgb.txt/depth.txt (TUM RGB-D, CoRBS) "
                       f"or png/jpg images)")
