"""Keypoint extractors behind one contract (``Features``) and a registry by name."""

from kp_vo.features import classical as _classical  # noqa: F401  (registers "orb", "sift")
from kp_vo.features.base import (
    Extractor,
    Features,
    available_extractors,
    create_extractor,
    register_extractor,
)

__all__ = ["Extractor", "Features", "available_extractors", "create_extractor", "register_extractor"]
