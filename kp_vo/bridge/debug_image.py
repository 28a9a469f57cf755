"""The debug image of the VO node: keypoints and inlier matches drawn over the input image."""

from __future__ import annotations

import cv2
import numpy as np

from kp_vo.odometry.types import TrackingResult, TrackingState

STATE_COLOURS = {TrackingState.TRACKING: (0, 200, 0), TrackingState.INITIALIZING: (230, 180, 0),
                 TrackingState.LOST: (230, 0, 0)}


def draw_debug_image(image: np.ndarray, result: TrackingResult) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` ((H, W) gray or (H, W, 3) RGB uint8) with the result's
    keypoints (blue), each inlier match as a line from its keypoint to where its map point was seen
    in the newest keyframe observing it (green: the image motion since that keyframe) and the
    tracking state written in the corner.

    ``result``: a TrackingResult (features, matches (M, 2) = (keypoint index, map point id),
    match_keyframe_uv (M, 2) pixels, state, num_inliers).
    """
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    keypoints = np.zeros((0, 2)) if result.features is None else np.asarray(result.features.keypoints)
    for u, v in keypoints:
        cv2.circle(canvas, (int(round(u)), int(round(v))), 2, (60, 120, 255), 1, cv2.LINE_AA)
    matches = np.asarray(result.matches, dtype=np.int64).reshape(-1, 2)
    keyframe_uv = np.asarray(result.match_keyframe_uv, dtype=np.float64).reshape(-1, 2)
    for i, uv_keyframe in zip(matches[:, 0], keyframe_uv):
        if 0 <= i < len(keypoints):
            a = tuple(int(round(x)) for x in keypoints[i])
            b = tuple(int(round(x)) for x in uv_keyframe)
            cv2.line(canvas, a, b, (0, 220, 0), 1, cv2.LINE_AA)
            cv2.circle(canvas, a, 3, (0, 220, 0), 1, cv2.LINE_AA)
    state = TrackingState(result.state)
    text = f"{state.value}  inliers {result.num_inliers}"
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, STATE_COLOURS[state], 2, cv2.LINE_AA)
    return canvas
