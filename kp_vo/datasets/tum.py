"""TUM RGB-D benchmark loader.

Layout::

    ROOT/rgb.txt          "timestamp filename" per line ("#" comments), filenames relative to ROOT
    ROOT/depth.txt        same, 16-bit PNG depth, value / 5000 = metres (0 = invalid)
    ROOT/groundtruth.txt  optional, "timestamp tx ty tz qx qy qz qw" (T_world_cam, Hamilton, w last)

Each RGB image is paired with the depth image of nearest timestamp within ``max_time_diff``
seconds (RGB images without one are dropped). Ground truth is interpolated at the RGB stamps
(position: linear, rotation: slerp); frames outside the ground-truth time span (or in a gap
longer than ``max_gt_gap`` seconds) get an all-NaN pose.

Filenames in the list files may use Windows separators ("rgb\\0001.png"); they are read as "/".
Subclasses for TUM-like layouts (``kp_vo.datasets.corbs.CoRBS``) override ``name_prefix``,
``default_intrinsics`` and ``groundtruth_path``.
"""

from __future__ import annotations

import logging
import re
from decimal import InvalidOperation
from pathlib import Path

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from kp_vo.datasets.base import IndexedSequence, read_depth_png, read_image_u8
from kp_vo.errors import DatasetError
from kp_vo.trajio import parse_stamp, read_tum_trajectory, stamps_to_seconds
from kp_vo.types import CameraIntrinsics

logger = logging.getLogger(__name__)

#: (fx, fy, cx, cy) of the Freiburg Kinects (TUM RGB-D web page) and the ROS default.
TUM_INTRINSICS = {
    "fr1": (517.3, 516.5, 318.6, 255.3),
    "fr2": (520.9, 521.0, 325.1, 249.7),
    "fr3": (535.4, 539.2, 320.1, 247.6),
    "default": (525.0, 525.0, 319.5, 239.5),
}


def tum_intrinsics_key(folder_name: str) -> str:
    """"fr1" / "fr2" / "fr3" from a folder name such as ``rgbd_dataset_freiburg1_xyz``, else "default"."""
    m = re.search(r"(?:freiburg|fr)([123])", folder_name.lower())
    return f"fr{m.group(1)}" if m else "default"


