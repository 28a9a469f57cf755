"""``kp-vo train RECIPE [--config FILE.yaml] [--set key.sub=value ...]``: run a training recipe.

Single process by default; launch with ``torchrun --nproc_per_node N -m kp_vo.cli train ...`` for DDP.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from kp_vo.training.recipes import available_recipes   # the registry only: no torch

    p = subparsers.add_parser("train", help="train a model with a recipe (checkpoints, logs, ONNX export)")
    p.add_argument("recipe", choices=available_recipes(), help="training recipe")
    p.add_argument("--config", default=None, help="YAML config (partial overrides of the recipe defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. --set train.steps=100 (repeatable)")
    p.add_argument("--resume", default=None, help="'auto' (latest checkpoint in output_dir) or a checkpoint path")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from kp_vo.settings import parse_settings
    from kp_vo.training.trainer import train

    overrides = parse_settings(args.overrides, "--set")
    if args.resume:
        overrides.setdefault("train", {})["resume"] = args.resume
    result = train(args.recipe, args.config, overrides=overrides or None)
    log.info("trained %s to step %d in %.1f s; output in %s; exported: %s", result.recipe, result.step,
             result.wall_s, result.output_dir, ", ".join(map(str, result.exported)) or "none")
    return 0
