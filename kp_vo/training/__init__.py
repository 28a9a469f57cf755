"""Training: recipes (models + data + loss) run by one generic trainer (single process or DDP).

Nothing here imports torch until a name below is used, so the recipe registry
(``kp_vo.training.recipes``) can list the recipes for ``kp-vo train --help`` cheaply.
"""

__all__ = ["Recipe", "TrainConfig", "train", "TrainResult"]


def __getattr__(name):
    if name in ("Recipe", "TrainConfig"):
        from kp_vo.training import recipe
        return getattr(recipe, name)
    if name in ("train", "TrainResult"):
        from kp_vo.training import trainer
        return getattr(trainer, name)
    raise AttributeError(name)