def read_tum_list(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(N,) int64 stamps (nanoseconds, exactly the decimal seconds written) and N filenames from an rgb.txt /
    depth.txt file."""
    path = Path(path)
    stamps, names = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    for lineno, line in enumerate(lines, start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        try:
            stamps.append(parse_stamp(parts[0]))
        except (ValueError, InvalidOperation):
            raise DatasetError(f"{path}:{lineno}: expected 'timestamp filename', got {line[:60]!r}") from None
        if len(parts) < 2:
            raise DatasetError(f"{path}:{lineno}: missing filename")
        names.append(parts[1].replace("\\", "/"))
    return np.array(stamps, np.int64), names


def associate_nearest(query: np.ndarray, reference: np.ndarray, max_diff: float) -> np.ndarray:
    """(len(query),) int64 index of the nearest ``reference`` stamp per query stamp, -1 if none within max_diff;
    a query exactly halfway between two reference stamps takes the earlier one.

    ``reference`` must be sorted ascending.
    """
    if len(reference) == 0:
        return np.full(len(query), -1, np.int64)
    right = np.clip(np.searchsorted(reference, query), 0, len(reference) - 1)
    left = np.clip(right - 1, 0, len(reference) - 1)
    best = np.where(np.abs(reference[left] - query) <= np.abs(reference[right] - query), left, right)
    best[np.abs(reference[best] - query) > max_diff] = -1
    return best.astype(np.int64)


def interpolate_poses(stamps: np.ndarray, gt_stamps: np.ndarray, gt_poses: np.ndarray,
                      max_gap: float = 0.1) -> np.ndarray:
    """(N, 4, 4) poses at ``stamps``: lerp of positions and slerp of rotations between gt samples.

    Stamps outside [gt_stamps[0], gt_stamps[-1]] or between samples further apart than
    ``max_gap`` seconds get all-NaN matrices.
    """
    out = np.full((len(stamps), 4, 4), np.nan)
    if len(gt_stamps) < 2:
        return out
    order = np.argsort(gt_stamps)
    gt_stamps, gt_poses = gt_stamps[order], gt_poses[order]
    k = np.searchsorted(gt_stamps, stamps, side="right") - 1
    k = np.clip(k, 0, len(gt_stamps) - 2)
    t0, t1 = gt_stamps[k], gt_stamps[k + 1]
    ok = (stamps >= gt_stamps[0]) & (stamps <= gt_stamps[-1]) & (t1 - t0 <= max_gap)
    if not ok.any():
        return out
    alpha = np.clip((stamps - t0) / np.maximum(t1 - t0, 1e-12), 0.0, 1.0)
    slerp = Slerp(gt_stamps, Rotation.from_matrix(gt_poses[:, :3, :3]))
    q = stamps[ok]
    out[ok] = np.eye(4)
    out[ok, :3, :3] = slerp(np.clip(q, gt_stamps[0], gt_stamps[-1])).as_matrix()
    p0, p1 = gt_poses[k[ok], :3, 3], gt_poses[k[ok] + 1, :3, 3]
    out[ok, :3, 3] = p0 + alpha[ok, None] * (p1 - p0)
    return out


class TumRgbd(IndexedSequence):
    """A TUM RGB-D sequence folder; frames carry (480, 640, 3) uint8 RGB and (480, 640) float32 depth in metres.

    Options: ``max_time_diff`` (s, rgb<->depth association), ``depth_scale`` (PNG units per metre),
    ``fx, fy, cx, cy`` (override the Freiburg defaults chosen from the folder name), ``max_gt_gap``.
    """

    name_prefix = "tum"

    def default_intrinsics(self, root: Path) -> tuple[str, tuple[float, float, float, float]]:
        """(label for the log, (fx, fy, cx, cy)) used when the options do not give them."""
        key = tum_intrinsics_key(root.name)
        return key, TUM_INTRINSICS[key]

    def groundtruth_path(self, root: Path) -> Path | None:
        """The ground-truth trajectory file of ``root``, or None when the sequence has none."""
        path = root / "groundtruth.txt"
        return path if path.is_file() else None

    def __init__(self, root: str | Path, max_time_diff: float = 0.02, depth_scale: float = 5000.0,
                 fx: float | None = None, fy: float | None = None, cx: float | None = None,
                 cy: float | None = None, max_gt_gap: float = 0.1,
                 start: int = 0, stride: int = 1, max_frames: int | None = None):
        root = Path(root)
        if not (root / "rgb.txt").is_file():
            raise DatasetError(f"{root}: not a TUM RGB-D folder (no rgb.txt)")
        if depth_scale <= 0:
            raise DatasetError(f"depth_scale must be positive, got {depth_scale}")
        self.root = root
        self.name = f"{self.name_prefix}_{root.name}"
        self.depth_scale = float(depth_scale)
        rgb_ns, rgb_names = read_tum_list(root / "rgb.txt")
        order = np.argsort(rgb_ns, kind="stable")
        rgb_ns, rgb_names = rgb_ns[order], [rgb_names[i] for i in order]
        rgb_t = stamps_to_seconds(rgb_ns)
        if len(rgb_t) == 0:
            raise DatasetError(f"{root / 'rgb.txt'}: no images listed")

        self.has_depth = (root / "depth.txt").is_file()
        depth_names: list[str | None] = [None] * len(rgb_t)
        if self.has_depth:
            d_ns, d_names = read_tum_list(root / "depth.txt")
            d_order = np.argsort(d_ns, kind="stable")
            d_t, d_names = stamps_to_seconds(d_ns[d_order]), [d_names[i] for i in d_order]
            match = associate_nearest(rgb_t, d_t, max_time_diff)
            keep = match >= 0
            if not keep.any():
                raise DatasetError(f"{root}: no rgb/depth pair within {max_time_diff} s")
            if not keep.all():
                logger.warning("%s: %d of %d rgb images have no depth within %.3f s; dropped",
                               root, int((~keep).sum()), len(keep), max_time_diff)
            rgb_t, rgb_ns = rgb_t[keep], rgb_ns[keep]
            rgb_names = [n for n, k in zip(rgb_names, keep) if k]
            depth_names = [d_names[j] for j in match[keep]]
        self._rgb_paths = [root / n for n in rgb_names]
        self._depth_paths = [None if n is None else root / n for n in depth_names]

        key, (dfx, dfy, dcx, dcy) = self.default_intrinsics(root)
        first = cv2.imread(str(self._rgb_paths[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise DatasetError(f"{self._rgb_paths[0]}: cannot read image")
        h, w = first.shape[:2]
        self.camera = CameraIntrinsics(fx if fx is not None else dfx, fy if fy is not None else dfy,
                                       cx if cx is not None else dcx, cy if cy is not None else dcy, w, h)

        poses = None
        gt_path = self.groundtruth_path(root)
        if gt_path is not None:
            gt_ns, gt_poses = read_tum_trajectory(gt_path, increasing=False)
            gt_t = stamps_to_seconds(gt_ns)
            poses = interpolate_poses(rgb_t, gt_t, gt_poses, max_gt_gap)
            missing = int(np.isnan(poses[:, 0, 0]).sum())
            if missing:
                logger.warning("%s: %d frames have no ground truth (NaN poses)", root, missing)
        self._set_frames(rgb_ns, poses, start, stride, max_frames)
        logger.info("%s %s: %d frames, intrinsics %s, depth=%s", type(self).__name__, root.name, len(self), key,
                    self.has_depth)

    def _load(self, raw_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        path = self._rgb_paths[raw_index]
        image = read_image_u8(path)
        dpath = self._depth_paths[raw_index]
        depth = None if dpath is None else read_depth_png(dpath, image.shape[:2], self.depth_scale)
        return image, depth

    def _frame_meta(self, raw_index: int) -> dict:
        meta = {"raw_index": int(raw_index), "path": str(self._rgb_paths[raw_index])}
        if self._depth_paths[raw_index] is not None:
            meta["depth_path"] = str(self._depth_paths[raw_index])
        return meta
