"""Random homographies for self-supervised keypoint training, and warping helpers.

Convention: ``H_tgt_src`` (3x3) maps homogeneous pixel coordinates (u, v, 1) of the source image
to the target image; pixel centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from kp_vo.errors import InvalidInputError


@dataclass(frozen=True)
class HomographyConfig:
    """Ranges of the random homography (sampled uniformly inside each range)."""

    perspective: float = 0.2       # corner displacement as a fraction of half the image size (projective part)
    scale: tuple = (0.8, 1.25)     # isotropic zoom about the image centre
    rotation_deg: float = 25.0     # in-plane rotation about the centre, +- this
    translation: float = 0.1       # shift as a fraction of the image size, +- this
    max_tries: int = 20            # resample until the warped image centre stays inside the target


def sample_homography(height: int, width: int, rng: np.random.Generator,
                      cfg: HomographyConfig = HomographyConfig()) -> np.ndarray:
    """A random ``H_tgt_src`` (3, 3) float64 for (height, width) images.

    Composition (about the image centre c): perspective corner jitter, then scale and rotation,
    then translation. Resampled (up to ``max_tries``) until the image centre maps inside the image.
    """
    if height < 2 or width < 2:
        raise InvalidInputError(f"image too small for a homography: {height}x{width}")
    c = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    corners = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)
    for _ in range(max(1, cfg.max_tries)):
        jitter = rng.uniform(-cfg.perspective, cfg.perspective, size=(4, 2)) * c
        dst = corners + jitter
        s = rng.uniform(cfg.scale[0], cfg.scale[1])
        a = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        dst = (dst - c) @ (s * rot).T + c
        dst = dst + rng.uniform(-cfg.translation, cfg.translation, size=2) * np.array([width, height])
        H = cv2.getPerspectiveTransform(corners.astype(np.float32), dst.astype(np.float32)).astype(np.float64)
        centre = warp_points_np(c[None], H)[0]
        if 0 <= centre[0] <= width - 1 and 0 <= centre[1] <= height - 1:
            return H / H[2, 2]
    return H / H[2, 2]


def warp_points_np(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(N, 2) pixel points -> (N, 2) H-mapped points (float64)."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    q = np.concatenate([p, np.ones((len(p), 1))], 1) @ np.asarray(H, np.float64).T
    return q[:, :2] / q[:, 2:3]


def warp_points(points: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
    """Batched, differentiable: points (B, N, 2), H (B, 3, 3) -> (B, N, 2) mapped points."""
    ones = torch.ones_like(points[..., :1])
    q = torch.cat([points, ones], -1) @ H.transpose(-1, -2)
    z = q[..., 2:3]
    z = torch.where(z.abs() < 1e-8, torch.full_like(z, 1e-8), z)
    return q[..., :2] / z


def warp_image(image: np.ndarray, H: np.ndarray, out_hw: tuple[int, int] | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Warp ``image`` (H, W[, C]) by ``H_tgt_src`` into the target; returns (warped, valid mask (H, W) bool).
    Pixels whose source falls outside the image are 0 and invalid."""
    h, w = out_hw or image.shape[:2]
    warped = cv2.warpPerspective(image, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                 borderValue=0)
    ones = np.ones(image.shape[:2], np.uint8)
    valid = cv2.warpPerspective(ones, H, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=0) > 0
    return warped, valid


def inside(points: torch.Tensor, height: int, width: int, margin: float = 0.0) -> torch.Tensor:
    """(..., 2) pixel points -> (...) bool, True where margin <= u <= W-1-margin and same for v."""
    u, v = points[..., 0], points[..., 1]
    return (u >= margin) & (u <= width - 1 - margin) & (v >= margin) & (v <= height - 1 - margin)
