"""ONNX Runtime session for an exported kp_vo model: provider choice, metadata checks, I/O binding.

    model = OnnxModel("keypointnet.onnx", expected_kind="keypointnet", device="auto", threads=2)
    model.provider          # e.g. "CUDAExecutionProvider" (read back from the session)
    outputs = model.run(x)  # x (B, C, H, W) float32 normalised -> {output name: np.ndarray}
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from kp_vo.errors import InvalidInputError, ModelFileError
from kp_vo.export.metadata import (
    MIN_OPSET,
    ModelMetadata,
    check_graph,
    default_opset,
    load_onnx_checked,
    parse_metadata,
    props_of,
)

log = logging.getLogger(__name__)

PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
DEVICE_PROVIDERS = {"auto": PROVIDER_ORDER, "tensorrt": PROVIDER_ORDER, "cuda": PROVIDER_ORDER[1:],
                    "cpu": PROVIDER_ORDER[2:]}
MAX_OPSET = 21  # newest default-domain opset this runtime is tested with


def choose_providers(device: str, available: list[str]) -> list[str]:
    """Providers to request, in the order TensorRT -> CUDA -> CPU, limited by ``device`` and by
    what this onnxruntime build offers. CPU is always last."""
    if device not in DEVICE_PROVIDERS:
        raise InvalidInputError(f"unknown device {device!r}; use one of {', '.join(DEVICE_PROVIDERS)}")
    wanted = [p for p in DEVICE_PROVIDERS[device] if p in available]
    return wanted if "CPUExecutionProvider" in wanted else wanted + ["CPUExecutionProvider"]


def cuda_runtime_found() -> bool:
    """Whether the dynamic loader finds the GPU driver and the CUDA libraries the GPU providers need.

    onnxruntime-gpu lists CUDA/TensorRT as available even on machines without CUDA; asking for
    them there prints a long loader error before falling back to the CPU, so ``device="auto"``
    skips them when no CUDA runtime is installed.
    """
    import ctypes.util

    return all(ctypes.util.find_library(name) for name in ("cuda", "cudart", "cublasLt", "cudnn"))


class OnnxModel:
    """An exported kp_vo model served by ONNX Runtime."""

    def __init__(self, path: str | Path, *, expected_kind: str | tuple[str, ...] | None = None,
                 device: str = "auto", threads: int | None = None):
        """path: .onnx exported by kp_vo. expected_kind: a kind or kinds; refuse others. device: "auto" (TensorRT ->
        CUDA -> CPU), "cuda", "tensorrt" or "cpu". threads: intra-op threads (None = ORT default)."""
        import onnxruntime as ort

        self.path = Path(path)
        proto = load_onnx_checked(self.path)
        opset = default_opset(proto)
        self.meta: ModelMetadata = parse_metadata(props_of(proto), opset, str(self.path))
        kinds = (expected_kind,) if isinstance(expected_kind, str) else expected_kind
        if kinds is not None and self.meta.kind not in kinds:
            raise ModelFileError(f"{self.path}: is a {self.meta.kind!r} model, expected "
                                 f"{' or '.join(repr(k) for k in kinds)}")
        if not MIN_OPSET <= opset <= MAX_OPSET:
            raise ModelFileError(f"{self.path}: opset {opset} unsupported (need {MIN_OPSET}..{MAX_OPSET})")
        check_graph(self.meta, proto, str(self.path))
        if not self.meta.trained:
            log.warning("%s: model has UNTRAINED weights (metadata kp_vo.trained=false)", self.path)
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        available = ort.get_available_providers()
        if device == "auto" and not cuda_runtime_found():
            available = [p for p in available if p == "CPUExecutionProvider"]
        requested = choose_providers(device, available)
        try:
            self.session = ort.InferenceSession(proto.SerializeToString(), sess_options=options, providers=requested)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise ModelFileError(f"{self.path}: ONNX Runtime cannot load it ({first})") from None
        self.provider: str = self.session.get_providers()[0]
        log.info("%s: %s on %s (requested %s)", self.path.name, self.meta.kind, self.provider, requested)
        if self.provider != requested[0]:
            log.warning("%s: %s unavailable here, running on %s", self.path.name, requested[0], self.provider)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._ort = ort

    def check_input(self, x: np.ndarray) -> None:
        """InvalidInputError unless x is (B, C, H, W) float32 with C and H, W fitting the model."""
        m = self.meta
        if x.ndim != 4 or x.shape[1] != m.channels:
            raise InvalidInputError(f"{self.path.name}: input must be (B, {m.channels}, H, W), got {x.shape}")
        h, w = x.shape[2], x.shape[3]
        if h < m.size_multiple or w < m.size_multiple or h % m.size_multiple or w % m.size_multiple:
            raise InvalidInputError(f"{self.path.name}: input {w}x{h} is not a positive multiple of "
                                    f"{m.size_multiple}; resize it (see kp_vo.runtime.preprocess.fit_size)")

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """x: (B, C, H, W) normalised network input. Returns {output name: array}."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.check_input(x)
        try:
            outs = self._run(x)
        except Exception as exc:  # ORT raises its own Fail/InvalidArgument/RuntimeException types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise InvalidInputError(f"{self.path.name}: ONNX Runtime cannot run input {x.shape} ({first})") from None
        return dict(zip(self.output_names, outs))

    def _run(self, x: np.ndarray) -> list[np.ndarray]:
        if self.provider == "CPUExecutionProvider":
            return self.session.run(None, {self.meta.input_name: x})
        # I/O binding: copy the input to the device once, let outputs come back to host memory.
        binding = self.session.io_binding()
        binding.bind_ortvalue_input(self.meta.input_name, self._ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
