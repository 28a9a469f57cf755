"""Training checkpoints as safetensors (+ a JSON sidecar), never pickles.

A checkpoint ``<dir>/step_<NNNNNNNN>.safetensors`` holds tensors only:
    "model/<name>/<param or buffer>"          every model's state_dict
    "optim/state/<param index>/<key>"         optimizer per-parameter tensor state (AdamW: exp_avg, ...)
    "rng/torch", "rng/cuda/<i>"               torch CPU / CUDA generator states (uint8)
and ``step_<NNNNNNNN>.json`` holds everything scalar: step, optimizer param_groups and non-tensor
per-parameter state, GradScaler state, numpy and python RNG states, free-form ``extra``, and the
sha256 of the tensor file (checked on load). Both are written atomically (temp file + rename),
tensors first, so a JSON sidecar always describes a complete tensor file.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kp_vo.errors import ModelFileError
from kp_vo.fileio import atomic_path, file_sha256
from kp_vo.models.checkpoints import load_checkpoint_models

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.json$")


def _rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    scalars = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
               "python": [py[0], list(py[1]), py[2]]}
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, state, gauss = scalars["python"]
    random.setstate((version, tuple(state), gauss))


def save_checkpoint(directory: str | Path, step: int, models: dict[str, nn.Module],
                    optimizer: torch.optim.Optimizer | None = None, scaler=None, extra: dict | None = None,
                    keep: int = 3) -> Path:
    """Write the checkpoint of ``step`` into ``directory``; keep the newest ``keep`` (0 = all).
    Returns the JSON sidecar path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    for name, model in models.items():
        for key, value in model.state_dict().items():
            tensors[f"model/{name}/{key}"] = value.detach().cpu().contiguous()
    meta: dict = {"format": "kp_vo.training.checkpoint/1", "step": int(step), "extra": extra or {}}
    if optimizer is not None:
        state = optimizer.state_dict()
        scalar_state: dict = {}
        for idx, pstate in state["state"].items():
            for key, value in pstate.items():
                if torch.is_tensor(value):
                    tensors[f"optim/state/{idx}/{key}"] = value.detach().cpu().contiguous()
                else:
                    scalar_state.setdefault(str(idx), {})[key] = value
        meta["optimizer"] = {"param_groups": state["param_groups"], "scalar_state": scalar_state}
    if scaler is not None:
        meta["scaler"] = scaler.state_dict()
    rng_tensors, rng_scalars = _rng_state()
    tensors.update(rng_tensors)
    meta["rng"] = rng_scalars

    stem = f"step_{int(step):08d}"
    tensor_path, json_path = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    with atomic_path(tensor_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": meta["format"]})
    meta["tensors"] = tensor_path.name
    meta["sha256"] = file_sha256(tensor_path)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(meta))
    log.info("saved checkpoint %s", json_path)
    if keep > 0:
        for old in list_checkpoints(directory)[:-keep]:
            for p in (old, old.with_suffix(".safetensors")):
                p.unlink(missing_ok=True)
    return json_path


def list_checkpoints(directory: str | Path) -> list[Path]:
    """JSON sidecars in ``directory``, oldest step first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _NAME.match(p.name))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


@dataclass
class LoadedCheckpoint:
    step: int
    extra: dict
    path: Path


def load_checkpoint(path: str | Path, models: dict[str, nn.Module], optimizer: torch.optim.Optimizer | None = None,
                    scaler=None, restore_rng: bool = True) -> LoadedCheckpoint:
    """Restore models (strict), optimizer, scaler and RNG from a checkpoint (its .json or .safetensors path).
    ModelFileError when files are missing, corrupt, or do not fit the models."""
    tensors, meta = load_checkpoint_models(path, models)
    json_path = Path(path).with_suffix(".json")
    tensor_path = json_path.parent / meta["tensors"]
    if optimizer is not None and "optimizer" in meta:
        state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optim/state/"):
                _, _, idx, name = key.split("/", 3)
                state.setdefault(int(idx), {})[name] = value
        for idx, scalars in meta["optimizer"]["scalar_state"].items():
            state.setdefault(int(idx), {}).update(scalars)
        try:
            optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})
        except (ValueError, KeyError) as exc:
            raise ModelFileError(f"{tensor_path}: optimizer state does not fit: {exc}") from None
    if scaler is not None and meta.get("scaler"):
        scaler.load_state_dict(meta["scaler"])
    if restore_rng:
        _set_rng_state(tensors, meta["rng"])
    return LoadedCheckpoint(step=int(meta["step"]), extra=meta.get("extra", {}), path=json_path)


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> Path:
    """A model's state_dict alone as .safetensors (what ``kp_vo.export.export_onnx(weights=...)`` reads)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    return path
