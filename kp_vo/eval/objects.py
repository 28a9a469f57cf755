"""3D-object KeypointNet evaluation (Suwajanakorn et al.): relative-pose angular error on held-out
rendered view pairs.

For two views of one object with the ground-truth transform T_2_1 (view-1 camera -> view-2 camera):
1. the model predicts N keypoints (u, v, z) per view; z is depth relative to the known object
   distance ``z_offset`` (as in training), so a keypoint lifts to the camera point
   X = z' K^-1 (u, v, 1) with z' = z + z_offset;
2. R_hat is the rotation of the rigid Procrustes fit X2 ~ R X1 + t (``kp_vo.geometry.procrustes``);
3. the error is the geodesic angle 2 arcsin(|R_hat - R_2_1|_F / (2 sqrt 2)), in degrees.
The summary over pairs: mean, median and the fraction of pairs under 10 and 30 degrees, beside the
same summary for the no-rotation answer R_hat = I (``no_rotation_baseline``: how far apart the views are).

Held-out pairs (``held_out_pairs``): chairs from seeds that neither the training split (offset 0)
nor the validation split (offset 100 000) of the ``object_keypoints`` recipe uses (offset 200 000),
seen from random views drawn as in training, rendered by ``kp_vo.datasets.objects``. The metric
functions are numpy only; the model loader (``ObjectKeypointModel``: exported ONNX, training
checkpoint or weights file) imports torch or ONNX Runtime when called.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kp_vo.datasets.objects import make_chair, object_camera, random_view, render_object
from kp_vo.errors import InvalidInputError, ModelFileError
from kp_vo.geometry.procrustes import procrustes

log = logging.getLogger(__name__)

KIND = "object_keypointnet"
THRESHOLDS_DEG = (10.0, 30.0)
HELD_OUT_SEED_OFFSET = 200_000       # training chairs use offset 0, validation chairs 100 000


def rotation_angular_distance_deg(R_hat: np.ndarray, R: np.ndarray) -> np.ndarray | float:
    """Geodesic angle in degrees, 2 arcsin(|R_hat - R|_F / (2 sqrt 2)), between rotations (..., 3, 3);
    a float for two (3, 3) matrices, else an array of the leading shape."""
    R_hat, R = np.asarray(R_hat, np.float64), np.asarray(R, np.float64)
    if R_hat.shape != R.shape or R.shape[-2:] != (3, 3):
        raise InvalidInputError(f"rotation distance needs two (..., 3, 3) arrays of one shape, got {R_hat.shape} "
                                f"and {R.shape}")
    fro = np.sqrt(((R_hat - R) ** 2).sum(axis=(-2, -1)))
    angle = np.degrees(2.0 * np.arcsin(np.clip(fro / (2.0 * math.sqrt(2.0)), 0.0, 1.0)))
    return float(angle) if angle.ndim == 0 else angle


def lift_keypoints(uvz: np.ndarray, K: np.ndarray, z_offset: float) -> np.ndarray:
    """(N, 3) keypoints (u, v, z relative to ``z_offset``) -> (N, 3) float64 camera points
    (x right, y down, z forward)."""
    uvz = np.asarray(uvz, np.float64)
    if uvz.ndim != 2 or uvz.shape[1] != 3:
        raise InvalidInputError(f"keypoints must be (N, 3) (u, v, z), got {uvz.shape}")
    z = uvz[:, 2] + z_offset
    return np.stack([(uvz[:, 0] - K[0, 2]) / K[0, 0] * z, (uvz[:, 1] - K[1, 2]) / K[1, 1] * z, z], axis=1)


def relative_rotation_error_deg(uvz1: np.ndarray, uvz2: np.ndarray, K: np.ndarray, R_2_1: np.ndarray,
                                z_offset: float) -> float:
    """Angular error (degrees) of the Procrustes rotation between the lifted keypoints of two views
    (uvz1, uvz2 (N, 3), N >= 3, keypoint i of both views is the same semantic point) and R_2_1 (3, 3)."""
    if len(uvz1) < 3 or np.shape(uvz1) != np.shape(uvz2):
        raise InvalidInputError(f"need two (N, 3) keypoint sets with N >= 3, got {np.shape(uvz1)} and {np.shape(uvz2)}")
    T_2_1_hat = procrustes(lift_keypoints(uvz1, K, z_offset), lift_keypoints(uvz2, K, z_offset))
    return rotation_angular_distance_deg(T_2_1_hat[:3, :3], np.asarray(R_2_1)[:3, :3])


@dataclass
class ObjectViewPair:
    """image1, image2: (S, S, 3) float32 RGB in [0, 1]; K (3, 3) of both renders; T_2_1 (4, 4) maps
    view-1 camera coordinates to view-2 camera coordinates; seed of the rendered chair."""

    image1: np.ndarray
    image2: np.ndarray
    K: np.ndarray
    T_2_1: np.ndarray
    seed: int


def held_out_pairs(num_pairs: int, size: int = 64, distance: float = 4.0, num_objects: int = 10,
                   seed: int = 0) -> list[ObjectViewPair]:
    """``num_pairs`` view pairs of ``num_objects`` held-out chairs (see module docstring), deterministic in ``seed``."""
    if num_pairs < 1 or num_objects < 1:
        raise InvalidInputError(f"need at least one pair and one object, got {num_pairs} pairs, {num_objects} objects")
    K = object_camera(size, size, distance)
    seeds = [seed * 1_000_003 + HELD_OUT_SEED_OFFSET + i for i in range(num_objects)]
    chairs = [make_chair(s) for s in seeds]
    pairs = []
    for k in range(num_pairs):
        rng = np.random.default_rng([seed, 2, k])
        T1, T2 = random_view(rng, distance), random_view(rng, distance)
        obj = k % num_objects
        images = [render_object(chairs[obj], T, K, size, size)[0] for T in (T1, T2)]
        pairs.append(ObjectViewPair(images[0], images[1], K, np.linalg.inv(T2) @ T1, seeds[obj]))
    return pairs


@dataclass
class ObjectPoseMetrics:
    """Angular errors (degrees) of every pair and their summary."""

    errors_deg: np.ndarray
    mean_deg: float
    median_deg: float
    under: dict[float, float]          # threshold (deg) -> fraction of pairs below it

    def as_dict(self) -> dict:
        return {"pairs": len(self.errors_deg), "mean_deg": self.mean_deg, "median_deg": self.median_deg,
                **{f"under_{t:g}deg": v for t, v in self.under.items()}}


def summarize(errors_deg: Sequence[float], thresholds: Sequence[float] = THRESHOLDS_DEG) -> ObjectPoseMetrics:
    e = np.asarray(errors_deg, np.float64)
    if e.size == 0:
        raise InvalidInputError("no pairs to summarize")
    under = {float(t): float(np.mean(e < t)) for t in thresholds}
    return ObjectPoseMetrics(e, float(e.mean()), float(np.median(e)), under)


def evaluate_pairs(predict: Callable[[np.ndarray], np.ndarray], pairs: Sequence[ObjectViewPair], z_offset: float,
                   batch_size: int = 16) -> ObjectPoseMetrics:
    """``predict`` maps images (B, S, S, 3) float32 in [0, 1] to keypoints (B, N, 3) (u, v, z); both views
    of every pair go through it, then ``relative_rotation_error_deg`` per pair."""
    errors = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        uvz = np.asarray(predict(np.stack([p.image1 for p in chunk] + [p.image2 for p in chunk])), np.float64)
        if uvz.ndim != 3 or uvz.shape[0] != 2 * len(chunk) or uvz.shape[2] != 3:
            raise InvalidInputError(f"keypoint predictor must return (B, N, 3), got {uvz.shape}")
        for i, p in enumerate(chunk):
            errors.append(relative_rotation_error_deg(uvz[i], uvz[len(chunk) + i], p.K, p.T_2_1[:3, :3], z_offset))
    return summarize(errors)


def no_rotation_baseline(pairs: Sequence[ObjectViewPair]) -> ObjectPoseMetrics:
    """The errors of answering R_hat = I for every pair, i.e. the true rotation between the two views:
    the scale against which a model's errors read (a model that learned nothing useful scores about this)."""
    return summarize([rotation_angular_distance_deg(np.eye(3), p.T_2_1[:3, :3]) for p in pairs])


