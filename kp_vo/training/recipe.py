"""The contract between the trainer and a training recipe, and the base training config.

A *recipe* knows its models, data and loss; the trainer (``kp_vo.training.trainer``) knows
everything generic: seeding, devices, DDP, AMP, optimisation, checkpoints, logging, export.

Every recipe config is a dataclass that embeds ``train: TrainConfig`` and is loaded with
``kp_vo.config.load_config(recipe.config_type, yaml_path_or_dict)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from kp_vo.config import to_dict


@dataclass(frozen=True)
class TrainConfig:
    """Generic optimisation / bookkeeping settings shared by every recipe."""

    steps: int = 1000                  # optimiser steps in total (a resumed run continues up to this)
    batch_size: int = 4                # per process (DDP: the global batch is batch_size * world_size)
    lr: float = 1e-3                   # AdamW learning rate (before any lr_milestones)
    lr_milestones: tuple[int, ...] = ()  # steps at which the learning rate is multiplied by lr_gamma
    lr_gamma: float = 0.1              # factor applied at each milestone (KP2D halves: 0.5)
    weight_decay: float = 0.0          # AdamW weight decay
    seed: int = 0                      # seeds python, numpy, torch (rank added per process)
    num_workers: int = 0               # DataLoader worker processes
    device: str = "auto"               # "auto" (cuda if available else cpu), "cpu", "cuda", "cuda:1"...
    amp: bool = True                   # mixed precision (float16 autocast + GradScaler), CUDA only
    log_every: int = 10                # write scalars every N steps
    checkpoint_every: int = 500        # save a checkpoint every N steps (and always at the end); 0 = end only
    val_every: int = 0                 # validation loss every N steps (0 = never)
    val_batches: int = 2               # batches averaged for a validation loss
    grad_clip: float = 0.0             # clip the global gradient norm to this (0 = off)
    output_dir: str = "runs/train"     # checkpoints, logs, exported ONNX, config_used.yaml
    resume: str = ""                   # "" = fresh run; "auto" = latest checkpoint in output_dir; or a path
    export: bool = True                # call recipe.export at the end of the run (rank 0)
    progress: bool = True              # tqdm progress bar on rank 0
    threads: int = 0                   # torch CPU threads per process (0 = torch's default)
    ddp_find_unused: bool = False      # DDP find_unused_parameters (True if some parameters get no gradient)


@runtime_checkable
class Recipe(Protocol):
    """What the trainer needs from a recipe.

    ``name``: registry name; ``config_type``: the recipe's config dataclass (has field ``train``).
    Dataset items are dicts of tensors (default collation stacks them into a batch dict).
    """

    name: str
    config_type: type

    def __init__(self, config) -> None: ...

    def build_models(self) -> dict[str, nn.Module]:
        """Freshly initialised models by name (all of them are optimised and checkpointed)."""
        ...

    def build_dataset(self, split: str) -> torch.utils.data.Dataset:
        """``split`` is "train" or "val"; items are dicts of tensors."""
        ...

    def compute_loss(self, models: dict[str, nn.Module], batch: dict, step: int
                     ) -> tuple[torch.Tensor, dict[str, float]]:
        """Scalar loss to minimise and named float scalars to log. ``batch`` is already on the device."""
        ...

    def export(self, models: dict[str, nn.Module], output_dir: Path) -> list[Path]:
        """Write the trained models as ONNX files into ``output_dir``; return their paths."""
        ...


OMIT_DEFAULT_FROM_HASH = {"omit_default_from_hash": True}
"""``dataclasses.field(metadata=...)`` of an option added to a recipe config after models were shipped
from it: while the option keeps its default it is left out of ``config_hash``, so the hashes of those
models' committed configs stay what their exports recorded."""


def _hashed_dict(config) -> dict:
    out = to_dict(config)
    def prune(obj, d: dict) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if f.metadata.get("omit_default_from_hash") and value == _default_of(f):
                d.pop(f.name, None)
            elif dataclasses.is_dataclass(value):
                prune(value, d[f.name])
    prune(config, out)
    return out


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def config_hash(config) -> str:
    """16 hex digits identifying a (dataclass) training config: recorded in checkpoints and exports.
    Options marked ``OMIT_DEFAULT_FROM_HASH`` count only when they differ from their default."""
    return hashlib.sha256(json.dumps(_hashed_dict(config), sort_keys=True, default=str).encode()).hexdigest()[:16]
