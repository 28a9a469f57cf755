"""The trained models shipped with kp_vo (``models/`` of the repository, ``share/kp_vo/models`` once
installed), found by name so that ``extractor: {name: keypointnet}`` works without a model path.

Search order: ``$KP_VO_MODELS_DIR``; the ``models/`` folder beside the package (a source checkout or
an editable install); ``<sys.prefix>/share/kp_vo/models`` (pip); the ament index share directory of
``kp_vo`` (colcon).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kp_vo.errors import ModelFileError

SHIPPED_MODELS = {"keypointnet": "keypointnet_kp2d.onnx", "viewsynth": "viewsynth.onnx", "depthnet": "depthnet.onnx"}


def model_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("KP_VO_MODELS_DIR"):
        dirs.append(Path(os.environ["KP_VO_MODELS_DIR"]))
    dirs.append(Path(__file__).resolve().parents[2] / "models")
    dirs.append(Path(sys.prefix) / "share" / "kp_vo" / "models")
    try:
        from ament_index_python.packages import get_package_share_directory
        dirs.append(Path(get_package_share_directory("kp_vo")) / "models")
    except Exception:                      # no ROS, or kp_vo not in the ament index
        pass
    return dirs


def shipped_model(name: str) -> Path:
    """Path of the shipped model for extractor ``name``; ModelFileError saying where it looked."""
    if name not in SHIPPED_MODELS:
        raise ModelFileError(f"no model is shipped for {name!r}; give model_path")
    dirs = model_dirs()
    for folder in dirs:
        path = folder / SHIPPED_MODELS[name]
        if path.is_file():
            return path
    raise ModelFileError(f"shipped model {SHIPPED_MODELS[name]} not found in {', '.join(map(str, dirs))}; "
                         "give model_path")
