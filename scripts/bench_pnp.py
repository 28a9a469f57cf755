"""Side-by-side bench of absolute-pose solvers on synthetic KITTI-like correspondences.

Rows, all on the same problems in one run: kp_vo's ``solve_pnp_ransac`` (PoseLib LO-RANSAC + LM),
PoseLib called directly, pycolmap's LO-RANSAC (when installed) and OpenCV's EPnP-RANSAC with its
iterative refinement. Each problem: N points 4-60 m in front of a 1226x370 camera (fx 707), a random
pose, 1 px Gaussian pixel noise, a share of the pixels replaced by uniform outliers. Prints the
median / mean rotation (deg) and camera-centre (cm) errors and the time per call, and writes JSON.

    .venv/bin/python scripts/bench_pnp.py --trials 200 --output outputs/bench_pnp.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import poselib

from kp_vo.geometry.pnp import solve_pnp_ransac
from kp_vo.geometry.se3 import invert, make_pose, rotation_angle_deg, so3_exp

K = np.array([[707.0912, 0.0, 601.8873], [0.0, 707.0912, 183.1104], [0.0, 0.0, 1.0]])
WIDTH, HEIGHT = 1226, 370
THRESHOLD_PX = 2.0


def make_problem(rng: np.random.Generator, n: int, outliers: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T_cam_world (4, 4), points_world (n, 3), pixels (n, 2)) with noise and outliers."""
    uv = np.c_[rng.uniform(0, WIDTH, n), rng.uniform(0, HEIGHT, n)]
    z = rng.uniform(4.0, 60.0, n)
    P_cam = np.c_[(uv[:, 0] - K[0, 2]) * z / K[0, 0], (uv[:, 1] - K[1, 2]) * z / K[1, 1], z]
    T = make_pose(so3_exp(rng.normal(0, 0.05, 3)), rng.normal(0, 1.0, 3))
    P_world = (P_cam - T[:3, 3]) @ T[:3, :3]
    q = uv + rng.normal(0, 1.0, (n, 2))
    bad = rng.random(n) < outliers
    q[bad] = np.c_[rng.uniform(0, WIDTH, bad.sum()), rng.uniform(0, HEIGHT, bad.sum())]
    return T, P_world, q


def kp_vo_solver(P: np.ndarray, q: np.ndarray, seed: int) -> np.ndarray:
    return solve_pnp_ransac(P, q, K, THRESHOLD_PX, 300, 0.999, 15, rng=np.random.default_rng(seed)).T_cam_world


def poselib_solver(P: np.ndarray, q: np.ndarray, seed: int) -> np.ndarray:
    camera = {"model": "PINHOLE", "width": WIDTH, "height": HEIGHT, "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]}
    pose, _ = poselib.estimate_absolute_pose(q, P, camera, {"max_reproj_error": THRESHOLD_PX, "seed": seed}, {})
    return make_pose(np.asarray(pose.R), np.asarray(pose.t))


def opencv_solver(P: np.ndarray, q: np.ndarray, seed: int) -> np.ndarray:
    cv2.setRNGSeed(seed)
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(P, q, K, None, iterationsCount=300, reprojectionError=THRESHOLD_PX,
                                                 confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    if not ok or inliers is None:
        return np.eye(4)
    idx = inliers.ravel()
    rvec, tvec = cv2.solvePnPRefineLM(P[idx], q[idx], K, None, rvec, tvec)
    return make_pose(so3_exp(rvec.ravel()), tvec.ravel())


def pycolmap_solver() -> Callable[[np.ndarray, np.ndarray, int], np.ndarray] | None:
    try:
        import pycolmap
    except ImportError:
        return None
    camera = pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT, params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]])

    def solve(P: np.ndarray, q: np.ndarray, seed: int) -> np.ndarray:
        options = pycolmap.AbsolutePoseEstimationOptions()
        options.ransac.max_error = THRESHOLD_PX
        options.ransac.random_seed = seed
        found = pycolmap.estimate_and_refine_absolute_pose(q, P, camera, options)
        if found is None:
            return np.eye(4)
        T = np.eye(4)
        T[:3] = found["cam_from_world"].matrix()
        return T
    return solve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--outliers", type=float, default=0.3)
    parser.add_argument("--output", default="outputs/bench_pnp.json")
    args = parser.parse_args()
    solvers = {"kp_vo solve_pnp_ransac": kp_vo_solver, "poselib": poselib_solver, "opencv epnp-ransac + LM": opencv_solver}
    colmap = pycolmap_solver()
    if colmap is not None:
        solvers["pycolmap"] = colmap
    rng = np.random.default_rng(0)
    problems = [make_problem(rng, args.points, args.outliers) for _ in range(args.trials)]
    rows = {}
    for name, solve in solvers.items():
        errors, elapsed = [], 0.0
        for seed, (T_true, P, q) in enumerate(problems):
            t = time.perf_counter()
            T = solve(P, q, seed)
            elapsed += time.perf_counter() - t
            errors.append((rotation_angle_deg(T[:3, :3] @ T_true[:3, :3].T),
                           100 * np.linalg.norm(invert(T)[:3, 3] - invert(T_true)[:3, 3])))
        e = np.array(errors)
        rows[name] = {"ms_per_call": 1e3 * elapsed / len(problems), "rot_deg_median": float(np.median(e[:, 0])),
                      "rot_deg_mean": float(e[:, 0].mean()), "centre_cm_median": float(np.median(e[:, 1])),
                      "centre_cm_mean": float(e[:, 1].mean())}
    print(f"{args.trials} problems, {args.points} points, {100 * args.outliers:.0f} % outliers, 1 px noise")
    print(f"{'solver':<26}{'ms/call':>9}{'rot med':>10}{'rot mean':>10}{'ctr med cm':>12}{'ctr mean cm':>13}")
    for name, r in rows.items():
        print(f"{name:<26}{r['ms_per_call']:>9.2f}{r['rot_deg_median']:>10.4f}{r['rot_deg_mean']:>10.4f}"
              f"{r['centre_cm_median']:>12.2f}{r['centre_cm_mean']:>13.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"trials": args.trials, "points": args.points,
                                             "outliers": args.outliers, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
