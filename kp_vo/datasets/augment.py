"""Random image augmentations in numpy, seeded by the caller's generator: photometric jitter and
homographies (sampling, warping images and points), shared by the keypoint training recipes and the
keypoint evaluation's homography pairs.

Images are (H, W, 3) float32 RGB in [0, 1]. ``H_tgt_src`` (3x3) maps homogeneous pixel coordinates
(u, v, 1) of the source image to the target image; pixel centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from kp_vo.errors import InvalidInputError


@dataclass(frozen=True)
class PhotometricConfig:
    """Strengths of the photometric jitter (each applied with probability ``p``)."""

    p: float = 0.8
    brightness: float = 0.3        # additive, +- this
    contrast: float = 0.4          # multiplicative about the mean, 1 +- this
    saturation: float = 0.4        # blend with grey, 1 +- this
    gamma: float = 0.3             # exponent 1 +- this
    noise_std: float = 0.03        # max std of additive Gaussian noise
    blur_sigma: float = 1.2        # max Gaussian blur sigma (px)
    grayscale_p: float = 0.2       # probability of turning the image grey (mixed colour/grey data)


def photometric(image: np.ndarray, rng: np.random.Generator, cfg: PhotometricConfig = PhotometricConfig()
                ) -> np.ndarray:
    """Random brightness, contrast, saturation, gamma, blur, noise, greyscale, in random order."""
    x = np.asarray(image, np.float32)
    ops = ["brightness", "contrast", "saturation", "gamma", "blur", "noise"]
    rng.shuffle(ops)
    for op in ops:
        if rng.random() > cfg.p:
            continue
        if op == "brightness":
            x = x + rng.uniform(-cfg.brightness, cfg.brightness)
        elif op == "contrast":
            x = (x - x.mean()) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + x.mean()
        elif op == "saturation":
            grey = x.mean(axis=2, keepdims=True)
            x = grey + (x - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation)
        elif op == "gamma":
            x = np.clip(x, 0.0, 1.0) ** rng.uniform(1 - cfg.gamma, 1 + cfg.gamma)
        elif op == "blur" and cfg.blur_sigma > 0:
            x = cv2.GaussianBlur(x, (0, 0), sigmaX=rng.uniform(0.1, cfg.blur_sigma))
        elif op == "noise" and cfg.noise_std > 0:
            x = x + rng.normal(0.0, rng.uniform(0, cfg.noise_std), size=x.shape).astype(np.float32)
        x = np.clip(x, 0.0, 1.0)
    if rng.random() < cfg.grayscale_p:
        x = np.repeat(x.mean(axis=2, keepdims=True), 3, axis=2)
    return np.ascontiguousarray(np.clip(x, 0.0, 1.0), dtype=np.float32)


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
