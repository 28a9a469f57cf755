"""The synthetic scenes by kind: ``make_scene(kind, seed)`` for "street" and "room"
(``kp_vo.datasets.scene``) and "random_room" (``kp_vo.datasets.random_room``), cached per seed."""

from __future__ import annotations

import functools
from pathlib import Path

from kp_vo.datasets.random_room import make_random_room
from kp_vo.datasets.scene import Scene, make_room, make_street
from kp_vo.errors import InvalidInputError

SCENE_KINDS = ("street", "room", "random_room")


@functools.lru_cache(maxsize=4)
def _cached_scene(kind: str, seed: int, texture_dir: str | None) -> Scene:
    if kind == "random_room":
        return make_random_room(seed, texture_dir)
    return make_street(seed, texture_dir) if kind == "street" else make_room(seed, texture_dir)


def make_scene(kind: str = "street", seed: int = 0, texture_dir: str | None = None) -> Scene:
    """The textured scene ``kind`` ("street" | "room" | "random_room"), deterministic from ``seed`` (cached; read-only).

    ``texture_dir``: a folder of photos (e.g. ../shared/data/photos) used on billboards/posters.
    """
    if kind not in SCENE_KINDS:
        raise InvalidInputError(f"unknown synthetic scene {kind!r}, expected one of {SCENE_KINDS}")
    if texture_dir is not None:
        if not Path(texture_dir).is_dir():
            raise InvalidInputError(f"texture_dir {texture_dir} is not a folder")
        texture_dir = str(Path(texture_dir).resolve())
    return _cached_scene(kind, int(seed), texture_dir)
