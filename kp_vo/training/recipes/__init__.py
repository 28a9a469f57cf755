"""The training recipes by name; each module exposes ``RECIPE`` (a class following
``kp_vo.training.recipe.Recipe``) and is imported only when asked for."""

from __future__ import annotations

import importlib

from kp_vo.errors import InvalidInputError

RECIPE_MODULES: dict[str, str] = {
    "keypointnet_homography": "kp_vo.training.recipes.keypointnet_homography",  # KP2D homography adaptation
    "keypointnet_distill": "kp_vo.training.recipes.keypointnet_distill",        # small KeypointNet from a teacher
    "kp3d": "kp_vo.training.recipes.kp3d",                                      # KP3D multi-view adaptation
    "depthnet_selfsup": "kp_vo.training.recipes.depthnet_selfsup",              # self-supervised DepthNet + PoseNet
    "viewsynth": "kp_vo.training.recipes.viewsynth",                            # ViewSynth depth features + VSN
    "object_keypoints": "kp_vo.training.recipes.object_keypoints",              # 3D-object KeypointNet
}


def available_recipes() -> list[str]:
    return sorted(RECIPE_MODULES)


def get_recipe(name: str) -> type:
    """The recipe class registered as ``name`` (imports its module now)."""
    if name not in RECIPE_MODULES:
        raise InvalidInputError(f"unknown training recipe {name!r}; available: {', '.join(available_recipes())}")
    module = importlib.import_module(RECIPE_MODULES[name])
    return module.RECIPE
