"""The metric scale of a self-supervised DepthNet (metres per network unit, the ``scale`` option of the
``depthnet`` depth estimator) from its PoseNet and a sequence with ground-truth poses.

DepthNet and PoseNet are trained together by view synthesis, so their unit is one: the PoseNet translation
between frames i and i + dt, times the scale, is the ground-truth distance. The scale printed is the
median over the frame pairs of |t_gt| / |t_posenet| (pairs with under 0.2 m of ground-truth motion are
left out); the spread (16th-84th percentile) says how consistent the unit is.

    python scripts/depthnet_metric_scale.py runs/depthnet_selfsup_kitti_cpu ../shared/data/kitti \
        --sequence 00 --frames 0 200
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="training output_dir (config_used.yaml, weights/posenet.safetensors)")
    ap.add_argument("source", help="KITTI odometry root")
    ap.add_argument("--sequence", default="00")
    ap.add_argument("--frames", type=int, nargs=2, default=(0, 200), help="first, end (exclusive)")
    ap.add_argument("--dt", type=int, default=1)
    args = ap.parse_args(argv)

    from pathlib import Path
    from kp_vo.config import load_config
    from kp_vo.models import build_model
    from kp_vo.models.checkpoints import load_initial_weights
    from kp_vo.training.recipes.depthnet_selfsup import DepthSelfSupConfig
    from kp_vo.training.recipes.kp3d import Kp3dDataConfig, SnippetDataset, _open_sequence, normalise_input

    run = Path(args.run)
    cfg = load_config(DepthSelfSupConfig, run / "config_used.yaml")
    m = cfg.model
    posenet = build_model("posenet", width=m.posenet_width, encoder_width=m.posenet_encoder_width)
    load_initial_weights({"posenet": posenet}, {"posenet": str(run / "weights" / "posenet.safetensors")}, "scale")
    posenet.eval()
    data = Kp3dDataConfig(source=args.source, sequence=args.sequence, height=cfg.data.height, width=cfg.data.width,
                          dts=(args.dt,))
    seq = _open_sequence(data)
    end = min(args.frames[1], len(seq))
    snippets = SnippetDataset(seq, np.arange(args.frames[0], end), (args.dt,), data.height, data.width)
    ratios = []
    with torch.no_grad():
        for k in range(len(snippets)):
            item = snippets[k]
            pair = torch.cat([item["target"], item["context"][1]], 0)[None]     # (t, t + dt): later <- earlier
            T = posenet({"image": normalise_input(pair, posenet)})["T_c_t"][0]
            gt = float(torch.linalg.norm(item["T_c_t_gt"][1, :3, 3]))
            if gt >= 0.2:
                ratios.append(gt / max(float(torch.linalg.norm(T[:3, 3])), 1e-9))
    r = np.asarray(ratios)
    lo, med, hi = np.percentile(r, [16, 50, 84])
    print(f"{len(r)} pairs (KITTI {args.sequence} frames {args.frames[0]}-{end - 1}, dt {args.dt}): "
          f"scale {med:.2f} m per unit (16-84 %: {lo:.2f}-{hi:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
