"""Image -> network input and network pixels -> input-image pixels."""

from __future__ import annotations

import cv2
import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.export.metadata import ModelMetadata
from kp_vo.features.base import to_gray


def fit_size(height: int, width: int, multiple: int, *, scale: float | None = None,
             target: tuple[int | None, int | None] | None = None) -> tuple[int, int]:
    """Network input (H, W): ``target`` (either part may be None = keep the scaled size), else
    ``scale`` * input size, each rounded to the nearest positive multiple of ``multiple``."""
    if scale is not None and scale <= 0:
        raise InvalidInputError(f"scale must be > 0, got {scale}")
    s = 1.0 if scale is None else float(scale)
    th, tw = (None, None) if target is None else target
    h = th if th is not None else height * s
    w = tw if tw is not None else width * s
    return (max(multiple, int(round(h / multiple)) * multiple), max(multiple, int(round(w / multiple)) * multiple))


def image_to_input(image: np.ndarray, meta: ModelMetadata, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) or (H, W, 3) uint8 RGB image -> (1, C, h, w) float32 normalised as the metadata says."""
    h, w = size_hw
    if meta.channels == 3:
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    else:
        rgb = to_gray(image)[:, :, None]
    x = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if w < image.shape[1] else cv2.INTER_LINEAR)
    x = x.reshape(h, w, -1).astype(np.float32)
    lo, hi = meta.value_range
    x = lo + x * ((hi - lo) / 255.0)
    x = (x - np.asarray(meta.mean, np.float32)) / np.asarray(meta.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def depth_to_input(depth: np.ndarray, meta: ModelMetadata, size_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) depth (float metres, or uint16 millimetres; 0/NaN invalid) -> (1, 1, h, w) in [0, 1]
    (depth / max valid depth, invalid 0), then (x - mean) / std."""
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or depth.shape[0] < 16 or depth.shape[1] < 16:
        raise InvalidInputError(f"depth must be an (H, W) array of at least 16x16, got "
                                f"{getattr(depth, 'shape', type(depth).__name__)}")
    if depth.dtype == np.uint16:
        d = depth.astype(np.float32) / 1000.0
    elif depth.dtype in (np.float32, np.float64):
        d = depth.astype(np.float32)
    else:
        raise InvalidInputError(f"depth must be float32 metres or uint16 millimetres, got {depth.dtype}")
    d = np.where(np.isfinite(d) & (d > 0), d, 0.0).astype(np.float32)
    peak = float(d.max())
    if peak <= 0:
        raise InvalidInputError("depth image has no valid (finite, > 0) pixel")
    h, w = size_hw
    x = cv2.resize(d / peak, (w, h), interpolation=cv2.INTER_NEAREST)
    x = (x - meta.mean[0]) / meta.std[0]
    return np.ascontiguousarray(x[None, None].astype(np.float32))


def to_input_pixels(uv: np.ndarray, net_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """(N, 2) network pixel (u, v) -> input-image pixels (pixel centres at integers on both sides)."""
    sy, sx = image_hw[0] / net_hw[0], image_hw[1] / net_hw[1]
    out = np.empty_like(uv, dtype=np.float32)
    out[:, 0] = (uv[:, 0] + 0.5) * sx - 0.5
    out[:, 1] = (uv[:, 1] + 0.5) * sy - 0.5
    return out
