"""Microsoft 7-Scenes loader (Shotton et al., "Scene Coordinate Regression Forests for Camera
Relocalization in RGB-D Images", CVPR 2013).

Layout (as distributed, one folder per scene: chess, fire, heads, office, pumpkin, redkitchen, stairs)::

    SCENE/seq-XX/frame-NNNNNN.color.png   640x480 8-bit colour
    SCENE/seq-XX/frame-NNNNNN.depth.png   640x480 16-bit depth in millimetres, 65535 = invalid
    SCENE/seq-XX/frame-NNNNNN.pose.txt    4x4 camera-to-world matrix (T_world_cam), 4 lines of 4 numbers
    SCENE/TrainSplit.txt, TestSplit.txt   "sequenceK" per line (the official relocalization split)

Open a scene with a sequence name ("seq-01", "01", "1", several as "seq-01,seq-02", or "train" /
"test" for the official split), or a ``seq-XX`` folder directly. Frames of several sequences follow
one another in the given order.

Intrinsics: fx = fy = 585, cx = 320, cy = 240 (640x480) -- the depth camera's calibration, which the
relocalization literature uses for both images. In the raw release colour and depth are NOT
registered (the colour camera sits beside the depth camera and no extrinsics are published), so a
colour pixel and the depth pixel at the same (u, v) see only approximately the same point; depth-only
consumers (ViewSynth) are unaffected. Depth is returned in metres with the invalid value 65535 (and 0)
as 0, the package's "no depth" value. Poses are the ground truth T_world_cam of the dataset
(KinectFusion); a pose file holding NaN/inf gives an all-NaN pose (no ground truth for that frame).
There are no timestamps: frame k of the selection's raw list is stamped k / 30 s (the Kinect rate).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import cv2
import numpy as np

from kp_vo.datasets.base import IndexedSequence, read_depth_png, read_image_u8
from kp_vo.errors import DatasetError
from kp_vo.types import CameraIntrinsics

logger = logging.getLogger(__name__)

#: (fx, fy, cx, cy) used for 7-Scenes (depth camera, 640x480).
SEVEN_SCENES_INTRINSICS = (585.0, 585.0, 320.0, 240.0)
INVALID_DEPTH = 65535
FPS = 30.0

_FRAME = re.compile(r"^frame-(\d+)\.color\.png$")
_SEQ = re.compile(r"^seq-(\d+)$")
_SPLIT_LINE = re.compile(r"^sequence(\d+)$")


def sequence_folder_name(name: str | int) -> str:
    """"seq-01" from "seq-01", "01", "1" or 1; DatasetError for anything else."""
    text = str(name).strip()
    m = _SEQ.match(text) or re.match(r"^(\d+)$", text)
    if not m:
        raise DatasetError(f"7-Scenes sequence must look like 'seq-01', '01', 'train' or 'test', got {name!r}")
    return f"seq-{int(m.group(1)):02d}"


def list_sequences(scene: str | Path) -> list[str]:
    """Sorted ``seq-XX`` folder names of a scene folder."""
    scene = Path(scene)
    return sorted(p.name for p in scene.iterdir() if p.is_dir() and _SEQ.match(p.name))


def is_sequence_folder(path: str | Path) -> bool:
    """A ``seq-XX`` folder holding at least one ``frame-*.color.png``."""
    path = Path(path)
    return bool(_SEQ.match(path.name)) and path.is_dir() and next(path.glob("frame-*.color.png"), None) is not None


def is_scene_folder(path: str | Path) -> bool:
    """A folder with at least one ``seq-XX`` sub-folder that holds 7-Scenes frames."""
    path = Path(path)
    return path.is_dir() and any(is_sequence_folder(path / name) for name in list_sequences(path))


def read_split(path: str | Path) -> list[str]:
    """``seq-XX`` names listed by a TrainSplit.txt / TestSplit.txt ("sequenceK" per line)."""
    path = Path(path)
    try:
        lines = path.read_text().split()
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    names = []
    for token in lines:
        m = _SPLIT_LINE.match(token.strip().lower())
        if not m:
            raise DatasetError(f"{path}: expected lines 'sequenceK', got {token[:40]!r}")
        names.append(f"seq-{int(m.group(1)):02d}")
    if not names:
        raise DatasetError(f"{path}: lists no sequence")
    return names


def read_pose_file(path: str | Path) -> np.ndarray:
    """(4, 4) float64 T_world_cam from a 7-Scenes ``frame-*.pose.txt`` (NaN-filled if it holds NaN/inf)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"cannot read pose file {path}: {e.strerror or e}") from None
    try:
        values = np.array([float(v) for v in text.split()], np.float64)
    except ValueError:
        raise DatasetError(f"{path}: pose file must hold 16 numbers (a 4x4 matrix), found text") from None
    if values.size != 16:
        raise DatasetError(f"{path}: pose file must hold 16 numbers (a 4x4 matrix), found {values.size}")
    T = values.reshape(4, 4)
    if not np.all(np.isfinite(T)):
        return np.full((4, 4), np.nan)
    if not np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=1e-4):
        raise DatasetError(f"{path}: last row of the pose must be 0 0 0 1, got {T[3].tolist()}")
    return T


