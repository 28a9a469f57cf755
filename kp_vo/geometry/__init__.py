"""numpy geometry: camera model, SE(3), matching, RANSAC-PnP + Gauss-Newton, Procrustes, triangulation."""

from kp_vo.geometry.camera import backproject, lift_keypoints, project, sample_depth
from kp_vo.geometry.matching import (
    descriptor_distances,
    match_by_projection,
    match_descriptors,
)
from kp_vo.geometry.pnp import PnPResult, refine_pose_gauss_newton, solve_pnp_ransac
from kp_vo.geometry.procrustes import (
    procrustes,
    ransac_procrustes,
    refine_pose_procrustes,
    weighted_procrustes,
)
from kp_vo.geometry.se3 import (
    check_pose,
    invert,
    make_pose,
    nearest_rotation,
    rotation_angle_deg,
    se3_exp,
    se3_log,
    skew,
    so3_exp,
    so3_log,
    transform,
)
from kp_vo.geometry.triangulation import parallax_deg, triangulate

__all__ = [
    "backproject", "lift_keypoints", "project", "sample_depth",
    "descriptor_distances", "match_by_projection", "match_descriptors",
    "PnPResult", "refine_pose_gauss_newton", "solve_pnp_ransac",
    "procrustes", "ransac_procrustes", "refine_pose_procrustes", "weighted_procrustes",
    "check_pose", "invert", "make_pose", "nearest_rotation", "rotation_angle_deg", "se3_exp", "se3_log",
    "skew", "so3_exp", "so3_log", "transform",
    "parallax_deg", "triangulate",
]
