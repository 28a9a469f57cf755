"""The generic trainer: ``train(recipe_name, config) -> TrainResult``.

Runs a recipe (``kp_vo.training.recipe.Recipe``) single-process, or data-parallel when launched by
torchrun (WORLD_SIZE > 1: gloo on CPU, nccl on CUDA, DistributedSampler, DDP-wrapped models).
AdamW over all model parameters; seeded; float16 autocast + GradScaler on CUDA when ``amp``;
tqdm progress on rank 0; scalars to ``<output_dir>/metrics.jsonl``; checkpoints (safetensors +
JSON) in ``<output_dir>/checkpoints`` with resume of step, optimizer, scaler and RNG; at the end
``<output_dir>/weights/<model>.safetensors``, ``config_used.yaml`` and the recipe's ONNX export in
``<output_dir>/export``.

Validation (``val_every``): no_grad, BatchNorm layers in eval mode while the models keep their
training flag (recipes may need training-only outputs such as dense descriptors).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kp_vo.config import load_config, save_config
from kp_vo.errors import InvalidInputError, KpVoError
from kp_vo.training import distributed
from kp_vo.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    save_weights,
)
from kp_vo.training.logger import ScalarLogger
from kp_vo.training.recipe import TrainConfig, config_hash
from kp_vo.training.recipes import get_recipe

log = logging.getLogger(__name__)

MAX_NONFINITE_IN_A_ROW = 20            # consecutive skipped updates before a run gives up


class TrainingError(KpVoError):
    """A training run that cannot go on (non-finite loss, empty data, bad resume)."""


@dataclass
class TrainResult:
    recipe: str
    output_dir: Path
    start_step: int                    # 0 for a fresh run, the checkpoint's step for a resumed one
    step: int                          # optimiser steps done in total after this run
    losses: list[float] = field(default_factory=list)    # this process's loss per step of this run
    last_scalars: dict[str, float] = field(default_factory=dict)
    checkpoint: Path | None = None     # the last checkpoint's JSON sidecar
    weights: list[Path] = field(default_factory=list)
    exported: list[Path] = field(default_factory=list)
    wall_s: float = 0.0
    world_size: int = 1
    skipped_steps: int = 0             # updates skipped for non-finite gradients (float32 runs)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise InvalidInputError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} requested but CUDA is not available")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch, device: torch.device):
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


@contextlib.contextmanager
def _frozen_batchnorm(models: dict[str, nn.Module]):
    """BatchNorm layers use (and do not update) their running statistics inside the block."""
    changed = []
    for m in models.values():
        for mod in m.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.training:
                mod.eval()
                changed.append(mod)
    try:
        yield
    finally:
        for mod in changed:
            mod.train()


def _infinite(loader, sampler):
    epoch = 0
    while True:
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        got = False
        for batch in loader:
            got = True
            yield batch
        if not got:
            raise TrainingError("the training data loader yields no batches (dataset smaller than a batch?)")
        epoch += 1


def _config_of(recipe_cls, config):
    if config is None or isinstance(config, (str, Path, dict)):
        return load_config(recipe_cls.config_type, config)
    if isinstance(config, recipe_cls.config_type):
        return config
    raise InvalidInputError(f"config must be a YAML path, a dict or a {recipe_cls.config_type.__name__}")


def train(recipe_name: str, config=None, *, overrides: dict | None = None) -> TrainResult:
    """Train recipe ``recipe_name`` with ``config`` (YAML path, nested dict, config instance or None
    for defaults) and optional nested ``overrides`` applied on top. Returns what the run did."""
    from kp_vo.config import merge

    t0 = time.time()
    recipe_cls = get_recipe(recipe_name)
    cfg = _config_of(recipe_cls, config)
    if overrides:
        cfg = merge(cfg, overrides)
    tc: TrainConfig = cfg.train
    if tc.steps < 1 or tc.batch_size < 1:
        raise InvalidInputError(f"train.steps and train.batch_size must be >= 1 (got {tc.steps}, {tc.batch_size})")
    if not tc.lr > 0 or not tc.lr_gamma > 0 or any(m < 1 for m in tc.lr_milestones):
        raise InvalidInputError(f"train.lr and train.lr_gamma must be > 0 and train.lr_milestones >= 1 "
                                f"(got {tc.lr}, {tc.lr_gamma}, {list(tc.lr_milestones)})")

    if tc.threads > 0:
        torch.set_num_threads(tc.threads)
    info = distributed.env_dist_info()
    device = resolve_device(tc.device, info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    info = distributed.init_distributed(device)
    try:
        return _run(recipe_name, recipe_cls, cfg, tc, info, device, t0)
    finally:
        distributed.cleanup()


def learning_rate(tc: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step ``step`` (0-based): ``tc.lr`` times ``tc.lr_gamma`` per milestone
    already reached. A function of the step alone, so a resumed run follows the schedule of its config
    (also one changed at resume) rather than the rate stored with the optimiser state."""
    return tc.lr * tc.lr_gamma ** sum(step >= m for m in tc.lr_milestones)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _run(recipe_name, recipe_cls, cfg, tc: TrainConfig, info, device, t0) -> TrainResult:
    out_dir = Path(tc.output_dir)
    ckpt_dir = out_dir / "checkpoints"
    use_amp = bool(tc.amp) and device.type == "cuda"
    seed_everything(tc.seed)                              # identical initial weights on every rank
    recipe = recipe_cls(cfg)
    models = {name: m.to(device).train() for name, m in recipe.build_models().items()}
    params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise TrainingError(f"recipe {recipe_name!r} has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    start_step = 0
    if tc.resume:
        path = latest_checkpoint(ckpt_dir) if tc.resume == "auto" else Path(tc.resume)
        if path is None:
            log.info("resume=auto: no checkpoint in %s, starting fresh", ckpt_dir)
        else:
            # RNG: restored exactly for single-process runs; DDP ranks reseed per (seed, rank, step)
            # so they do not all replay rank 0's random stream.
            loaded = load_checkpoint(path, models, optimizer, scaler, restore_rng=not info.is_distributed)
            start_step = loaded.step
            log.info("resumed from %s at step %d", loaded.path, start_step)
    if start_step == 0 or info.is_distributed:
        seed_everything(tc.seed + 1000003 * info.rank + 7919 * start_step)

    run_models = models
    if info.is_distributed:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ids = [device.index] if device.type == "cuda" else None
        run_models = {n: (DDP(m, device_ids=ids, find_unused_parameters=tc.ddp_find_unused)
                          if any(p.requires_grad for p in m.parameters()) else m) for n, m in models.items()}

    dataset = recipe.build_dataset("train")
    sampler = None
    if info.is_distributed:
        sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                                      shuffle=True, seed=tc.seed)
    drop_last = len(dataset) >= tc.batch_size * info.world_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=sampler is None,
                                         sampler=sampler, num_workers=tc.num_workers, drop_last=drop_last,
                                         pin_memory=device.type == "cuda",
                                         persistent_workers=tc.num_workers > 0)
    batches = _infinite(loader, sampler)
    val_dataset = recipe.build_dataset("val") if tc.val_every > 0 else None

    logger = ScalarLogger(out_dir, enabled=info.is_main)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config_used.yaml")
    result = TrainResult(recipe=recipe_name, output_dir=out_dir, start_step=start_step, step=start_step,
                         world_size=info.world_size)
    bar = None
    if info.is_main and tc.progress:
        from tqdm import tqdm
        bar = tqdm(total=tc.steps, initial=start_step, desc=recipe_name, dynamic_ncols=True)

    nonfinite_in_a_row = 0
    try:
        for step in range(start_step, tc.steps):
            set_learning_rate(optimizer, learning_rate(tc, step))
            batch = _to_device(next(batches), device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss, scalars = recipe.compute_loss(run_models, batch, step)
            if not torch.isfinite(loss.detach()):
                raise TrainingError(f"non-finite loss {float(loss)} at step {step} ({scalars})")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            # Under AMP the GradScaler skips non-finite updates itself; in float32 one bad batch would
            # otherwise write NaN into every weight, so its update is skipped here.
            if use_amp or _gradients_finite(params):
                nonfinite_in_a_row = 0
                if tc.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, tc.grad_clip)
                scaler.step(optimizer)
            else:
                nonfinite_in_a_row += 1
                result.skipped_steps += 1
                log.warning("step %d: non-finite gradients, update skipped (%d in a row)", step, nonfinite_in_a_row)
                if nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
                    raise TrainingError(f"non-finite gradients at {nonfinite_in_a_row} steps in a row (last: step "
                                        f"{step}); lower the learning rate or set train.grad_clip")
            scaler.update()
            done = step + 1
            result.step = done
            result.losses.append(float(loss.detach()))
            scalars = {"loss": float(loss.detach()), **scalars}
            if done % max(1, tc.log_every) == 0 or done == tc.steps:
                scalars = distributed.mean_over_ranks(scalars)
                scalars["lr"] = optimizer.param_groups[0]["lr"]
                scalars["skipped_steps"] = result.skipped_steps
                logger.log(done, scalars)
            result.last_scalars = scalars
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{scalars['loss']:.4f}")
            if val_dataset is not None and done % tc.val_every == 0:
                logger.log(done, _validate(recipe, models, val_dataset, tc, device, done), split="val")
            if (tc.checkpoint_every > 0 and done % tc.checkpoint_every == 0) or done == tc.steps:
                if info.is_main:
                    result.checkpoint = save_checkpoint(ckpt_dir, done, models, optimizer, scaler,
                                                        extra={"recipe": recipe_name, "world_size": info.world_size})
                distributed.barrier()
    finally:
        if bar is not None:
            bar.close()
        logger.close()

    if info.is_main:
        cfg_hash = config_hash(cfg)
        for name, m in models.items():
            result.weights.append(save_weights(out_dir / "weights" / f"{name}.safetensors", m,
                                               {"recipe": recipe_name, "step": str(result.step),
                                                "training_config_hash": cfg_hash}))
        if tc.export:
            result.exported = list(recipe.export(models, out_dir / "export"))
    distributed.barrier()
    result.checkpoint = result.checkpoint or latest_checkpoint(ckpt_dir)
    result.wall_s = time.time() - t0
    log.info("%s: steps %d -> %d in %.1f s", recipe_name, start_step, result.step, result.wall_s)
    return result


def _gradients_finite(params: list[torch.Tensor]) -> bool:
    """True when every gradient is finite (one device sync); DDP ranks agree since gradients are all-reduced."""
    flags = [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(flags).all()) if flags else True


def _validate(recipe, models, dataset, tc: TrainConfig, device, step: int) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(dataset, batch_size=tc.batch_size, shuffle=False)
    sums: dict[str, float] = {}
    n = 0
    with torch.no_grad(), _frozen_batchnorm(models):
        for i, batch in enumerate(loader):
            if i >= max(1, tc.val_batches):
                break
            loss, scalars = recipe.compute_loss(models, _to_device(batch, device), step)
            for k, v in {"loss": float(loss), **scalars}.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
    return distributed.mean_over_ranks({k: v / max(n, 1) for k, v in sums.items()})
