"""OpenCV ORB and SIFT: the always-available baseline extractors."""

from __future__ import annotations

import cv2
import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Features, check_image, register_extractor, to_gray


def _grid_select(keypoints: list, max_keypoints: int, image_shape: tuple[int, int], cell: int) -> list:
    """Keep the strongest keypoints spread over a grid of ``cell``-pixel cells (bucketing).

    Equivalent to rounds that each take the best remaining keypoint of every cell (so textured
    corners of the image cannot starve the rest of it) until ``max_keypoints`` are kept: a
    keypoint's round is its rank by response inside its cell. Returned strongest first.
    """
    if len(keypoints) <= max_keypoints:
        return sorted(keypoints, key=lambda k: -k.response)
    response = np.array([k.response for k in keypoints], np.float32)
    xy = np.array([k.pt for k in keypoints], np.float32)
    cols = max(1, int(np.ceil(image_shape[1] / cell)))
    cell_id = (xy[:, 1] // cell).astype(np.int64) * cols + (xy[:, 0] // cell).astype(np.int64)
    by_response = np.argsort(-response, kind="stable")
    by_cell = by_response[np.argsort(cell_id[by_response], kind="stable")]  # cells, strongest first inside
    starts = np.r_[0, np.flatnonzero(np.diff(cell_id[by_cell])) + 1]
    rank = np.empty(len(keypoints), np.int64)
    rank[by_cell] = np.arange(len(by_cell)) - np.repeat(starts, np.diff(np.r_[starts, len(by_cell)]))
    chosen = np.lexsort((-response, rank))[:max_keypoints]
    chosen = chosen[np.argsort(-response[chosen], kind="stable")]
    return [keypoints[i] for i in chosen]


class OpenCVExtractor:
    """Detect many keypoints with an OpenCV feature, keep ``max_keypoints`` spread by bucketing, describe them."""

    input_kind = "image"

    def __init__(self, name: str, detector, metric: str, descriptor_dim: int, max_keypoints: int, grid_cell: int,
                 fallback_detector=None):
        self.name = name
        self.metric = metric
        self.max_keypoints = max_keypoints
        self.grid_cell = grid_cell
        self._detector = detector
        self._fallback_detector = fallback_detector   # a more sensitive detector for images with few keypoints
        self._descriptor_dim = descriptor_dim

    def extract(self, image: np.ndarray) -> Features:
        check_image(image)
        gray = to_gray(image)
        keypoints = self._detector.detect(gray, None)
        if len(keypoints) < self.max_keypoints and self._fallback_detector is not None:
            keypoints = self._fallback_detector.detect(gray, None)
        keypoints = _grid_select(list(keypoints), self.max_keypoints, gray.shape, self.grid_cell)
        if not keypoints:
            return Features.empty(self._descriptor_dim, self.metric)
        keypoints, descriptors = self._detector.compute(gray, keypoints)
        if descriptors is None or len(keypoints) == 0:
            return Features.empty(self._descriptor_dim, self.metric)
        uv = np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2)
        scores = np.array([k.response for k in keypoints], np.float32)
        if self.metric == "l2":
            descriptors = descriptors.astype(np.float32)
            descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True) + 1e-12
        order = np.argsort(-scores, kind="stable")
        return Features(uv[order], scores[order], descriptors[order], self.metric)


def _check_positive(extractor: str, **options) -> None:
    """One line naming the first of ``options`` that is not a positive integer (checked before OpenCV sees it)."""
    for key, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(f"extractor.options.{key} ({extractor}) must be a positive integer, got {value!r}")


@register_extractor("orb")
def make_orb(max_keypoints: int = 2000, grid_cell: int = 32, fast_threshold: int = 10, n_levels: int = 8,
             min_fast_threshold: int = 5) -> OpenCVExtractor:
    """ORB (FAST + rotated BRIEF, 256-bit, Hamming). Detects 4x ``max_keypoints`` then buckets.

    An image that gives fewer than ``max_keypoints`` corners at ``fast_threshold`` (low texture, low
    contrast: a Kinect looking at a plain cabinet) is detected again at ``min_fast_threshold``, as ORB-SLAM
    lowers its FAST threshold where too few corners are found; textured images never take the second pass.
    """
    _check_positive("orb", max_keypoints=max_keypoints, grid_cell=grid_cell, n_levels=n_levels,
                    fast_threshold=fast_threshold, min_fast_threshold=min_fast_threshold)
    if min_fast_threshold > fast_threshold:
        raise InvalidInputError(f"extractor.options.min_fast_threshold (orb) must not exceed fast_threshold "
                                f"({fast_threshold}), got {min_fast_threshold}")

    def detector(threshold: int):
        return cv2.ORB_create(nfeatures=4 * max_keypoints, scaleFactor=1.2, nlevels=n_levels,
                              edgeThreshold=19, patchSize=31, fastThreshold=threshold)

    fallback = detector(min_fast_threshold) if min_fast_threshold < fast_threshold else None
    return OpenCVExtractor("orb", detector(fast_threshold), "hamming", 32, max_keypoints, grid_cell, fallback)


@register_extractor("sift")
def make_sift(max_keypoints: int = 2000, grid_cell: int = 32, contrast_threshold: float = 0.02) -> OpenCVExtractor:
    """SIFT (128-D, L2-normalised float descriptors)."""
    _check_positive("sift", max_keypoints=max_keypoints, grid_cell=grid_cell)
    sift = cv2.SIFT_create(nfeatures=0, contrastThreshold=contrast_threshold)
    return OpenCVExtractor("sift", sift, "l2", 128, max_keypoints, grid_cell)
