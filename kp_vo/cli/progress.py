"""Progress bars of long commands: on stderr, throttled, off with ``--no-progress`` or ``kp-vo --quiet``."""

from __future__ import annotations

import argparse
from typing import Iterable

MIN_INTERVAL_S = 0.5   # at most two redraws a second (logs of non-interactive runs stay short)


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def show_progress(args: argparse.Namespace) -> bool:
    return not (getattr(args, "quiet", False) or getattr(args, "no_progress", False))


def progress_bar(args: argparse.Namespace, iterable: Iterable | None = None, total: int | None = None,
                 unit: str = "frame"):
    """A tqdm bar over ``iterable`` (or updated by hand), disabled as the arguments say."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, disable=not show_progress(args), mininterval=MIN_INTERVAL_S,
                dynamic_ncols=True)
