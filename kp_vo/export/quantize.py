"""Reduced-cost variants of an exported kp_vo model: int8 quantization with ONNX Runtime, and
float16 weight storage.

mode "static" (default): QDQ int8 (per-channel int8 weights, uint8 activations) calibrated on a few
    real images; runs as fused QLinearConv kernels on x86 CPUs.
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
from pathlib import Path
from typing import Iterable

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


def quantize_model(input_path: str | Path, output_path: str | Path, *, mode: str = "dynamic",
                   calibration: Iterable[np.ndarray] | None = None) -> Path:
    """Write a reduced copy of an exported kp_vo .onnx model, keeping its metadata plus
    ``kp_vo.quantization`` = "dynamic_int8", "static_int8" or "fp16_weights" (mode "fp16").

    calibration (mode "static"): network inputs, each (1, C, H, W) float32 already normalised as the
    metadata says (e.g. from ``kp_vo.runtime.preprocess.image_to_input``); 8-32 real images suffice.
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
            quantize_static(str(input_path), tmp, _calibration_reader(samples, meta.input_name),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, per_channel=True)
        q = onnx.load(tmp)
        del q.metadata_props[:]
        props[PREFIX + "quantization"] = "fp16_weights" if mode == "fp16" else f"{mode}_int8"
        for k, v in props.items():
            q.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(q)
        onnx.save_model(q, tmp, save_as_external_data=False)
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
