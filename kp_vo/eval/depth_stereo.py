"""Stereo depth baseline: OpenCV semi-global block matching (StereoSGBM) on a rectified pair.

Depth (m) = f * B / disparity, with f the focal length (px) and B the baseline (m) of the
rectified pair (KITTI: B from P_rect_01). Pixels without a valid disparity get depth 0 (no
prediction), so the depth metrics score stereo only where it answers; ``coverage`` says where.
"""

from __future__ import annotations

import cv2
import numpy as np

from kp_vo.errors import InvalidInputError


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def stereo_depth(left: np.ndarray, right: np.ndarray, fx: float, baseline_m: float,
                 num_disparities: int = 192, block_size: int = 5) -> np.ndarray:
    """(H, W) float32 depth in the left camera from a rectified (H, W) or (H, W, 3) uint8 pair.

    num_disparities: searched disparity range in px (a multiple of 16; 192 reaches f B / 192 =
    2 m on KITTI); block_size: odd matching window side (px).
    """
    if left.shape != right.shape or left.dtype != np.uint8 or right.dtype != np.uint8:
        raise InvalidInputError(f"stereo needs two uint8 images of one size, got {left.shape} {left.dtype} "
                                f"and {right.shape} {right.dtype}")
    if not (fx > 0 and baseline_m > 0):
        raise InvalidInputError(f"stereo needs fx > 0 and baseline > 0, got {fx} and {baseline_m}")
    if num_disparities <= 0 or num_disparities % 16 or block_size < 1 or block_size % 2 == 0:
        raise InvalidInputError(f"num_disparities must be a positive multiple of 16 and block_size odd, "
                                f"got {num_disparities} and {block_size}")
    area = block_size * block_size
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=num_disparities, blockSize=block_size,
                                 P1=8 * area, P2=32 * area, disp12MaxDiff=1, uniquenessRatio=10,
                                 speckleWindowSize=100, speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    disparity = sgbm.compute(_grey(left), _grey(right)).astype(np.float32) / 16.0    # fixed point, 4 bits
    depth = np.zeros_like(disparity)
    valid = disparity > 0
    depth[valid] = fx * baseline_m / disparity[valid]
    return depth
