"""Export of the torch models to self-contained ONNX files with kp_vo metadata, and int8 variants."""

from kp_vo.export.metadata import ModelMetadata, read_metadata
from kp_vo.export.onnx_export import export_onnx
from kp_vo.export.quantize import quantize_model

__all__ = ["ModelMetadata", "read_metadata", "export_onnx", "quantize_model"]
