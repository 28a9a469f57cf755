"""Synthetic 3D scenes made of textured planar rectangles ("quads"), deterministic from a seed.

World frame of both scenes (``kp_vo.datasets.scenes.make_scene`` builds them and the random rooms): z up, ground (floor) at z = 0.
- "street": x forward along the road at its start, y left. A 10 m wide road (centreline
  ``road_centerline``) runs from s = -10 m to s = 170 m with a smooth left turn between
  s = 50 m and s = 85 m; building fronts on both sides, parked cars, poles, billboards.
- "room": the box [0, 6] x [0, 5] x [0, 3] m with furniture along the walls and posters.

A quad is the rectangle {origin + a * axis_u + b * axis_v : 0 <= a <= size_u, 0 <= b <= size_v}
(axis_u, axis_v orthonormal). Its texture coordinate in texels is
((a + offset_u) / texel_u, (b + offset_v) / texel_v), wrapping at the texture size, so
``texel`` is the metric size of one texel (the texel density of the surface).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np

from kp_vo.datasets import textures as tx

logger = logging.getLogger(__name__)

ROAD_WIDTH = 10.0          # m
ROAD_START, ROAD_END = -10.0, 170.0   # arc length range of the road, m
TURN_START, TURN_END = 50.0, 85.0     # arc length range of the turn, m
TURN_ANGLE_DEG = 40.0      # total (left) heading change of the road
ROOM_SIZE = (6.0, 5.0, 3.0)


@dataclass
class Scene:
    """Quads (Q of them) with per-quad texture and shading; see the module docstring.

    origins, axes_u, axes_v: (Q, 3) float64 world; sizes, texels, offsets: (Q, 2) float64 metres;
    texture_ids: (Q,) int64 into ``textures`` (list of (S, S, 3) uint8 RGB, all the same S);
    shades: (Q,) float32 Lambertian factor; sky_top / sky_bottom: (3,) background colours;
    extent: (3,) room size (lx, ly, lz) in metres for the rooms, None for the street.
    Treat as read-only (``make_scene`` caches scenes).
    """

    kind: str
    seed: int
    origins: np.ndarray
    axes_u: np.ndarray
    axes_v: np.ndarray
    sizes: np.ndarray
    texels: np.ndarray
    offsets: np.ndarray
    texture_ids: np.ndarray
    shades: np.ndarray
    textures: list
    sky_top: np.ndarray
    sky_bottom: np.ndarray
    extent: np.ndarray | None = None
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def normals(self) -> np.ndarray:
        """(Q, 3) unit normals axis_u x axis_v."""
        return np.cross(self.axes_u, self.axes_v)

    def __len__(self) -> int:
        return len(self.origins)


class SceneBuilder:
    """Collects quads and textures, then ``build()``s a Scene."""

    def __init__(self, light_dir=(0.4, 0.25, 0.88), ambient: float = 0.5):
        self.quads: list[tuple] = []
        self.textures: list[np.ndarray] = []
        light = np.asarray(light_dir, np.float64)
        self.light = light / np.linalg.norm(light)
        self.ambient = ambient

    def add_texture(self, texture: np.ndarray) -> int:
        self.textures.append(texture)
        return len(self.textures) - 1

    def add_quad(self, origin, edge_u, edge_v, texture: int, texel=None, offset=(0.0, 0.0)) -> None:
        """Rectangle with corner ``origin`` and (orthogonal) edge vectors; ``texel=None`` fits the texture once."""
        origin, edge_u, edge_v = (np.asarray(v, np.float64) for v in (origin, edge_u, edge_v))
        su, sv = float(np.linalg.norm(edge_u)), float(np.linalg.norm(edge_v))
        if texel is None:
            size = tx.TEXTURE_SIZE
            texel = (su / size, sv / size)
        elif np.isscalar(texel):
            texel = (float(texel), float(texel))
        self.quads.append((origin, edge_u / su, edge_v / sv, (su, sv), tuple(texel), tuple(offset), texture))

    def add_box(self, center, size, yaw: float, textures, texel=None, skip=("bottom",)) -> None:
        """Box of ``size`` (length along heading, width, height) standing on ``center`` (bottom centre).

        ``textures``: one texture id or a dict face -> id with faces front/back/left/right/top.
        """
        c = np.asarray(center, np.float64)
        length, width, height = size
        f = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        l = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        z = np.array([0.0, 0.0, 1.0])
        face_names = ("front", "back", "left", "right", "top", "bottom")
        tex = textures if isinstance(textures, dict) else dict.fromkeys(face_names, textures)
        base = c - f * length / 2 - l * width / 2
        faces = {
            # name: (origin, edge_u, edge_v); edge_v points up on side faces so textures stand upright
            # side faces: edge_u runs to the viewer's right as seen from outside the box
            "front": (base + f * length, l * width, z * height),
            "back": (base + l * width, -l * width, z * height),
            "right": (base, f * length, z * height),
            "left": (base + l * width + f * length, -f * length, z * height),
            "top": (base + z * height, f * length, l * width),
            "bottom": (base, l * width, f * length),
        }
        for name, (o, eu, ev) in faces.items():
            if name in skip:
                continue
            # Flip v so that side textures are upright in the image (texture row 0 at the top edge).
            if name in ("front", "back", "left", "right"):
                o, ev = o + ev, -ev
            self.add_quad(o, eu, ev, tex.get(name, tex.get("front")), texel)

    def build(self, kind: str, seed: int, sky_top, sky_bottom, extent=None) -> Scene:
        q = self.quads
        axes_u = np.array([e[1] for e in q])
        axes_v = np.array([e[2] for e in q])
        normals = np.cross(axes_u, axes_v)
        shades = (self.ambient + (1 - self.ambient) * np.abs(normals @ self.light)).astype(np.float32)
        return Scene(kind, seed, np.array([e[0] for e in q]), axes_u, axes_v,
                     np.array([e[3] for e in q], np.float64), np.array([e[4] for e in q], np.float64),
                     np.array([e[5] for e in q], np.float64), np.array([e[6] for e in q], np.int64), shades,
                     list(self.textures), np.asarray(sky_top, np.float32), np.asarray(sky_bottom, np.float32),
                     None if extent is None else np.asarray(extent, np.float64))


# ----------------------------------------------------------------------------- street


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


@functools.lru_cache(maxsize=1)
def _centerline_table(step: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = np.arange(ROAD_START - 20.0, ROAD_END + 40.0 + step, step)
    heading = np.deg2rad(TURN_ANGLE_DEG) * _smoothstep((s - TURN_START) / (TURN_END - TURN_START))
    # Integrate the unit tangent (trapezoid rule) from s = 0 at the origin.
    dx, dy = np.cos(heading), np.sin(heading)
    x = np.concatenate([[0.0], np.cumsum((dx[1:] + dx[:-1]) / 2 * step)])
    y = np.concatenate([[0.0], np.cumsum((dy[1:] + dy[:-1]) / 2 * step)])
    i0 = int(np.argmin(np.abs(s)))
    return s, x - x[i0], y - y[i0], heading


def road_centerline(s) -> tuple[np.ndarray, np.ndarray]:
    """Road centreline at arc length(s) ``s`` (m): ((..., 2) xy position on the ground, (...,) heading rad)."""
    ts, x, y, h = _centerline_table()
    s = np.asarray(s, np.float64)
    return np.stack([np.interp(s, ts, x), np.interp(s, ts, y)], -1), np.interp(s, ts, h)


def _road_point(s: float, lateral: float, height: float = 0.0) -> tuple[np.ndarray, float]:
    """World point at arc length s, ``lateral`` metres left of the centreline; and the heading."""
    p, h = road_centerline(s)
    left = np.array([-np.sin(h), np.cos(h)])
    xy = p + lateral * left
    return np.array([xy[0], xy[1], height]), float(h)


def make_street(seed: int, texture_dir: str | None) -> Scene:
    rng = np.random.default_rng([seed, 1])
    b = SceneBuilder()
    road = b.add_texture(tx.road_texture(rng))
    paving = b.add_texture(tx.paving_texture(rng))
    facades = [b.add_texture(tx.facade_texture(rng)) for _ in range(14)]
    walls = [b.add_texture(tx.generic_texture(rng, shapes=60)) for _ in range(3)]
    cars = [b.add_texture(tx.car_texture(rng)) for _ in range(5)]
    poles = [b.add_texture(tx.pole_texture(rng)) for _ in range(2)]
    posters = [b.add_texture(tx.generic_texture(rng, shapes=200)) for _ in range(3)]
    if texture_dir:
        posters += [b.add_texture(t) for t in tx.load_photo_textures(texture_dir, rng, 6)]

    # Ground: one large paved plane under everything; the road lies 1 cm above it.
    (x0, y0), _ = road_centerline(ROAD_START)
    (x1, y1), _ = road_centerline(ROAD_END)
    lo = np.minimum([x0, y0], [x1, y1]) - 60.0
    hi = np.maximum([x0, y0], [x1, y1]) + 60.0
    b.add_quad([lo[0], lo[1], 0.0], [hi[0] - lo[0], 0, 0], [0, hi[1] - lo[1], 0], paving, texel=0.02)

    seg = 4.0
    for s in np.arange(ROAD_START, ROAD_END, seg):
        o, h = _road_point(s, -ROAD_WIDTH / 2, 0.01)
        fwd = np.array([np.cos(h), np.sin(h), 0.0])
        left = np.array([-np.sin(h), np.cos(h), 0.0])
        # edge_v runs right -> left across the road; overlap segments slightly to close gaps in the turn.
        b.add_quad(o - 0.05 * fwd, fwd * (seg + 0.1), left * ROAD_WIDTH, road,
                   texel=ROAD_WIDTH / tx.TEXTURE_SIZE, offset=(s - 0.05 - ROAD_START, 0.0))

    for side in (1.0, -1.0):
        s = ROAD_START + rng.uniform(0, 5)
        k = 0
        while s < ROAD_END:
            width = rng.uniform(7.0, 16.0)
            setback = rng.uniform(8.0, 12.0)
            height = rng.uniform(6.0, 18.0)
            depth = 10.0
            c, h = _road_point(s + width / 2, side * (setback + depth / 2))
            # The face towards the road is "left" for buildings on the right (side -1) and "right" otherwise.
            road_face = "left" if side < 0 else "right"
            other = walls[int(rng.integers(len(walls)))]
            b.add_box(c, (width, depth, height), h,
                      {road_face: facades[int(rng.integers(len(facades)))], "front": other, "back": other},
                      skip=("bottom", "top", "left" if side > 0 else "right"))
            # Side walls use the texture tiled at 2 cm instead of stretched: replace their texel.
            for q in range(len(b.quads) - 3, len(b.quads)):
                o, u, v, sz, tex, off, tid = b.quads[q]
                if tid == other:
                    b.quads[q] = (o, u, v, sz, (0.02, 0.02), off, tid)
            if k % 3 == 1:  # billboard 5 cm in front of the facade
                bw, bh = min(width * 0.6, 5.0), 3.0
                fwd = np.array([np.cos(h), np.sin(h), 0.0])
                p, _ = _road_point(s + width / 2, side * (setback - 0.05))
                start = p - fwd * bw / 2 * side + np.array([0, 0, 2.5 + bh])
                b.add_quad(start, fwd * bw * side, np.array([0, 0, -bh]), posters[int(rng.integers(len(posters)))])
            s += width + rng.uniform(0.0, 4.0)
            k += 1

        s = ROAD_START + rng.uniform(0, 8)
        while s < ROAD_END:
            if rng.random() < 0.7:
                c, h = _road_point(s, side * 4.0)
                b.add_box(c, (4.3, 1.8, 1.5), h + rng.normal(0, 0.03), cars[int(rng.integers(len(cars)))])
            s += 4.3 + rng.uniform(1.0, 6.0)

        for s in np.arange(ROAD_START + rng.uniform(0, 10), ROAD_END, 15.0):
            c, h = _road_point(s, side * 5.8)
            b.add_box(c, (0.15, 0.15, 5.0), h, poles[int(rng.integers(len(poles)))], texel=0.01,
                      skip=("bottom", "top"))
    scene = b.build("street", seed, sky_top=(120, 160, 215), sky_bottom=(200, 215, 230))
    logger.debug("street scene seed %d: %d quads, %d textures", seed, len(scene), len(scene.textures))
    return scene


# ----------------------------------------------------------------------------- room


def make_room(seed: int, texture_dir: str | None) -> Scene:
    rng = np.random.default_rng([seed, 2])
    b = SceneBuilder(light_dir=(0.3, 0.5, 0.8), ambient=0.55)
    lx, ly, lz = ROOM_SIZE
    floor = b.add_texture(tx.paving_texture(rng))
    ceiling = b.add_texture(tx.generic_texture(rng, shapes=40))
    walls = [b.add_texture(tx.generic_texture(rng, shapes=150)) for _ in range(4)]
    furniture = [b.add_texture(tx.generic_texture(rng, shapes=120)) for _ in range(6)]
    posters = [b.add_texture(tx.generic_texture(rng, shapes=250)) for _ in range(4)]
    if texture_dir:
        posters = [b.add_texture(t) for t in tx.load_photo_textures(texture_dir, rng, 8)] + posters

    b.add_quad([0, ly, 0], [lx, 0, 0], [0, -ly, 0], floor, texel=0.006)  # upright seen from above
    b.add_quad([0, 0, lz], [lx, 0, 0], [0, ly, 0], ceiling, texel=0.008)
    # Walls, edge_v pointing down so textures stand upright; each wall texture stretched to fit.
    # Each wall runs to the right as seen from inside the room.
    corners = [((lx, 0), (0, 0)), ((0, 0), (0, ly)), ((0, ly), (lx, ly)), ((lx, ly), (lx, 0))]
    for k, ((ax, ay), (bx, by)) in enumerate(corners):
        b.add_quad([ax, ay, lz], [bx - ax, by - ay, 0], [0, 0, -lz], walls[k])

    # Furniture along the walls (within 1.3 m of them), leaving the centre free for the camera.
    pieces = [  # (x, y, yaw, length, width, height)
        (0.45, 1.2, np.pi / 2, 1.6, 0.4, 2.0),    # shelf on the x = 0 wall
        (0.5, 3.6, np.pi / 2, 1.0, 0.5, 0.9),     # cabinet
        (2.2, 0.5, 0.0, 1.4, 0.8, 0.75),          # table on the y = 0 wall
        (4.4, 0.35, 0.0, 0.6, 0.5, 0.5),          # boxes
        (4.4, 0.35, 0.3, 0.45, 0.4, 1.0),
        (5.5, 2.5, np.pi / 2, 2.0, 0.9, 0.8),     # sofa on the x = 6 wall
        (3.0, 4.55, 0.0, 1.8, 0.5, 1.2),          # sideboard on the y = 5 wall
        (1.2, 4.5, 0.2, 0.6, 0.6, 0.6),
        (5.3, 4.4, -0.4, 0.7, 0.7, 1.6),          # wardrobe-ish block in a corner
    ]
    for x, y, yaw, length, width, height in pieces:
        x += rng.uniform(-0.1, 0.1)
        y += rng.uniform(-0.1, 0.1)
        b.add_box([x, y, 0.0], (length, width, height), yaw, furniture[int(rng.integers(len(furniture)))])

    # Posters 1 cm in front of the walls, at eye height, not behind furniture where possible.
    spots = [(0, 2.6, 1.4), (1, 2.5, 1.6), (1, 3.7, 1.6), (2, 4.6, 1.6), (2, 2.0, 1.5), (3, 2.4, 1.5), (0, 4.9, 1.5)]
    for wall, a, zc in spots:
        w, h = rng.uniform(0.6, 1.1), rng.uniform(0.5, 0.9)
        (ax, ay), (bx, by) = corners[wall]
        d = np.array([bx - ax, by - ay, 0.0])
        d /= np.linalg.norm(d)
        inward = np.array([d[1], -d[0], 0.0])
        start = np.array([ax, ay, zc + h / 2]) + d * (a - w / 2) + inward * 0.01
        b.add_quad(start, d * w, [0, 0, -h], posters[int(rng.integers(len(posters)))])
    return b.build("room", seed, sky_top=(40, 40, 40), sky_bottom=(40, 40, 40), extent=ROOM_SIZE)
