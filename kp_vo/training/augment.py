"""Photometric augmentation of float images (numpy, per sample, seeded by the caller's RNG), and
``item_rng``, the per-item generator the training datasets draw their augmentations from.

The augmentations take and return (H, W, 3) float32 RGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch


def item_rng(seed: int | None, index: int) -> np.random.Generator:
    """The generator that augments one dataset item: ``seed`` None draws a fresh one from torch's RNG
    (seeded runs and resumes repeat, every epoch differs); an int gives item ``index`` the same one
    every time (fixed validation items)."""
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    return np.random.default_rng([seed, int(index)])


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
