"""Export of the torch models to self-contained ONNX files with kp_vo metadata, and int8 variants.

Attributes load lazily so that the runtime (which only needs ``kp_vo.export.metadata``) does not
import torch.
"""

from importlib import import_module

_WHERE = {"ModelMetadata": "metadata", "read_metadata": "metadata", "export_onnx": "onnx_export",
          "export_module": "onnx_export", "quantize_model": "quantize"}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"kp_vo.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kp_vo.export' has no attribute {name!r}")
