"""``item_rng``, the per-item generator the training datasets draw their augmentations from (the
augmentations themselves, numpy only, are in ``kp_vo.datasets.augment``)."""

from __future__ import annotations

import numpy as np
import torch


def item_rng(seed: int | None, index: int) -> np.random.Generator:
    """The generator that augments one dataset item: ``seed`` None draws a fresh one from torch's RNG
    (seeded runs and resumes repeat, every epoch differs); an int gives item ``index`` the same one
    every time (fixed validation items)."""
    if seed is None:
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
    return np.random.default_rng([seed, int(index)])
