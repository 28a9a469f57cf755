"""``kp-vo export MODEL --output FILE.onnx [--weights W.safetensors] [--quantize int8] ...``"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

MODELS = ("keypointnet", "keypointnet_vgg", "depthnet", "viewsynth", "object_keypointnet")


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model to a self-contained ONNX file with metadata")
    p.add_argument("model", choices=MODELS, help="model kind")
    p.add_argument("--output", required=True, help="output .onnx path")
    p.add_argument("--weights", default=None, help=".safetensors checkpoint (ours or KP2D names); "
                   "without it the file is marked untrained")
    p.add_argument("--descriptor-dim", type=int, choices=(256, 64), default=None,
                   help="KeypointNet descriptor size (default 64 for keypointnet, 256 for keypointnet_vgg)")
    p.add_argument("--descriptor-stride", type=int, choices=(2, 4), default=None,
                   help="keypointnet dense descriptor resolution (default 2 = H/2)")
    p.add_argument("--min-depth", type=float, default=None, help="depthnet minimum depth (default 0.1)")
    p.add_argument("--max-depth", type=float, default=None, help="depthnet maximum depth (default 100)")
    p.add_argument("--num-keypoints", type=int, default=None, help="object_keypointnet keypoint count")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--quantize", choices=("none", "int8"), default="none",
                   help="int8: also write FILE.int8.onnx with dynamic int8 quantization")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from kp_vo.export import export_onnx, quantize_model

    options = {k: v for k, v in {"descriptor_dim": args.descriptor_dim, "descriptor_stride": args.descriptor_stride,
                                 "min_depth": args.min_depth, "max_depth": args.max_depth,
                                 "num_keypoints": args.num_keypoints}.items() if v is not None}
    path = export_onnx(args.model, args.output, weights=args.weights, opset=args.opset, **options)
    log.info("wrote %s", path)
    if args.quantize == "int8":
        qpath = path.with_suffix(".int8.onnx")
        quantize_model(path, qpath)
        log.info("wrote %s", qpath)
    return 0
