"""The extractor contract every keypoint extractor (classical or learned) fulfils.

An extractor takes one image and returns ``Features``:
    keypoints   (N, 2) float32  pixel coordinates (u, v) in the *input* image
    scores      (N,)   float32  detection confidence, higher is better
    descriptors (N, D) float32 (metric "l2", L2-normalised) or (N, B) uint8 (metric "hamming", packed bits)
    metric      "l2" | "hamming"
Keypoints are sorted by decreasing score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.types import Frame

METRICS = ("l2", "hamming")


@dataclass
class Features:
    keypoints: np.ndarray
    scores: np.ndarray
    descriptors: np.ndarray
    metric: str

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"unknown descriptor metric {self.metric!r}, expected one of {METRICS}")
        n = len(self.keypoints)
        if self.keypoints.shape != (n, 2) or self.scores.shape != (n,) or len(self.descriptors) != n:
            raise ValueError(
                f"inconsistent feature shapes: keypoints {self.keypoints.shape}, scores {self.scores.shape}, "
                f"descriptors {self.descriptors.shape}")

    def __len__(self) -> int:
        return len(self.keypoints)

    def subset(self, index: np.ndarray) -> "Features":
        """Features selected by a boolean mask or an index array."""
        return Features(self.keypoints[index], self.scores[index], self.descriptors[index], self.metric)

    @classmethod
    def empty(cls, descriptor_dim: int, metric: str) -> "Features":
        dtype = np.uint8 if metric == "hamming" else np.float32
        return cls(np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, descriptor_dim), dtype), metric)


class Extractor(Protocol):
    """Anything with a name, a metric and ``extract(image) -> Features``.

    ``input_kind`` says what ``extract`` takes from a frame: "image" ((H, W) uint8 grayscale or
    (H, W, 3) uint8 RGB) or "depth" ((H, W) float32 metres, e.g. ViewSynth). Extractors without the
    attribute are image extractors. ``extract_frame`` feeds a ``Frame`` accordingly.
    """

    name: str
    metric: str

    def extract(self, image: np.ndarray) -> Features:
        """image: (H, W) uint8 grayscale or (H, W, 3) uint8 RGB (depth extractors: (H, W) float32 metres)."""
        ...


def extract_frame(extractor: Extractor, frame: Frame) -> Features:
    """``extractor``'s features of ``frame``: of its image, or of its depth for ``input_kind == "depth"``."""
    if getattr(extractor, "input_kind", "image") == "depth":
        if frame.depth is None:
            raise InvalidInputError(f"frame {frame.index}: extractor {extractor.name!r} works on depth images "
                                    f"and this frame has none")
        return extractor.extract(frame.depth)
    return extractor.extract(frame.image)


def check_image(image: np.ndarray) -> None:
    """Raise InvalidInputError unless ``image`` is a non-empty uint8 HxW or HxWx3 array."""
    if not isinstance(image, np.ndarray):
        raise InvalidInputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise InvalidInputError(f"image must be HxW or HxWx3, got shape {image.shape}")
    if image.shape[0] < 16 or image.shape[1] < 16:
        raise InvalidInputError(f"image too small for keypoint extraction: {image.shape[1]}x{image.shape[0]}")
    if image.dtype != np.uint8:
        raise InvalidInputError(f"image must be uint8, got {image.dtype}")


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 grayscale of an (H, W) or (H, W, 3) RGB uint8 image."""
    if image.ndim == 2:
        return image
    rgb = image.astype(np.float32)
    return np.clip(rgb @ np.array([0.299, 0.587, 0.114], np.float32) + 0.5, 0, 255).astype(np.uint8)


class Registry:
    """Factories ``f(**options) -> object`` by name (one per kind of component: extractors, depth
    estimators); ``create`` refuses an unknown name or options the factory cannot take in one line."""

    def __init__(self, kind: str):
        self.kind = kind                                  # "extractor", "depth estimator": used in messages
        self._factories: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator registering a factory under ``name``."""

        def wrap(factory: Callable) -> Callable:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return wrap

    def names(self) -> list[str]:
        return sorted(self._factories)

    def create(self, name: str, **options):
        """Build the component registered as ``name`` with keyword ``options``."""
        if name not in self._factories:
            raise InvalidInputError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names())}")
        _check_options(f"{self.kind} {name!r}", self._factories[name], options)
        return self._factories[name](**options)


def _check_options(what: str, factory: Callable, options: dict) -> None:
    """One-line InvalidInputError when ``factory`` cannot take keyword ``options`` (a typo in a config)."""
    import inspect

    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):                  # builtins without a signature: let the call decide
        return
    try:
        signature.bind(**options)
    except TypeError as e:
        takes = [p for p in signature.parameters if p not in ("self", "args", "kwargs", "model_options")]
        raise InvalidInputError(f"{what}: bad options {sorted(options)} ({e}); it takes {takes}") from None


class DepthEstimator(Protocol):
    """A monocular depth network: ``estimate(image) -> (H, W) float32 depth in metres`` (0 = invalid)."""

    name: str

    def estimate(self, image: np.ndarray) -> np.ndarray:
        ...


EXTRACTORS = Registry("extractor")
DEPTH_ESTIMATORS = Registry("depth estimator")


def register_extractor(name: str) -> Callable[[Callable[..., Extractor]], Callable[..., Extractor]]:
    """Decorator registering a factory ``f(**options) -> Extractor`` under ``name``."""
    return EXTRACTORS.register(name)


def available_extractors() -> list[str]:
    return EXTRACTORS.names()


def create_extractor(name: str, **options) -> Extractor:
    """Build the extractor registered as ``name`` with keyword ``options``."""
    return EXTRACTORS.create(name, **options)


def register_depth_estimator(name: str) -> Callable[[Callable[..., DepthEstimator]], Callable[..., DepthEstimator]]:
    """Decorator registering a factory ``f(**options) -> DepthEstimator`` under ``name``."""
    return DEPTH_ESTIMATORS.register(name)


def create_depth_estimator(name: str, **options) -> DepthEstimator:
    """Build the depth estimator registered as ``name`` with keyword ``options``."""
    return DEPTH_ESTIMATORS.create(name, **options)
