"""The metric scale of a DepthNet (metres per network unit) from the road in front of a camera at a known
height: on a flat road the pixel row v below the principal point cy sees the ground at depth
Z = h fy / (v - cy). Per image the median of Z / network depth over a road patch (rows from 40 px below
cy to 10 px above the bottom, the middle fifth of the columns) is taken; the scale is the median over the
images (16-84 % spread printed with it).

    python scripts/depthnet_road_scale.py runs/depthnet_kitti/depthnet.fp16.onnx ../shared/data/kitti \
        --sequence 00 --frames 0 200 --height 1.65
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="DepthNet .onnx")
    ap.add_argument("source", help="KITTI odometry root")
    ap.add_argument("--sequence", default="00")
    ap.add_argument("--frames", type=int, nargs=2, default=(0, 200), help="first, end (exclusive)")
    ap.add_argument("--height", type=float, default=1.65, help="camera height above the road (m); KITTI: 1.65")
    args = ap.parse_args(argv)

    from kp_vo.datasets.kitti import KittiOdometry
    from kp_vo.runtime.extractors import DepthNetEstimator

    seq = KittiOdometry(args.source, sequence=args.sequence)
    est = DepthNetEstimator(args.model, scale=1.0, threads=1)
    cam = seq.camera
    ratios = []
    for i in range(args.frames[0], min(args.frames[1], len(seq))):
        frame = seq[i]
        depth = est.estimate(frame.image)
        h, w = depth.shape
        v = np.arange(int(cam.cy) + 40, h - 10)
        u = slice(int(w * 0.4), int(w * 0.6))
        z_road = args.height * cam.fy / (v - cam.cy)
        patch = depth[v, u]
        r = (z_road[:, None] / np.maximum(patch, 1e-6))[patch > 0]
        ratios.append(float(np.median(r)))
    r = np.asarray(ratios)
    lo, med, hi = np.percentile(r, [16, 50, 84])
    print(f"{len(r)} images (KITTI {args.sequence} frames {args.frames[0]}-{args.frames[0] + len(r) - 1}): "
          f"scale {med:.2f} m per unit (16-84 %: {lo:.2f}-{hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
