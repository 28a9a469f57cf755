"""``kp-vo eval keypoints --extractors orb sift keypointnet:models/X.onnx [--pairs 50] ...``

HPatches-style keypoint metrics (see ``kp_vo.eval.keypoints``) for several extractors on the same
pairs, in one run: held-out homography pairs from a photo folder, or an HPatches folder.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW, e.g. 240x320, got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} too small")
    return h, w


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate models (keypoint metrics)")
    sub = p.add_subparsers(dest="eval_command", required=True)
    k = sub.add_parser("keypoints", help="HPatches-style repeatability / localization / correctness / "
                       "matching score")
    k.add_argument("--extractors", nargs="+", default=["orb", "sift"],
                   help="orb, sift, keypointnet:FILE.onnx|.safetensors, keypointnet_vgg:FILE.safetensors")
    k.add_argument("--photos", default="../shared/data/photos",
                   help="photo folder: pairs from its held-out photos (sorted index %% holdout == 0)")
    k.add_argument("--hpatches", default=None, help="HPatches folder (used instead of --photos)")
    k.add_argument("--pairs", type=int, default=50, help="number of photo pairs")
    k.add_argument("--size", type=_size, default=(240, 320), help="HxW (240x320 or 480x640)")
    k.add_argument("--num-keypoints", type=int, default=None, help="default 300 at 240x320, 1000 larger")
    k.add_argument("--seed", type=int, default=0, help="seed of the homographies")
    k.add_argument("--holdout-every", type=int, default=5, help="held-out photo period (as in training)")
    k.add_argument("--eps", type=float, default=3.0, help="distance threshold (px) of repeatability / MS")
    k.add_argument("--json", default=None, help="also write the results to this JSON file")
    k.set_defaults(func=handle_keypoints)


def handle_keypoints(args: argparse.Namespace) -> int:
    from kp_vo.eval.keypoints import (
        default_num_keypoints,
        evaluate_extractors,
        format_table,
        homography_pairs,
        hpatches_pairs,
    )

    h, w = args.size
    n_kp = args.num_keypoints or default_num_keypoints(h, w)
    if args.hpatches:
        pairs, source = list(hpatches_pairs(args.hpatches, (h, w))), f"HPatches {args.hpatches}"
    else:
        pairs = list(homography_pairs(args.photos, args.pairs, (h, w), args.seed, args.holdout_every))
        source = f"held-out photos {args.photos}"
    rows = evaluate_extractors(args.extractors, pairs, n_kp, args.eps)
    header = f"{len(pairs)} pairs from {source}, {h}x{w}, {n_kp} keypoints, eps {args.eps:g} px"
    print(header)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"setup": header, "results": [r.as_row() for r in rows]}, indent=2))
    return 0
