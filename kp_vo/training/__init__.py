"""Training: recipes (models + data + loss) run by one generic trainer (single process or DDP)."""

from kp_vo.training.recipe import Recipe, TrainConfig

__all__ = ["Recipe", "TrainConfig", "train", "TrainResult"]


def __getattr__(name):
    if name in ("train", "TrainResult"):
        from kp_vo.training import trainer
        return getattr(trainer, name)
    raise AttributeError(name)
