"""Reduced-cost CPU variant: dynamic int8 quantization of an exported kp_vo model."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from kp_vo.export.metadata import PREFIX, load_onnx_checked, parse_metadata, default_opset, props_of

log = logging.getLogger(__name__)


def quantize_model(input_path: str | Path, output_path: str | Path) -> Path:
    """Write a dynamic-int8 (weights int8, activations quantized at run time) copy of an exported
    kp_vo .onnx model, keeping its metadata (plus ``kp_vo.quantization = dynamic_int8``)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    input_path, output_path = Path(input_path), Path(output_path)
    proto = load_onnx_checked(input_path)
    props = props_of(proto)
    parse_metadata(props, default_opset(proto), str(input_path))      # must be a kp_vo model
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=str(output_path.parent))
    os.close(fd)
    try:
        quantize_dynamic(str(input_path), tmp, weight_type=QuantType.QInt8)
        q = onnx.load(tmp)
        del q.metadata_props[:]
        props[PREFIX + "quantization"] = "dynamic_int8"
        for k, v in props.items():
            q.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(q)
        onnx.save_model(q, tmp, save_as_external_data=False)
        os.replace(tmp, output_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    log.info("wrote dynamic int8 variant %s", output_path)
    return output_path
