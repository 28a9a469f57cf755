"""Loading weights into the project's models, including the KP2D authors' checkpoints.

The authors' KeypointResnet (``encoderK.rn.*`` ResNet-18, ``decoderK.upconv{4..1}_{0,1}.conv.{0,1}``,
``decoderK.{score,loc,feat}conv.{0,1,4}``) and KeypointNet (``stem.conv{1..4}{a,b}.{0,1}``,
``conv{D,P,F}a``, ``convDb``, ``convPb``, ``convFb``, ``convFaa``, ``convFbb``) parameter names are
renamed to ours by the rules below (names and shapes only; their code is not used).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from kp_vo.errors import ModelFileError
from kp_vo.fileio import file_sha256

log = logging.getLogger(__name__)

# (pattern, replacement) pairs tried in order; the first match renames the key.
_RESNET_RULES = (
    (r"^encoderK\.rn\.fc\..*$", None),                                   # classifier: dropped
    (r"^encoderK\.rn\.(conv1|bn1|layer[1-4])\.", r"encoder.\1."),
    (r"^decoderK\.upconv([1-4])_0\.conv\.0\.", r"up\1a.conv."),
    (r"^decoderK\.upconv([1-4])_0\.conv\.1\.", r"up\1a.bn."),
    (r"^decoderK\.upconv([1-4])_1\.conv\.0\.", r"up\1b.conv."),
    (r"^decoderK\.upconv([1-4])_1\.conv\.1\.", r"up\1b.bn."),
)
_HEADS = {"scoreconv": "score_head", "locconv": "location_head", "featconv": "descriptor_head"}
for _theirs, _ours in _HEADS.items():
    _RESNET_RULES += (
        (rf"^decoderK\.{_theirs}\.0\.", f"{_ours}.hidden.conv."),
        (rf"^decoderK\.{_theirs}\.1\.", f"{_ours}.hidden.bn."),
        (rf"^decoderK\.{_theirs}\.4\.", f"{_ours}.out."),
    )

_VGG_RULES: tuple = ()
for _stage in range(1, 5):
    for _j, _ab in enumerate("ab"):
        _idx = 2 * (_stage - 1) + _j
        _VGG_RULES += ((rf"^stem\.conv{_stage}{_ab}\.0\.", f"enc.{_idx}.conv."),
                       (rf"^stem\.conv{_stage}{_ab}\.1\.", f"enc.{_idx}.bn."))
for _theirs, _ours in (("convDa", "score_hidden"), ("convPa", "loc_hidden"), ("convFa", "desc_a"),
                       ("convFaa", "desc_c")):
    _VGG_RULES += ((rf"^{_theirs}\.0\.", f"{_ours}.conv."), (rf"^{_theirs}\.1\.", f"{_ours}.bn."))
_VGG_RULES += ((r"^convDb\.", "score_out."), (r"^convPb\.", "loc_out."), (r"^convFb\.", "desc_b."),
               (r"^convFbb\.", "desc_out."))

_PREFIXES = ("module.", "model.", "keypoint_net.")


def _strip_prefixes(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for p in _PREFIXES:
            if key.startswith(p):
                key, changed = key[len(p):], True
    return key


def map_kp2d_state_dict(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, torch.Tensor]:
    """Rename a KP2D authors' state dict to this project's names.

    kind: "keypointnet" (their KeypointResnet) or "keypointnet_vgg" (their KeypointNet).
    Returns a new dict (tensors shared). Raises ModelFileError naming the first key no rule covers.
    """
    rules = {"keypointnet": _RESNET_RULES, "keypointnet_vgg": _VGG_RULES}.get(kind)
    if rules is None:
        raise ModelFileError(f"no KP2D key mapping for model kind {kind!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = _strip_prefixes(key)
        for pattern, repl in rules:
            if re.match(pattern, k):
                if repl is not None:
                    out[re.sub(pattern, repl, k, count=1)] = value
                break
        else:
            raise ModelFileError(f"checkpoint key {key!r} has no counterpart in {kind}")
    return out


def is_kp2d_state_dict(state: Mapping[str, torch.Tensor]) -> bool:
    keys = [_strip_prefixes(k) for k in state]
    return any(k.startswith(("encoderK.", "decoderK.", "stem.conv")) for k in keys)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) from a .safetensors file; ModelFileError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: weights file not found")
    try:
        from safetensors import safe_open
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as exc:  # safetensors raises several types for corrupt headers
        raise ModelFileError(f"{path}: not a readable .safetensors file ({type(exc).__name__}: {exc})") from None
    return tensors, meta


def _checkpoint_model(state: Mapping[str, torch.Tensor], names: set[str], kind: str, source: str) -> dict:
    """The tensors of the one model in a training checkpoint whose parameter names are ``names``."""
    models: dict[str, dict] = {}
    for key, value in state.items():
        _, name, param = key.split("/", 2)
        models.setdefault(name, {})[param] = value
    fits = [name for name, tensors in models.items() if set(tensors) == names]
    if len(fits) != 1:
        raise ModelFileError(f"{source}: training checkpoint with models {sorted(models)}, "
                             f"{'none' if not fits else 'several'} of which fit {kind}")
    return models[fits[0]]


def load_weights(model: nn.Module, state: Mapping[str, torch.Tensor], kind: str, source: str = "state dict") -> None:
    """Load ``state`` (ours or KP2D-named, or a training checkpoint's "model/<name>/..." tensors, of
    which the one model whose parameter names fit is taken) into ``model`` strictly; ModelFileError
    on any mismatch."""
    if any(k.startswith("model/") for k in state) and not any(k in state for k in model.state_dict()):
        state = _checkpoint_model({k: v for k, v in state.items() if k.startswith("model/")},
                                  set(model.state_dict()), kind, source)
    if is_kp2d_state_dict(state):
        log.info("mapping KP2D checkpoint names from %s into %s", source, kind)
        state = map_kp2d_state_dict(state, kind)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ModelFileError(f"{source}: weights do not fit {kind}: {len(missing)} missing (e.g. "
                             f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ModelFileError(f"{source}: {k} has shape {tuple(v.shape)}, {kind} expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)


def load_initial_weights(models: Mapping[str, nn.Module], paths: Mapping[str, str], who: str) -> None:
    """Initialise ``models[name]`` from the .safetensors file ``paths[name]`` where one is given ("" = keep
    the fresh weights); ``who`` names the caller in the log line (e.g. the training recipe)."""
    for name, path in paths.items():
        if path:
            tensors, _ = read_state_dict(path)
            load_weights(models[name], tensors, name, source=path)
            log.info("%s: %s initialised from %s", who, name, path)



def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict, Path]:
    """(every tensor, the JSON sidecar, the tensor file) of a training checkpoint given its .json or
    .safetensors path; the tensor file is the one the sidecar names, checked against its sha256.
    ModelFileError when files are missing or corrupt."""
    from safetensors.torch import load_file

    json_path = Path(path).with_suffix(".json")
    try:
        meta = json.loads(json_path.read_text())
        tensor_path = json_path.parent / meta["tensors"]
    except (OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{json_path}: not a readable kp_vo checkpoint ({exc})") from None
    if not tensor_path.is_file() or file_sha256(tensor_path) != meta.get("sha256"):
        raise ModelFileError(f"{tensor_path}: missing or does not match its checksum in {json_path.name}")
    try:
        tensors = load_file(str(tensor_path))
    except Exception as exc:  # safetensors raises several types for corrupt files
        raise ModelFileError(f"{tensor_path}: unreadable ({type(exc).__name__}: {exc})") from None
    return tensors, meta, tensor_path


def _load_checkpoint_model(model: nn.Module, name: str, tensors: Mapping[str, torch.Tensor], source: Path) -> None:
    """Load the tensors "model/<name>/..." into ``model`` strictly; ModelFileError if they do not fit."""
    prefix = f"model/{name}/"
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state and any(True for _ in model.state_dict()):
        raise ModelFileError(f"{source}: no weights for model {name!r}")
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ModelFileError(f"{source}: weights do not fit model {name!r}: {len(missing)} missing "
                             f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
                             f"{len(wrong)} of another shape (e.g. {wrong[:2]})")
    model.load_state_dict(state, strict=True)


def load_checkpoint_models(path: str | Path, models: Mapping[str, nn.Module]
                           ) -> tuple[dict[str, torch.Tensor], dict]:
    """Load every model of ``models`` (strictly, model ``name`` from the tensors "model/<name>/...")
    from a training checkpoint (``read_checkpoint``); returns (every tensor, the sidecar) for the rest
    of the training state. ModelFileError when files are missing, corrupt, or do not fit the models."""
    tensors, meta, tensor_path = read_checkpoint(path)
    for name, model in models.items():
        _load_checkpoint_model(model, name, tensors, tensor_path)
    return tensors, meta
