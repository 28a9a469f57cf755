"""What an exported model promises: its kind, input normalization, size constraint and outputs.

Every model module exposes ``spec() -> ModelSpec``; the exporter writes it into the ONNX
metadata and the runtime reads it back, so preprocessing is never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSpec:
    kind: str                      # registry name, e.g. "keypointnet"
    input_channels: int            # 3 (RGB) or 1 (grayscale / normalised depth)
    channel_order: str             # "RGB", "GRAY" or "DEPTH"
    value_range: tuple[float, float]  # range of the raw input before (x - mean) / std
    mean: tuple[float, ...]        # per-channel mean subtracted by the runtime
    std: tuple[float, ...]         # per-channel std divided by the runtime
    size_multiple: int             # H and W must be multiples of this
    outputs: dict[str, str] = field(default_factory=dict)  # output name -> meaning, in graph order
    options: dict = field(default_factory=dict)             # constructor options (recorded in metadata)
    input_name: str = "image"