# --------------------------------------------------------------------------------- model loading
def _checkpoint_json(path: Path) -> dict | None:
    """The JSON sidecar of a ``kp_vo.training.checkpoint`` file, or None for other files."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return None
    return meta if str(meta.get("format", "")).startswith("kp_vo.training.checkpoint") else None


def _model_options(shapes: dict[str, tuple[int, ...]], source: str) -> dict:
    """num_keypoints and width of an ObjectKeypointNet from its output layer's weight shape (2N, width, 3, 3)."""
    shape = shapes.get("keypoint_net.out.weight")
    if shape is None or len(shape) != 4 or shape[0] % 2:
        raise ModelFileError(f"{source}: not {KIND} weights (no keypoint_net.out.weight of shape (2N, width, 3, 3))")
    return {"num_keypoints": shape[0] // 2, "width": shape[1]}


class ObjectKeypointModel:
    """The object KeypointNet behind ``predict(images (B, S, S, 3) float32 in [0, 1]) -> uvz (B, N, 3)``.

    path: an exported ``.onnx`` (ONNX Runtime), a training checkpoint (``step_N.safetensors`` or its
    ``.json`` sidecar, checksum verified) or a weights file (``weights/object_keypointnet.safetensors``);
    the number of keypoints and the width are read from the weights. ``trained`` is False for
    exports marked untrained. ``description`` says what was loaded.
    """

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: model file not found")
        self._onnx = None
        self._torch = None
        if path.suffix == ".onnx":
            from kp_vo.runtime.session import OnnxModel

            self._onnx = OnnxModel(path, expected_kind=KIND, device=device)
            m = self._onnx.meta
            self.mean, self.std, self.value_range, self.trained = m.mean, m.std, m.value_range, m.trained
            self.description = f"ONNX {path.name} ({self._onnx.provider})"
        elif path.suffix in (".safetensors", ".json"):
            self._load_torch(path, device)
        else:
            raise ModelFileError(f"{path}: expected an exported .onnx, a training checkpoint or a .safetensors file")

    def _load_torch(self, path: Path, device: str) -> None:
        import torch

        from kp_vo.models import build_model

        checkpoint = _checkpoint_json(path)
        if checkpoint is not None:
            from safetensors import safe_open

            from kp_vo.models.checkpoints import load_checkpoint_models

            tensor_path = path.parent / checkpoint.get("tensors", path.with_suffix(".safetensors").name)
            prefix = f"model/{KIND}/"
            try:
                with safe_open(str(tensor_path), framework="pt") as f:
                    names = [k for k in f.keys() if k.startswith(prefix)]  # noqa: SIM118  (a safetensors handle)
                    shapes = {k[len(prefix):]: tuple(f.get_slice(k).get_shape()) for k in names}
            except Exception as exc:  # noqa: BLE001  (safetensors raises several types for corrupt files)
                first = (str(exc).splitlines() or [""])[0][:120]
                raise ModelFileError(f"{tensor_path}: unreadable checkpoint ({type(exc).__name__}: {first})") from None
            model = build_model(KIND, **_model_options(shapes, str(tensor_path)))
            step = int(load_checkpoint_models(path, {KIND: model})[1]["step"])
            self.description = f"training checkpoint {path.name} (step {step})"
        else:
            from kp_vo.models.checkpoints import load_weights, read_state_dict

            state, _ = read_state_dict(path)
            model = build_model(KIND, **_model_options({k: tuple(v.shape) for k, v in state.items()}, str(path)))
            load_weights(model, state, KIND, source=str(path))
            self.description = f"weights {path.name}"
        if device not in ("cpu", "cuda", "auto"):
            raise InvalidInputError(f"unknown device {device!r} for torch weights (cpu, cuda or auto)")
        self._device = torch.device("cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu")
        self._torch = model.to(self._device).eval()
        spec = model.spec()
        self.mean, self.std, self.value_range, self.trained = spec.mean, spec.std, spec.value_range, True

    def predict(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images, np.float32)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InvalidInputError(f"images must be (B, H, W, 3) RGB in [0, 1], got {images.shape}")
        lo, hi = self.value_range
        x = (lo + images * (hi - lo) - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if self._onnx is not None:
            return self._onnx.run(x)["uvz"]
        import torch

        with torch.no_grad():
            return self._torch({"image": torch.from_numpy(x).to(self._device)})["uvz"].cpu().numpy()
