"""The debug image of the VO node: keypoints and inlier matches drawn over the input image."""

from __future__ import annotations

import cv2
import numpy as np

STATE_COLOURS = {"tracking": (0, 200, 0), "initializing": (230, 180, 0), "lost": (230, 0, 0)}


def draw_debug_image(image: np.ndarray, result) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``image`` ((H, W) gray or (H, W, 3) RGB uint8) with the result's
    keypoints (blue), inlier matches as lines from the keypoint to its keyframe keypoint
    (green) and the tracking state written in the corner.

    ``result``: a TrackingResult (features, matches (M, 2) = (current, keyframe) indices,
    keyframe_keypoints (K, 2) pixels, state, num_inliers).
    """
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else image.copy()
    features = getattr(result, "features", None)
    keypoints = np.zeros((0, 2)) if features is None else np.asarray(features.keypoints)
    for u, v in keypoints:
        cv2.circle(canvas, (int(round(u)), int(round(v))), 2, (60, 120, 255), 1, cv2.LINE_AA)
    matches = np.asarray(getattr(result, "matches", np.zeros((0, 2), int)), dtype=np.int64).reshape(-1, 2)
    kf_keypoints = np.asarray(getattr(result, "keyframe_keypoints", np.zeros((0, 2))))
    for i, j in matches:
        if 0 <= i < len(keypoints) and 0 <= j < len(kf_keypoints):
            a = tuple(int(round(x)) for x in keypoints[i])
            b = tuple(int(round(x)) for x in kf_keypoints[j])
            cv2.line(canvas, a, b, (0, 220, 0), 1, cv2.LINE_AA)
            cv2.circle(canvas, a, 3, (0, 220, 0), 1, cv2.LINE_AA)
    state = getattr(result.state, "value", str(result.state))
    text = f"{state}  inliers {result.num_inliers}"
    cv2.putText(canvas, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, STATE_COLOURS.get(state, (255, 255, 255)), 2,
                cv2.LINE_AA)
    return canvas
