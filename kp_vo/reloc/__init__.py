"""Relocalization: the 3D keypoint repository (build, save, load, index) and the localizer.

See kp_vo/reloc/README.md. Main entry points:
    Repository, build_repository          (kp_vo.reloc.repository)
    Localizer, LocalizerConfig            (kp_vo.reloc.localizer)
    DescriptorIndex, IndexConfig          (kp_vo.reloc.index)
    evaluate_localizer                    (kp_vo.reloc.evaluation)
"""

from kp_vo.reloc.index import DescriptorIndex, IndexConfig
from kp_vo.reloc.localizer import LocalizationResult, Localizer, LocalizerConfig
from kp_vo.reloc.repository import Repository, build_repository

__all__ = ["DescriptorIndex", "IndexConfig", "LocalizationResult", "Localizer", "LocalizerConfig", "Repository",
           "build_repository"]
