"""Reduced-cost variants of an exported kp_vo model: int8 quantization with ONNX Runtime, and
float16 weight storage.

mode "static" (default): QDQ int8 (per-channel int8 weights, uint8 activations) calibrated on a few
    real images; runs as fused QLinearConv kernels on x86 CPUs.
    For keypoint models (``keypointnet*`` kinds) only the trunk is quantized by default
    (``keep_float_heads``): the convolutions that produce the outputs and everything after them (tanh
    offsets, cell centres + offset, sigmoid, descriptor sampling and normalisation) stay float32. Quantizing
    those puts the keypoint coordinates (0..W-1 px) on a uint8 grid, steps of W/255 px (4.8 px on a KITTI
    frame), which is what made the first static int8 KeypointNet useless for odometry.
mode "dynamic": int8 weights, activations quantized at run time (ConvInteger). Needs no data, but
    ONNX Runtime's CPU ConvInteger kernels are slow: measured several times slower than fp32 here.
mode "fp16": weights stored as float16, each followed by a Cast back to float32. Half the file size
    (what lets a trained model live in the repository); ONNX Runtime folds the casts when it loads
    the file, so the network computes in float32 with weights rounded to float16.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.export.metadata import (
    PREFIX,
    default_opset,
    load_onnx_checked,
    parse_metadata,
    props_of,
)

log = logging.getLogger(__name__)


def _calibration_reader(inputs: list[np.ndarray], name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(inputs)

        def get_next(self):
            x = next(self._it, None)
            return None if x is None else {name: x}

    return Reader()


# Ops quantized in the trunk of a keypoint model with keep_float_heads: those of these types that feed a
# convolution (the trunk and the heads' hidden layers). The head output convolutions (names below) and
# every op after them, or off the convolution path (the cell-centre grid), stay float32.
TRUNK_OPS = ("Conv", "LeakyRelu", "Relu", "MaxPool", "Concat", "DepthToSpace", "SpaceToDepth", "Reshape",
             "Transpose")
HEAD_OUTPUT_CONVS = ("score_out", "loc_out", "desc_out")


def _is_head(name: str) -> bool:
    return any(f"/{h}/" in name or name.endswith(h) for h in HEAD_OUTPUT_CONVS)


def trunk_nodes(proto) -> tuple[list[str], list[str]]:
    """(nodes to quantize, head output convolutions) of a keypoint model: nodes of TRUNK_OPS types that are
    a convolution other than a head output, or an ancestor of any convolution."""
    producer = {out: n for n in proto.graph.node for out in n.output}
    heads = [n.name for n in proto.graph.node if n.op_type == "Conv" and _is_head(n.name)]
    ancestors: set[str] = set()
    stack = [n for n in proto.graph.node if n.op_type == "Conv"]
    while stack:
        node = stack.pop()
        for name in node.input:
            parent = producer.get(name)
            if parent is not None and parent.name not in ancestors:
                ancestors.add(parent.name)
                stack.append(parent)
    quantize = [n.name for n in proto.graph.node if n.op_type in TRUNK_OPS and not _is_head(n.name)
                and (n.op_type == "Conv" or n.name in ancestors)]
    return quantize, heads


def quantize_model(input_path: str | Path, output_path: str | Path, *, mode: str = "dynamic",
                   calibration: Iterable[np.ndarray] | None = None, keep_float_heads: bool | None = None) -> Path:
    """Write a reduced copy of an exported kp_vo .onnx model, keeping its metadata plus
    ``kp_vo.quantization`` = "dynamic_int8", "static_int8" or "fp16_weights" (mode "fp16").

    calibration (mode "static"): network inputs, each (1, C, H, W) float32 already normalised as the
    metadata says (e.g. from ``kp_vo.runtime.preprocess.image_to_input``); 8-32 real images suffice.
    keep_float_heads (mode "static"): quantize only the trunk (see the module docstring); default True for
    keypointnet kinds, False otherwise. Recorded as ``kp_vo.quantization`` = "static_int8_trunk".
    """
    import onnx
    from onnxruntime.quantization import (
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    input_path, output_path = Path(input_path), Path(output_path)
    proto = load_onnx_checked(input_path)
    props = props_of(proto)
    meta = parse_metadata(props, default_opset(proto), str(input_path))      # must be a kp_vo model
    if mode not in ("dynamic", "static", "fp16"):
        raise InvalidInputError(f"unknown quantization mode {mode!r}; use 'dynamic', 'static' or 'fp16'")
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=str(output_path.parent))
    os.close(fd)
    try:
        if mode == "fp16":
            onnx.save_model(_float16_weights(proto), tmp, save_as_external_data=False)
        elif mode == "dynamic":
            quantize_dynamic(str(input_path), tmp, weight_type=QuantType.QInt8)
        else:
            samples = [np.ascontiguousarray(x, np.float32) for x in (calibration or [])]
            if not samples:
                raise InvalidInputError("static int8 quantization needs calibration inputs")
            if keep_float_heads is None:
                keep_float_heads = meta.kind.startswith("keypointnet")
            extra = {}
            if keep_float_heads:
                trunk, heads = trunk_nodes(proto)
                if not heads:
                    raise InvalidInputError(f"{input_path}: no head output convolutions ({', '.join(HEAD_OUTPUT_CONVS)}) "
                                            "found to keep in float32")
                extra = {"op_types_to_quantize": list(TRUNK_OPS), "nodes_to_quantize": trunk, "nodes_to_exclude": heads}
            quantize_static(str(input_path), tmp, _calibration_reader(samples, meta.input_name),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True, **extra)
        q = onnx.load(tmp)
        del q.metadata_props[:]
        props[PREFIX + "quantization"] = ("fp16_weights" if mode == "fp16" else
                                          "static_int8_trunk" if mode == "static" and keep_float_heads else
                                          f"{mode}_int8")
        for k, v in props.items():
            q.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(q)
        onnx.save_model(q, tmp, save_as_external_data=False)
        os.chmod(tmp, 0o644)                    # mkstemp makes it owner-only; a model file is for everyone
        os.replace(tmp, output_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote %s variant %s", mode, output_path)
    return output_path


def _float16_weights(proto, min_elements: int = 16):
    """A copy of ``proto`` whose float32 initializers of at least ``min_elements`` values are stored as
    float16 under a new name, with a Cast to float32 producing the original name ahead of the graph."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(proto)
    graph = out.graph
    casts, kept = [], []
    taken = {i.name for i in graph.initializer} | {n for node in graph.node for n in node.output}
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        half_name = init.name + "__fp16"
        while half_name in taken:
            half_name += "_"
        taken.add(half_name)
        kept.append(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT,
                                      name=half_name + "_to_float"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return out
