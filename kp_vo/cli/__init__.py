"""The ``kp-vo`` command: thin argument parsing over typed library functions.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds
its parser and sets ``func(args) -> int``; a module imports its heavy libraries (torch,
onnxruntime, faiss) only when its command runs, so ``kp-vo --help`` stays fast. Known errors
(``KpVoError``) become one line on stderr and exit code 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from kp_vo import __version__
from kp_vo.errors import KpVoError

# The sub-command modules, in the order ``kp-vo --help`` lists them.
COMMAND_MODULES = (
    "kp_vo.cli.run",
    "kp_vo.cli.bench",
    "kp_vo.cli.export",
    "kp_vo.cli.bag",
    "kp_vo.cli.map",
    "kp_vo.cli.train",
    "kp_vo.cli.evaluate",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kp-vo", description="Learned-keypoint visual odometry and relocalization.")
    parser.add_argument("--version", action="version", version=f"kp-vo {__version__}")
    level = parser.add_mutually_exclusive_group()
    level.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    level.add_argument("-q", "--quiet", action="store_true", help="log only warnings and errors; no progress bars")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KpVoError as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__   # one line, whatever the message holds
        print(f"kp-vo {args.command}: error: {message}", file=sys.stderr)
        return 2
