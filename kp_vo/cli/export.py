"""``kp-vo export MODEL --output FILE.onnx [--weights W.safetensors] [--quantize int8] ...``"""

from __future__ import annotations

import argparse
import logging

from kp_vo.cli.evaluate import image_size

log = logging.getLogger(__name__)

MODELS = ("keypointnet", "keypointnet_vgg", "keypointnet_lite", "depthnet", "viewsynth", "object_keypointnet")


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
    p.add_argument("--width", type=int, default=None,
                   help="depthnet / object_keypointnet / viewsynth channels of the first block (default 64; "
                        "the shipped models/depthnet.onnx, object_keypointnet.onnx and viewsynth.onnx: 32)")
    p.add_argument("--trained-size", type=image_size, default=None, metavar="HxW",
                   help="input size the weights were trained at, recorded in the metadata as the runtime's default "
                        "input size of a depthnet (e.g. 96x320 for the shipped models/depthnet.onnx)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (>= 17)")
    p.add_argument("--quantize", choices=("none", "int8", "int8-static", "fp16"), default="none",
                   help="also write FILE.int8.onnx: int8 = dynamic int8 (no data needed); int8-static = "
                   "QDQ int8 calibrated on --calibration images; or FILE.fp16.onnx: fp16 = weights stored "
                   "as float16 (half the size, computes in float32)")
    p.add_argument("--calibration", default=None, help="folder of .jpg/.png images for --quantize int8-static")
    p.add_argument("--calibration-size", default="192x640", help="HxW the calibration images are resized to")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from kp_vo.errors import InvalidInputError
    from kp_vo.export import export_onnx, quantize_model

    if args.quantize == "int8-static" and args.calibration is None:
        raise InvalidInputError("--quantize int8-static needs --calibration DIR with images")
    options = {k: v for k, v in {"descriptor_dim": args.descriptor_dim, "descriptor_stride": args.descriptor_stride,
                                 "min_depth": args.min_depth, "max_depth": args.max_depth,
                                 "num_keypoints": args.num_keypoints, "width": args.width}.items() if v is not None}
    path = export_onnx(args.model, args.output, weights=args.weights, opset=args.opset,
                       trained_input_hw=args.trained_size, **options)
    log.info("wrote %s", path)
    if args.quantize == "fp16":
        qpath = path.with_suffix(".fp16.onnx")
        quantize_model(path, qpath, mode="fp16")
        log.info("wrote %s", qpath)
    elif args.quantize != "none":
        qpath = path.with_suffix(".int8.onnx")
        if args.quantize == "int8":
            quantize_model(path, qpath, mode="dynamic")
        else:
            quantize_model(path, qpath, mode="static", calibration=_calibration_inputs(path, args))
        log.info("wrote %s", qpath)
    return 0


def _calibration_inputs(model_path, args) -> list:
    """Network inputs from up to 32 images of ``args.calibration``, resized as the metadata wants."""
    from pathlib import Path

    import cv2

    from kp_vo.errors import InvalidInputError
    from kp_vo.export import read_metadata
    from kp_vo.runtime.preprocess import fit_size, image_to_input

    if args.calibration is None:
        raise InvalidInputError("--quantize int8-static needs --calibration DIR with images")
    try:
        h, w = (int(v) for v in args.calibration_size.lower().split("x"))
    except ValueError:
        raise InvalidInputError(f"--calibration-size must look like 192x640, got {args.calibration_size!r}") from None
    meta = read_metadata(model_path)
    files = sorted(p for p in Path(args.calibration).glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:32]
    if not files:
        raise InvalidInputError(f"{args.calibration}: no .jpg/.png calibration images")
    size = fit_size(h, w, meta.size_multiple)
    images = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in files]
    return [image_to_input(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), meta, size) for im in images if im is not None]