def resolve_sequences(root: Path, sequence: str | int | None) -> tuple[Path, list[str]]:
    """(scene folder, ``seq-XX`` names) for a scene folder + sequence spec, or a ``seq-XX`` folder."""
    if is_sequence_folder(root):
        if sequence is not None and sequence_folder_name(sequence) != root.name:
            raise DatasetError(f"{root}: path is 7-Scenes sequence {root.name} but sequence={sequence!r} was given")
        return root.parent, [root.name]
    available = list_sequences(root) if root.is_dir() else []
    if not available:
        raise DatasetError(f"{root}: not a 7-Scenes scene or sequence folder (no seq-XX/frame-*.color.png)")
    if sequence is None:
        raise DatasetError(f"{root}: 7-Scenes scene needs a sequence (available: {', '.join(available)}, "
                           f"or train / test)")
    spec = str(sequence).strip()
    if spec.lower() in ("train", "test"):
        names = read_split(root / ("TrainSplit.txt" if spec.lower() == "train" else "TestSplit.txt"))
    else:
        names = [sequence_folder_name(s) for s in spec.split(",") if s.strip()]
    missing = [n for n in names if n not in available]
    if missing:
        raise DatasetError(f"{root}: no sequence {', '.join(missing)} (available: {', '.join(available)})")
    return root, names


class SevenScenes(IndexedSequence):
    """One or more 7-Scenes sequences (see module docstring); frames carry (480, 640, 3) uint8 RGB,
    (480, 640) float32 depth in metres (0 = invalid) and the ground-truth pose.

    Options: ``depth_scale`` (PNG units per metre, 1000), ``fx, fy, cx, cy`` (override the defaults).
    """

    def __init__(self, root: str | Path, sequence: str | int | None = None, depth_scale: float = 1000.0,
                 fx: float | None = None, fy: float | None = None, cx: float | None = None,
                 cy: float | None = None, start: int = 0, stride: int = 1, max_frames: int | None = None):
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: no such 7-Scenes folder")
        if depth_scale <= 0:
            raise DatasetError(f"depth_scale must be positive, got {depth_scale}")
        scene, names = resolve_sequences(root, sequence)
        self.root, self.sequences, self.depth_scale = scene, names, float(depth_scale)
        self.name = f"7scenes_{scene.name}_{'+'.join(names)}"

        # File lists of every selected sequence, in order.
        self._color: list[Path] = []
        self._depth: list[Path | None] = []
        self._seq_of: list[str] = []
        for name in names:
            folder = scene / name
            frames = sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _FRAME.match(p.name)))
            if not frames:
                raise DatasetError(f"{folder}: no frame-*.color.png images")
            for number, color in frames:
                depth = folder / f"frame-{number:06d}.depth.png"
                self._color.append(color)
                self._depth.append(depth if depth.is_file() else None)
                self._seq_of.append(name)
        with_depth = sum(d is not None for d in self._depth)
        if 0 < with_depth < len(self._depth):
            first = next(c for c, d in zip(self._color, self._depth) if d is None)
            raise DatasetError(f"{first}: has no matching .depth.png while other frames do")
        self.has_depth = with_depth > 0

        # Ground truth: one pose file per colour frame, required.
        poses = np.empty((len(self._color), 4, 4))
        for k, color in enumerate(self._color):
            poses[k] = read_pose_file(color.with_name(color.name.replace(".color.png", ".pose.txt")))
        missing = int(np.isnan(poses[:, 0, 0]).sum())
        if missing:
            logger.warning("%s: %d frames have non-finite poses (no ground truth)", self.name, missing)

        first = cv2.imread(str(self._color[0]), cv2.IMREAD_UNCHANGED)
        if first is None:
            raise DatasetError(f"{self._color[0]}: cannot read image")
        h, w = first.shape[:2]
        dfx, dfy, dcx, dcy = SEVEN_SCENES_INTRINSICS
        self.camera = CameraIntrinsics(fx if fx is not None else dfx, fy if fy is not None else dfy,
                                       cx if cx is not None else dcx, cy if cy is not None else dcy, w, h)
        stamps = np.round(np.arange(len(self._color)) * (1e9 / FPS)).astype(np.int64)
        self._set_frames(stamps, poses, start, stride, max_frames)
        logger.info("7-Scenes %s %s: %d frames, depth=%s", scene.name, ",".join(names), len(self), self.has_depth)

    def _load(self, raw_index: int) -> tuple[np.ndarray, np.ndarray | None]:
        path = self._color[raw_index]
        image = read_image_u8(path)
        if image.shape[:2] != (self.camera.height, self.camera.width):
            raise DatasetError(f"{path}: image is {image.shape[1]}x{image.shape[0]} but the sequence is "
                               f"{self.camera.width}x{self.camera.height}")
        dpath = self._depth[raw_index]
        depth = None if dpath is None else read_depth_png(dpath, image.shape[:2], self.depth_scale, INVALID_DEPTH)
        return image, depth

    def _frame_meta(self, raw_index: int) -> dict:
        meta = {"raw_index": int(raw_index), "path": str(self._color[raw_index]), "sequence": self._seq_of[raw_index]}
        if self._depth[raw_index] is not None:
            meta["depth_path"] = str(self._depth[raw_index])
        return meta
