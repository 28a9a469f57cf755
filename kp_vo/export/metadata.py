"""The kp_vo metadata stored in every exported .onnx file (ONNX ``metadata_props``), and reading it back.

Keys (all strings; JSON where noted):
    kp_vo.format_version    "1"
    kp_vo.kind              model kind, e.g. "keypointnet"
    kp_vo.package_version   kp_vo version that exported it
    kp_vo.input             JSON {name, layout "NCHW", dtype "float32", channels, channel_order,
                            value_range [lo, hi], mean [...], std [...]}: the runtime feeds
                            (x - mean) / std with x in value_range
    kp_vo.size_multiple     H and W must be multiples of this
    kp_vo.outputs           JSON {output name: meaning}, in graph order
    kp_vo.options           JSON of the model's constructor options
    kp_vo.trained           "true" only when weights were loaded from a checkpoint
    kp_vo.training_config_hash  from the checkpoint, "unrecorded" if it has none, "untrained" otherwise
    kp_vo.weights_sha256    sha256 of the weights file, or "none"
    kp_vo.quantization      "none", "dynamic_int8", "static_int8" or "fp16_weights"
    kp_vo.trained_input_hw  optional "HxW" of the training input: the runtime's default input size for
                            models that depend on it (DepthNet); absent when unrecorded
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from kp_vo.errors import ModelFileError

FORMAT_VERSION = "1"
MIN_OPSET = 17
PREFIX = "kp_vo."
REQUIRED = ("format_version", "kind", "input", "size_multiple", "outputs", "trained", "training_config_hash")


@dataclass(frozen=True)
class ModelMetadata:
    kind: str
    input_name: str
    channels: int
    channel_order: str
    value_range: tuple[float, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    size_multiple: int
    outputs: dict[str, str]
    options: dict
    trained: bool
    training_config_hash: str
    opset: int
    quantization: str
    raw: dict[str, str]
    trained_input_hw: tuple[int, int] | None = None


def spec_to_props(spec, *, trained: bool, config_hash: str, weights_sha256: str,
                  package_version: str, trained_input_hw: tuple[int, int] | None = None) -> dict[str, str]:
    """metadata_props for a ``kp_vo.models.spec.ModelSpec``."""
    inp = {"name": spec.input_name, "layout": "NCHW", "dtype": "float32", "channels": spec.input_channels,
           "channel_order": spec.channel_order, "value_range": list(spec.value_range),
           "mean": list(spec.mean), "std": list(spec.std)}
    props = {"format_version": FORMAT_VERSION, "kind": spec.kind, "package_version": package_version,
             "input": json.dumps(inp), "size_multiple": str(spec.size_multiple),
             "outputs": json.dumps(spec.outputs), "options": json.dumps(spec.options),
             "trained": "true" if trained else "false", "training_config_hash": config_hash,
             "weights_sha256": weights_sha256, "quantization": "none"}
    if trained_input_hw is not None:
        props["trained_input_hw"] = f"{int(trained_input_hw[0])}x{int(trained_input_hw[1])}"
    return {PREFIX + k: v for k, v in props.items()}


def props_of(model_proto) -> dict[str, str]:
    return {p.key: p.value for p in model_proto.metadata_props}


def parse_metadata(props: dict[str, str], opset: int, source: str) -> ModelMetadata:
    """ModelMetadata from ``metadata_props``; ModelFileError naming ``source`` and the key if absent or malformed
    (wrong JSON, wrong types, sizes < 1, a non-positive std, ...)."""
    short = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
    missing = [k for k in REQUIRED if k not in short]
    if missing:
        raise ModelFileError(f"{source}: not a kp_vo model (metadata lacks {', '.join(PREFIX + k for k in missing)})")
    if short["format_version"] != FORMAT_VERSION:
        raise ModelFileError(f"{source}: metadata format {short['format_version']} unsupported "
                             f"(expected {FORMAT_VERSION})")
    key = "input"
    try:
        inp = _json(short, "input", dict)
        channels = _positive_int(inp.get("channels"), "channels")
        mean, std = _numbers(inp.get("mean"), channels, "mean"), _numbers(inp.get("std"), channels, "std")
        if min(std) <= 0:
            raise ValueError(f"std {list(std)} must be positive")
        value_range = _numbers(inp.get("value_range"), 2, "value_range")
        if not value_range[0] < value_range[1]:
            raise ValueError(f"value_range {list(value_range)} is empty")
        for name in ("name", "channel_order"):
            if not isinstance(inp.get(name), str) or not inp[name]:
                raise ValueError(f"{name} must be a non-empty string")
        key = "size_multiple"
        size_multiple = _positive_int(short["size_multiple"], "size_multiple")
        key = "outputs"
        outputs = _json(short, "outputs", dict)
        if not outputs or not all(isinstance(k, str) and isinstance(v, str) for k, v in outputs.items()):
            raise ValueError("must map output names to their meanings")
        key = "options"
        options = _json({"options": short.get("options", "{}")}, "options", dict)
        key = "trained"
        if short["trained"] not in ("true", "false"):
            raise ValueError(f"{short['trained']!r} is not true or false")
        key = "trained_input_hw"
        hw = _parse_hw(short["trained_input_hw"]) if "trained_input_hw" in short else None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ModelFileError(f"{source}: malformed kp_vo metadata {PREFIX}{key} ({exc})") from None
    return ModelMetadata(
        kind=short["kind"], input_name=inp["name"], channels=channels, channel_order=inp["channel_order"],
        value_range=value_range, mean=mean, std=std, size_multiple=size_multiple, outputs=outputs,
        options=options, trained=short["trained"] == "true", training_config_hash=short["training_config_hash"],
        opset=opset, quantization=short.get("quantization", "none"), raw=dict(props), trained_input_hw=hw)


def _json(short: dict[str, str], key: str, kind: type):
    value = json.loads(short[key])
    if not isinstance(value, kind):
        raise ValueError(f"expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _positive_int(value, name: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def _numbers(values, count: int, name: str) -> tuple[float, ...]:
    if not isinstance(values, list) or len(values) != count or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be {count} finite numbers, got {values!r}")
    return tuple(float(v) for v in values)


def check_graph(meta: ModelMetadata, model_proto, source: str) -> None:
    """ModelFileError unless the graph has the metadata's input (rank 4, its channel count where fixed)
    and exactly the outputs the metadata names."""
    initializers = {t.name for t in model_proto.graph.initializer}
    inputs = {i.name: i for i in model_proto.graph.input if i.name not in initializers}
    if meta.input_name not in inputs:
        raise ModelFileError(f"{source}: metadata names input {meta.input_name!r} but the graph's inputs are "
                             f"{sorted(inputs)}")
    dims = inputs[meta.input_name].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ModelFileError(f"{source}: input {meta.input_name!r} has rank {len(dims)}, expected 4 (NCHW)")
    if dims[1].HasField("dim_value") and dims[1].dim_value != meta.channels:
        raise ModelFileError(f"{source}: input {meta.input_name!r} has {dims[1].dim_value} channels, the metadata "
                             f"says {meta.channels}")
    graph_outputs = [o.name for o in model_proto.graph.output]
    if sorted(graph_outputs) != sorted(meta.outputs):
        raise ModelFileError(f"{source}: metadata outputs {sorted(meta.outputs)} differ from the graph's "
                             f"{sorted(graph_outputs)}")


def _parse_hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.split("x"))
    if h < 1 or w < 1:
        raise ValueError(f"trained_input_hw {text!r} is not a size")
    return h, w


def default_opset(model_proto) -> int:
    for imp in model_proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 0


def load_onnx_checked(path: str | Path):
    """Load and validate an .onnx file: ModelFileError if missing, truncated/corrupt or invalid."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(proto)
    except Exception as exc:  # protobuf DecodeError, ValidationError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: corrupt or invalid ONNX file ({first[:200]})") from None
    return proto


def read_metadata(path: str | Path) -> ModelMetadata:
    """The kp_vo metadata of an exported .onnx file (validated)."""
    proto = load_onnx_checked(path)
    return parse_metadata(props_of(proto), default_opset(proto), str(path))
