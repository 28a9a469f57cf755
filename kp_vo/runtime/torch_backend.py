"""The same ``run(x) -> {name: array}`` contract as OnnxModel, served by the torch module directly
(for debugging, training-time evaluation, or machines without onnxruntime)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kp_vo.errors import InvalidInputError
from kp_vo.export.metadata import ModelMetadata, parse_metadata, spec_to_props

log = logging.getLogger(__name__)


class TorchModel:
    def __init__(self, kind: str, *, weights: str | Path | None = None, device: str = "cpu",
                 threads: int | None = None, precision: str = "fp32", **model_options):
        """kind: model kind; weights: .safetensors (ours or KP2D-named) or None (random, logged as untrained).
        precision: "fp32", or "fp16" (CUDA only: float16 autocast, so convolutions run in half precision
        while weights and float32 arithmetic such as the keypoint coordinates stay float32; outputs float32)."""
        import torch

        from kp_vo.models import build_model
        from kp_vo.models.checkpoints import load_weights, read_state_dict

        if threads is not None:
            torch.set_num_threads(int(threads))
        self.model = build_model(kind, **model_options)
        if weights is not None:
            tensors, _ = read_state_dict(weights)
            load_weights(self.model, tensors, kind, source=str(weights))
        else:
            log.warning("torch %s has UNTRAINED (random) weights", kind)
        if device not in ("cpu", "cuda", "auto"):
            raise InvalidInputError(f"unknown device {device!r} for the torch backend")
        use_cuda = device in ("cuda", "auto") and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        if precision not in ("fp32", "fp16"):
            raise InvalidInputError(f"unknown precision {precision!r} for the torch backend; use 'fp32' or 'fp16'")
        if precision == "fp16" and not use_cuda:
            raise InvalidInputError("torch precision 'fp16' needs CUDA (this device: cpu); use 'fp32'")
        self.half = precision == "fp16"
        self.provider = f"torch-{self.device.type}" + ("-fp16" if self.half else "")
        self.model.to(self.device).eval()
        spec = self.model.spec()
        props = spec_to_props(spec, trained=weights is not None, config_hash="torch", weights_sha256="none",
                              package_version="")
        self.meta: ModelMetadata = parse_metadata(props, 17, f"torch {kind}")
        self.output_names = list(spec.outputs)
        self._torch = torch

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x (B, C, H, W) float32 normalised -> {output name: float32 array on the host}."""
        return {k: v.float().cpu().numpy() for k, v in self.run_on_device(x).items()}

    def run_on_device(self, x: np.ndarray) -> dict:
        """x (B, C, H, W) float32 normalised -> {output name: torch.Tensor on ``self.device``}, left where the
        network ran (float16 where half-precision autocast made them so) for selection on the device."""
        m = self.meta
        if x.ndim != 4 or x.shape[1] != m.channels or x.shape[2] % m.size_multiple or x.shape[3] % m.size_multiple:
            raise InvalidInputError(f"torch {m.kind}: input must be (B, {m.channels}, H, W) with H, W multiples of "
                                    f"{m.size_multiple}, got {x.shape}")
        torch = self._torch
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.float16, enabled=self.half):
            out = self.model({"image": torch.from_numpy(np.ascontiguousarray(x, np.float32)).to(self.device)})
        return {k: out[k] for k in self.output_names}
