"""Rooms of random size and furnishing, one per seed: the training and held-out scenes of the
depth-feature (ViewSynth) models.

World frame as in ``scene``: z up, floor at z = 0, the room is the box [0, lx] x [0, ly] x [0, lz]
with lx in [5.5, 8.5] m, ly in [5.5, 7.5] m, lz in [2.4, 3.2] m. Furniture stands in a band within
``FURNITURE_BAND`` (1.3 m) of the walls -- cabinets, open shelves (boards between side panels), tables
on legs, chairs, stacks of boxes, sofas, corner pillars and wall-mounted shelves, each of random size,
position and texture -- so the centre stays free for the camera (``free_ellipse``). Every seed gives
another layout; the fixed room of ``scene`` ("room") is unaffected.
"""

from __future__ import annotations

import numpy as np

from kp_vo.datasets import textures as tx
from kp_vo.datasets.scene import Scene, SceneBuilder

SIZE_RANGE = ((5.5, 8.5), (5.5, 7.5), (2.4, 3.2))   # (lx, ly, lz) ranges, metres
FURNITURE_BAND = 1.3                                # furniture stays within this distance of the walls (m)
CAMERA_CLEARANCE = 1.1                              # camera ellipse keeps this distance from the band (m)


def room_size(seed: int) -> tuple[float, float, float]:
    """(lx, ly, lz) metres of the random room ``seed``."""
    rng = np.random.default_rng([seed, 3])
    return tuple(float(rng.uniform(lo, hi)) for lo, hi in SIZE_RANGE)


def free_ellipse(size) -> tuple[tuple[float, float], tuple[float, float]]:
    """Centre (x, y) and half-axes (m) of the floor ellipse a camera may move on: at least
    ``CAMERA_CLEARANCE`` from the furniture band (half-axes at least 0.3 m)."""
    lx, ly = size[0], size[1]
    margin = FURNITURE_BAND + CAMERA_CLEARANCE
    return (lx / 2, ly / 2), (max(0.3, lx / 2 - margin), max(0.3, ly / 2 - margin))


class _Furnisher:
    """Places pieces of furniture with a SceneBuilder: every method builds one piece standing at
    floor point ``(x, y)`` (the centre of its footprint), facing heading ``yaw`` (rad)."""

    def __init__(self, builder: SceneBuilder, rng: np.random.Generator, textures: list[int]):
        self.b, self.rng, self.textures = builder, rng, textures

    def tex(self) -> int:
        return self.textures[int(self.rng.integers(len(self.textures)))]

    def _at(self, x, y, yaw, forward: float, left: float, z: float = 0.0) -> np.ndarray:
        """World point ``forward`` / ``left`` metres from (x, y) in the piece's frame, at height z."""
        c, s = np.cos(yaw), np.sin(yaw)
        return np.array([x + c * forward - s * left, y + s * forward + c * left, z])

    def cabinet(self, x, y, yaw, length, depth):
        self.b.add_box([x, y, 0], (depth, length, self.rng.uniform(0.5, 1.3)), yaw, self.tex())

    def shelf(self, x, y, yaw, length, depth):
        """Open shelf: back panel, two side panels and 3-5 boards (depth edges at every board)."""
        height, t = self.rng.uniform(1.2, 2.2), 0.03
        tex = self.tex()
        self.b.add_box(self._at(x, y, yaw, -depth / 2 + t / 2, 0), (t, length, height), yaw, tex)
        for side in (-1, 1):
            self.b.add_box(self._at(x, y, yaw, 0, side * (length / 2 - t / 2)), (depth, t, height), yaw, tex)
        for z in np.linspace(0.05, height - t, int(self.rng.integers(3, 6))):
            self.b.add_box(self._at(x, y, yaw, 0, 0, z), (depth, length - 2 * t, t), yaw, tex, skip=())

    def table(self, x, y, yaw, length, depth):
        height, leg, top = self.rng.uniform(0.65, 0.8), 0.05, 0.04
        tex = self.tex()
        self.b.add_box([x, y, height - top], (depth, length, top), yaw, tex, skip=())
        for f in (-1, 1):
            for s in (-1, 1):
                p = self._at(x, y, yaw, f * (depth / 2 - leg), s * (length / 2 - leg))
                self.b.add_box(p, (leg, leg, height - top), yaw, tex, skip=("bottom", "top"))

    def chair(self, x, y, yaw, length, depth):
        seat, size = self.rng.uniform(0.42, 0.5), min(length, depth, 0.5)
        tex = self.tex()
        self.b.add_box([x, y, 0], (size, size, seat), yaw, tex)
        self.b.add_box(self._at(x, y, yaw, -size / 2 + 0.03, 0, seat), (0.06, size, self.rng.uniform(0.35, 0.5)),
                       yaw, tex)

    def boxes(self, x, y, yaw, length, depth):
        """A stack of two or three boxes, each smaller than the one below and shifted on it."""
        z, l, d, f, s = 0.0, length, depth, 0.0, 0.0
        for _ in range(int(self.rng.integers(2, 4))):
            h = self.rng.uniform(0.25, 0.6)
            self.b.add_box(self._at(x, y, yaw, f, s, z), (d, l, h), yaw, self.tex())
            l_up, d_up = l * self.rng.uniform(0.5, 0.85), d * self.rng.uniform(0.5, 0.85)
            f += self.rng.uniform(-1, 1) * (d - d_up) / 2
            s += self.rng.uniform(-1, 1) * (l - l_up) / 2
            z, l, d = z + h, l_up, d_up

    def sofa(self, x, y, yaw, length, depth):
        tex = self.tex()
        seat, arm = self.rng.uniform(0.4, 0.5), 0.2
        self.b.add_box([x, y, 0], (depth, length, seat), yaw, tex)
        self.b.add_box(self._at(x, y, yaw, -depth / 2 + 0.1, 0, seat), (0.2, length, self.rng.uniform(0.3, 0.45)), yaw, tex)
        for side in (-1, 1):
            self.b.add_box(self._at(x, y, yaw, 0, side * (length / 2 - arm / 2), seat), (depth, arm, 0.2), yaw, tex)

    def wall_shelf(self, x, y, yaw, length, depth):
        """A board (or cupboard) hung on the wall 1.2-2.0 m above the floor."""
        z = self.rng.uniform(1.2, 2.0)
        self.b.add_box(self._at(x, y, yaw, -depth / 2 + 0.15, 0, z), (0.3, length, self.rng.uniform(0.03, 0.5)),
                       yaw, self.tex(), skip=())

    PIECES = ("cabinet", "shelf", "table", "chair", "boxes", "sofa", "wall_shelf")


