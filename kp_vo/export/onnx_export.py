"""Export a kp_vo torch model to one self-contained .onnx file with kp_vo metadata.

Dynamic batch, height and width; opset 17 by default; the legacy TorchScript exporter
(``dynamo=False``) is used because it handles the data-dependent-free graphs here reliably.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from kp_vo import __version__
from kp_vo.errors import InvalidInputError
from kp_vo.export.metadata import MIN_OPSET, load_onnx_checked, spec_to_props
from kp_vo.fileio import atomic_path, file_sha256
from kp_vo.models import build_model
from kp_vo.models.checkpoints import load_weights, read_state_dict

log = logging.getLogger(__name__)


class _TupleOutputs(nn.Module):
    """Adapter: tensor in -> tuple of the model's outputs in ``spec().outputs`` order."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, image: torch.Tensor):
        out = self.model({"image": image})
        return tuple(out[n] for n in self.names)


def _config_hash(meta: dict[str, str]) -> str:
    if "training_config_hash" in meta:
        return meta["training_config_hash"]
    if "training_config" in meta:
        return hashlib.sha256(meta["training_config"].encode()).hexdigest()[:16]
    return "unrecorded"


def export_onnx(model_name: str, output_path: str | Path, *, weights: str | Path | None = None,
                opset: int = 17, sample_hw: tuple[int, int] | None = None,
                trained_input_hw: tuple[int, int] | None = None, **model_options) -> Path:
    """Export model ``model_name`` (see ``kp_vo.models.MODEL_BUILDERS``) to ``output_path``.

    weights: optional .safetensors checkpoint (ours or KP2D-named); without it the file is marked
    ``kp_vo.trained = false`` and ``training_config_hash = untrained``.
    sample_hw: (H, W) of the tracing input (default: 2 and 3 size multiples, at least 64x96).
    trained_input_hw: (H, W) the weights were trained at, recorded as the runtime's default input size
    of models that depend on it (DepthNet).
    model_options: constructor options, e.g. descriptor_dim=256.
    Returns the written path. The file is written atomically and validated with onnx.checker.
    """
    output_path = Path(output_path)
    model = build_model(model_name, **model_options)
    trained, config_hash, weights_sha = False, "untrained", "none"
    if weights is not None:
        tensors, meta = read_state_dict(weights)
        load_weights(model, tensors, model_name, source=str(weights))
        trained, config_hash, weights_sha = True, _config_hash(meta), file_sha256(Path(weights))
    else:
        log.warning("exporting %s with random (untrained) weights; metadata says so", model_name)
    return export_module(model, output_path, opset=opset, sample_hw=sample_hw, trained=trained,
                         config_hash=config_hash, weights_sha256=weights_sha, trained_input_hw=trained_input_hw)


def export_module(model: nn.Module, output_path: str | Path, *, opset: int = 17,
                  sample_hw: tuple[int, int] | None = None, trained: bool = False,
                  config_hash: str = "untrained", weights_sha256: str = "none",
                  trained_input_hw: tuple[int, int] | None = None) -> Path:
    """Export an already built kp_vo model instance (its weights as they are) to ``output_path``.
    ``trained``/``config_hash``/``weights_sha256``/``trained_input_hw`` go into the metadata verbatim:
    only claim ``trained=True`` for weights that came from a training run."""
    import onnx

    if opset < MIN_OPSET:
        raise InvalidInputError(f"opset {opset} too old, kp_vo needs >= {MIN_OPSET}")
    output_path = Path(output_path)
    model.eval()
    spec = model.spec()
    m = spec.size_multiple
    if sample_hw is None:
        sample_hw = (max(64, 2 * m), max(96, 3 * m))
    h, w = sample_hw
    if h % m or w % m:
        raise InvalidInputError(f"sample size {h}x{w} is not a multiple of {m}")
    names = list(spec.outputs)
    dummy = torch.rand(1, spec.input_channels, h, w)
    dyn = {spec.input_name: {0: "batch", 2: "height", 3: "width"}}
    with torch.no_grad():
        outs = _TupleOutputs(model, names).eval()(dummy)
    for n, o in zip(names, outs):
        dyn[n] = {0: "batch"} if o.dim() < 4 else {0: "batch", 2: f"{n}_height", 3: f"{n}_width"}

    try:
        with atomic_path(output_path) as tmp_path, torch.no_grad():
            tmp = str(tmp_path)
            torch.onnx.export(_TupleOutputs(model, names).eval(), (dummy,), tmp, input_names=[spec.input_name],
                              output_names=names, dynamic_axes=dyn, opset_version=opset, dynamo=False,
                              do_constant_folding=True)
            proto = onnx.load(tmp)
            props = spec_to_props(spec, trained=trained, config_hash=config_hash, weights_sha256=weights_sha256,
                                  package_version=__version__, trained_input_hw=trained_input_hw)
            del proto.metadata_props[:]
            for k, v in props.items():
                proto.metadata_props.add(key=k, value=v)
            proto.producer_name = "kp_vo"
            proto.doc_string = f"kp_vo {spec.kind} ({'trained' if trained else 'UNTRAINED'})"
            onnx.checker.check_model(proto)
            onnx.save_model(proto, tmp, save_as_external_data=False)
    finally:
        model.eval()        # the exporter restores the wrapper's mode; keep the caller's model in eval
    load_onnx_checked(output_path)
    log.info("exported %s (%s) to %s, opset %d", spec.kind, "trained" if trained else "untrained", output_path, opset)
    return output_path
