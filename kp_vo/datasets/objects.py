"""Synthetic 3D objects for the 3D-object KeypointNet: procedural "chairs" made of textured boxes,
ray-cast in numpy to RGB images, silhouette masks and depth, with known cameras and relative poses.

Object frame: z up, the chair faces +x (its back is at -x), normalised so that its longest dimension
spans [-1, 1]. Cameras look at the object from ``distance`` with zero roll, random azimuth and an
elevation above the ground, plus a small random shift (as in the KeypointNet paper's ShapeNet renders).
Camera frame: x right, y down, z forward; pixel centres at integer coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kp_vo.errors import InvalidInputError

BACKGROUND = 0.5


@dataclass(frozen=True)
class BoxObject:
    """Axis-aligned boxes in the object frame: lo, hi (M, 3); colours (M, 6, 3) per face in [0, 1];
    checker frequency (M,) in cycles per unit length."""

    lo: np.ndarray
    hi: np.ndarray
    colours: np.ndarray
    frequency: np.ndarray


def make_chair(seed: int) -> BoxObject:
    """A random chair (seat, back, four legs) with random proportions and face colours."""
    rng = np.random.default_rng([seed, 11])
    w, d = rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2)               # seat width (y), depth (x)
    h_leg, t_seat = rng.uniform(0.8, 1.2), rng.uniform(0.1, 0.2)
    h_back, t_back, leg = rng.uniform(0.8, 1.3), rng.uniform(0.08, 0.15), rng.uniform(0.08, 0.14)
    boxes = [((-d / 2, -w / 2, h_leg), (d / 2, w / 2, h_leg + t_seat)),                       # seat
             ((-d / 2, -w / 2, h_leg + t_seat), (-d / 2 + t_back, w / 2, h_leg + t_seat + h_back))]  # back at -x
    for sx in (-1, 1):
        for sy in (-1, 1):
            x0 = sx * d / 2 - (leg if sx > 0 else 0)
            y0 = sy * w / 2 - (leg if sy > 0 else 0)
            boxes.append(((x0, y0, 0.0), (x0 + leg, y0 + leg, h_leg)))
    lo, hi = np.array([b[0] for b in boxes], float), np.array([b[1] for b in boxes], float)
    centre = (lo.min(0) + hi.max(0)) / 2
    scale = 2.0 / (hi.max(0) - lo.min(0)).max()
    lo, hi = (lo - centre) * scale, (hi - centre) * scale
    colours = rng.uniform(0.15, 0.95, (len(boxes), 6, 3))
    return BoxObject(lo, hi, colours, rng.uniform(2.0, 6.0, len(boxes)))


def look_at_pose(azimuth: float, elevation: float, distance: float, shift: np.ndarray | None = None) -> np.ndarray:
    """T_obj_cam (4, 4): camera on a sphere around the origin looking at it (plus ``shift`` (3,) of
    the look-at point and the camera), zero roll."""
    shift = np.zeros(3) if shift is None else np.asarray(shift, float)
    c = distance * np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth),
                             np.sin(elevation)]) + shift
    z = (shift - c) / np.linalg.norm(shift - c)
    x = np.cross(z, [0.0, 0.0, 1.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], 1)
    T[:3, 3] = c
    return T


def render_object(obj: BoxObject, T_obj_cam: np.ndarray, K: np.ndarray, height: int, width: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ray-cast ``obj``: returns image (H, W, 3) float32 in [0, 1], mask (H, W) bool, depth (H, W)
    float32 camera z (0 = background). Faces: checker texture times Lambert shading from above."""
    if height < 8 or width < 8:
        raise InvalidInputError(f"object render size too small: {height}x{width}")
    v, u = np.mgrid[0:height, 0:width].astype(float)
    rays_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1).reshape(-1, 3)
    R, o = T_obj_cam[:3, :3], T_obj_cam[:3, 3]
    d = rays_cam @ R.T                                                     # (P, 3) object frame, cam z = 1
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    t0 = (obj.lo[None] - o[None, None]) / d[:, None]                       # (P, M, 3)
    t1 = (obj.hi[None] - o[None, None]) / d[:, None]
    tnear, tfar = np.minimum(t0, t1), np.maximum(t0, t1)
    t_in, axis = tnear.max(-1), tnear.argmax(-1)                           # (P, M)
    hit = (t_in <= tfar.min(-1)) & (t_in > 1e-6)
    t_hit = np.where(hit, t_in, np.inf)
    box = t_hit.argmin(-1)
    depth = t_hit[np.arange(len(d)), box]
    mask = np.isfinite(depth)
    ax = axis[np.arange(len(d)), box]
    side = (d[np.arange(len(d)), ax] < 0).astype(int)                     # ray going -axis hits the + face
    face = 2 * ax + side
    p = o[None] + d * np.where(mask, depth, 0)[:, None]
    normal = np.zeros_like(p)
    normal[np.arange(len(d)), ax] = np.where(side == 1, 1.0, -1.0)
    shade = 0.45 + 0.55 * np.abs(normal @ np.array([0.3, 0.2, 0.93]))
    f = obj.frequency[box][:, None]
    others = np.stack([p[np.arange(len(d)), (ax + 1) % 3], p[np.arange(len(d)), (ax + 2) % 3]], -1)
    checker = (np.floor(others[:, 0] * f[:, 0]) + np.floor(others[:, 1] * f[:, 0])) % 2
    colour = obj.colours[box, face] * (0.7 + 0.3 * checker)[:, None] * shade[:, None]
    image = np.where(mask[:, None], colour, BACKGROUND)
    depth = np.where(mask, depth, 0.0)
    return (image.reshape(height, width, 3).astype(np.float32), mask.reshape(height, width),
            depth.reshape(height, width).astype(np.float32))


def object_camera(height: int, width: int, distance: float) -> np.ndarray:
    """K (3, 3) such that an object of radius ~1.2 at ``distance`` fills most of the image."""
    f = 0.5 * min(height, width) * distance / 1.6
    return np.array([[f, 0, (width - 1) / 2.0], [0, f, (height - 1) / 2.0], [0, 0, 1.0]])


def project_object_points(points_obj: np.ndarray, T_obj_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(M, 3) object-frame points -> (M, 2) pixels."""
    T = np.linalg.inv(T_obj_cam)
    pc = points_obj @ T[:3, :3].T + T[:3, 3]
    return (pc[:, :2] / pc[:, 2:]) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]


def random_view(rng: np.random.Generator, distance: float, shift_std: float = 0.05) -> np.ndarray:
    """T_obj_cam of a random view: azimuth in [0, 2 pi), elevation in [10, 50] deg, small shift."""
    return look_at_pose(rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(10, 50)), distance,
                        rng.normal(0, shift_std, 3))