def make_random_room(seed: int, texture_dir: str | None = None) -> Scene:
    """The random room ``seed`` (see the module docstring). Scene.extent = (lx, ly, lz)."""
    lx, ly, lz = room_size(seed)
    rng = np.random.default_rng([seed, 4])
    b = SceneBuilder(light_dir=tuple(rng.uniform([-0.5, -0.5, 0.6], [0.5, 0.5, 0.9])), ambient=rng.uniform(0.45, 0.65))
    floor = b.add_texture(tx.paving_texture(rng))
    ceiling = b.add_texture(tx.generic_texture(rng, shapes=40))
    walls = [b.add_texture(tx.generic_texture(rng, shapes=int(rng.integers(80, 200)))) for _ in range(4)]
    furniture = [b.add_texture(tx.generic_texture(rng, shapes=int(rng.integers(60, 180)))) for _ in range(6)]
    posters = [b.add_texture(tx.generic_texture(rng, shapes=250)) for _ in range(3)]
    if texture_dir:
        posters += [b.add_texture(t) for t in tx.load_photo_textures(texture_dir, rng, 6)]

    b.add_quad([0, ly, 0], [lx, 0, 0], [0, -ly, 0], floor, texel=rng.uniform(0.004, 0.008))
    b.add_quad([0, 0, lz], [lx, 0, 0], [0, ly, 0], ceiling, texel=0.008)
    # Walls run to the right as seen from inside; "inward" is the room side.
    corners = [((lx, 0), (0, 0)), ((0, 0), (0, ly)), ((0, ly), (lx, ly)), ((lx, ly), (lx, 0))]
    furnish = _Furnisher(b, rng, furniture)
    for k, ((ax, ay), (bx, by)) in enumerate(corners):
        b.add_quad([ax, ay, lz], [bx - ax, by - ay, 0], [0, 0, -lz], walls[k])
        along = np.array([bx - ax, by - ay], np.float64)
        length = float(np.linalg.norm(along))
        along /= length
        inward = np.array([along[1], -along[0]])
        facing = float(np.arctan2(inward[1], inward[0]))   # pieces face into the room
        # Walk along the wall, leaving the corners to the pillars and random gaps between pieces.
        a = rng.uniform(0.5, 1.0)
        while True:
            width = rng.uniform(0.5, 2.0)
            if a + width > length - 0.5:
                break
            depth = rng.uniform(0.35, FURNITURE_BAND - 0.4)
            turn = rng.uniform(-0.1, 0.1)          # a turned piece keeps its corners off the wall
            gap_to_wall = rng.uniform(0.02, 0.2) + width / 2 * abs(np.sin(turn))
            centre = np.array([ax, ay]) + along * (a + width / 2) + inward * (gap_to_wall + depth / 2)
            kind = _Furnisher.PIECES[int(rng.integers(len(_Furnisher.PIECES)))]
            getattr(furnish, kind)(centre[0], centre[1], facing + turn, width, depth)
            a += width + rng.uniform(0.1, 1.2)
        if rng.random() < 0.5:   # a pillar in the corner where this wall starts
            side = rng.uniform(0.25, 0.5)
            p = np.array([ax, ay]) + (along + inward) * side / 2
            b.add_box([p[0], p[1], 0], (side, side, lz), facing, walls[(k + 1) % 4], skip=("bottom", "top"))
        for _ in range(int(rng.integers(1, 4))):   # posters 1 cm off the wall, possibly behind furniture
            w, h = rng.uniform(0.5, 1.2), rng.uniform(0.4, 0.9)
            a0 = rng.uniform(0.3, max(0.4, length - w - 0.3))
            zc = rng.uniform(1.2, min(2.0, lz - 0.6))
            start = np.array([ax, ay, zc + h / 2]) + np.r_[along * a0 + inward * 0.01, 0]
            b.add_quad(start, np.r_[along * w, 0], [0, 0, -h], posters[int(rng.integers(len(posters)))])
    return b.build("random_room", seed, sky_top=(40, 40, 40), sky_bottom=(40, 40, 40), extent=(lx, ly, lz))
