"""Scalar logging for training runs: JSON lines always, TensorBoard too when it imports.

``metrics.jsonl`` gets one object per call: {"step": int, "split": str, "time": unix s, <name>: float}.
torch.utils.tensorboard needs the ``tensorboard`` package; where it is missing (as on the
development machines) only the JSONL file is written and that is logged once.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

log = logging.getLogger(__name__)


class ScalarLogger:
    def __init__(self, directory: str | Path, enabled: bool = True, tensorboard: bool = True):
        """enabled False (non-zero DDP ranks): every call is a no-op."""
        self.enabled = enabled
        self.path = Path(directory) / "metrics.jsonl"
        self._tb = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(Path(directory) / "tensorboard"))
            except Exception:  # ImportError, or tensorboard's own import-time failures
                log.info("tensorboard not importable: scalars go to %s only", self.path)

    def log(self, step: int, scalars: dict[str, float], split: str = "train") -> None:
        if not self.enabled:
            return
        clean = {k: float(v) for k, v in scalars.items()}
        record = {"step": int(step), "split": split, "time": time.time()}
        record.update({k: (v if math.isfinite(v) else None) for k, v in clean.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path, split: str | None = "train") -> list[dict]:
    """The records of a metrics.jsonl (optionally one split only), in file order."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if split is None or rec.get("split") == split:
                out.append(rec)
    return out
