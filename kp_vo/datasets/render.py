"""Vectorised numpy ray casting of a quad ``Scene``: RGB + exact depth for a pinhole camera.

Per frame:
1. quads are moved into the camera frame; quads wholly behind the near plane or outside the
   view frustum are dropped; the rest are clipped against the near plane and projected to get
   a pixel bounding box;
2. per quad, the rays of the pixels in its box are intersected with its plane (depth
   z = d / (n . r) for the ray r = ((u - cx) / fx, (v - cy) / fy, 1)), the hit is kept when it
   lies inside the rectangle and is nearer than the depth buffer (float32 z-buffer);
3. depth of the winning quad is recomputed per pixel in float64 (exact ray-plane depth);
4. texture coordinates are looked up with trilinear mipmapping: the mip level follows the
   texel footprint of a pixel (distance and obliquity), two bilinear ``cv2.remap`` lookups
   into one atlas holding every mip level of every texture (with a 1-texel wrap border so
   bilinear filtering tiles), blended by the fractional level;
5. Lambertian shade per quad; sky gradient (depth 0) where no quad is hit.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from kp_vo.datasets.scene import Scene
from kp_vo.errors import InvalidInputError
from kp_vo.types import CameraIntrinsics

logger = logging.getLogger(__name__)

NEAR = 0.05  # m, near clipping distance
MIN_MIP_SIZE = 8


class TextureAtlas:
    """All mip levels of all (S, S, 3) textures of a scene in one uint8 image.

    Level l of texture k (size S >> l) lies at ``x0[k, l] + 1, y0[k, l] + 1`` with a one-texel
    border copied from the opposite edge (wrap), so bilinear lookups at the edge tile correctly.
    """

    def __init__(self, textures: list[np.ndarray], per_row: int = 16):
        size = textures[0].shape[0]
        if any(t.shape != (size, size, 3) or t.dtype != np.uint8 for t in textures):
            raise InvalidInputError("scene textures must all be (S, S, 3) uint8 of one size S")
        levels = 1
        while (size >> levels) >= MIN_MIP_SIZE:
            levels += 1
        self.size, self.levels = size, levels
        # Cell layout: level 0 on top, levels 1.. side by side below it.
        cell_w = max(size + 2, sum((size >> l) + 2 for l in range(1, levels)))
        cell_h = size + 2 + (size >> 1) + 2
        rows = (len(textures) + per_row - 1) // per_row
        cols = min(per_row, len(textures))
        self.image = np.zeros((rows * cell_h, cols * cell_w, 3), np.uint8)
        self.x0 = np.zeros((len(textures), levels), np.float32)
        self.y0 = np.zeros((len(textures), levels), np.float32)
        for k, tex in enumerate(textures):
            cx, cy = (k % per_row) * cell_w, (k // per_row) * cell_h
            level_img = tex
            x = cx
            for l in range(levels):
                if l > 0:
                    level_img = cv2.resize(level_img, (level_img.shape[1] // 2, level_img.shape[0] // 2),
                                           interpolation=cv2.INTER_AREA)
                ox, oy = (cx, cy) if l == 0 else (x, cy + size + 2)
                if l > 0:
                    x += (size >> l) + 2
                n = level_img.shape[0]
                self.image[oy:oy + n + 2, ox:ox + n + 2] = np.pad(level_img, ((1, 1), (1, 1), (0, 0)), mode="wrap")
                self.x0[k, l], self.y0[k, l] = ox + 1, oy + 1
        if max(self.image.shape[:2]) >= 32767:
            raise InvalidInputError(f"texture atlas too large ({self.image.shape[1]}x{self.image.shape[0]})")


def atlas_of(scene: Scene) -> TextureAtlas:
    if "atlas" not in scene.cache:
        scene.cache["atlas"] = TextureAtlas(scene.textures)
    return scene.cache["atlas"]


def _pixel_rays(camera: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(1, W) and (H, 1) float64 normalised ray coordinates x = (u - cx) / fx, y = (v - cy) / fy."""
    u = np.arange(camera.width, dtype=np.float64)
    v = np.arange(camera.height, dtype=np.float64)
    return ((u - camera.cx) / camera.fx)[None, :], ((v - camera.cy) / camera.fy)[:, None]


def _clip_near(corners: np.ndarray, near: float) -> np.ndarray:
    """Polygon (M, 3) clipped to z >= near (Sutherland-Hodgman against one plane)."""
    out = []
    n = len(corners)
    for i in range(n):
        a, b = corners[i], corners[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def _check_inputs(T_world_cam: np.ndarray, camera: CameraIntrinsics) -> np.ndarray:
    T = np.asarray(T_world_cam, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InvalidInputError(f"T_world_cam must be a finite 4x4 matrix, got shape {T.shape}")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or np.linalg.det(R) < 0:
        raise InvalidInputError("T_world_cam rotation is not a rotation matrix")
    if not isinstance(camera, CameraIntrinsics):
        raise InvalidInputError(f"camera must be CameraIntrinsics, got {type(camera).__name__}")
    return T


def raycast(scene: Scene, T_world_cam: np.ndarray, camera: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Nearest quad per pixel: ((H, W) int32 quad index, -1 = none; (H, W) float64 depth along z, 0 = none)."""
    ibuf, depth, _ = _raycast(scene, T_world_cam, camera)
    return ibuf, depth


def _raycast(scene: Scene, T_world_cam: np.ndarray, camera: CameraIntrinsics):
    """``raycast`` plus the quads in the camera frame (origins, axes_u, axes_v, normals: (Q, 3) each)."""
    T = _check_inputs(T_world_cam, camera)
    R, t = T[:3, :3], T[:3, 3]
    W, H = camera.width, camera.height
    # Quads in the camera frame: X_cam = R^T (X_world - t), written for row vectors.
    O = (scene.origins - t) @ R
    U = scene.axes_u @ R
    V = scene.axes_v @ R
    N = np.cross(U, V)
    su, sv = scene.sizes[:, 0], scene.sizes[:, 1]
    corners = np.stack([O, O + U * su[:, None], O + U * su[:, None] + V * sv[:, None], O + V * sv[:, None]], 1)

    # Frustum culling with the four side planes and the near plane (all corners outside one plane -> cull).
    z = corners[..., 2]
    xmin, xmax = -camera.cx / camera.fx - 1e-3, (W - 1 - camera.cx) / camera.fx + 1e-3
    ymin, ymax = -camera.cy / camera.fy - 1e-3, (H - 1 - camera.cy) / camera.fy + 1e-3
    outside = ((z < NEAR).all(1) | (corners[..., 0] < xmin * z).all(1) | (corners[..., 0] > xmax * z).all(1)
               | (corners[..., 1] < ymin * z).all(1) | (corners[..., 1] > ymax * z).all(1))
    dplane = np.einsum("qi,qi->q", N, O)

    rx, ry = _pixel_rays(camera)
    rx32, ry32 = rx.astype(np.float32), ry.astype(np.float32)
    zbuf = np.full((H, W), np.inf, np.float32)
    ibuf = np.full((H, W), -1, np.int32)
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for q in np.flatnonzero(~outside):
            if abs(dplane[q]) < 1e-9:
                continue  # plane seen edge-on through the camera centre
            poly = corners[q]
            if (poly[:, 2] < NEAR).any():
                poly = _clip_near(poly, NEAR)
                if len(poly) < 3:
                    continue
            pu = fx * poly[:, 0] / poly[:, 2] + cx
            pv = fy * poly[:, 1] / poly[:, 2] + cy
            u0, u1 = max(int(np.floor(pu.min())) - 1, 0), min(int(np.ceil(pu.max())) + 2, W)
            v0, v1 = max(int(np.floor(pv.min())) - 1, 0), min(int(np.ceil(pv.max())) + 2, H)
            if u0 >= u1 or v0 >= v1:
                continue
            n, o, a, b = N[q], O[q], U[q], V[q]
            xs, ys = rx32[:, u0:u1], ry32[v0:v1]
            denom = (np.float32(n[0]) * xs + np.float32(n[2])) + np.float32(n[1]) * ys
            zq = np.float32(dplane[q]) / denom
            s = zq * ((np.float32(a[0]) * xs + np.float32(a[2])) + np.float32(a[1]) * ys) - np.float32(a @ o)
            tt = zq * ((np.float32(b[0]) * xs + np.float32(b[2])) + np.float32(b[1]) * ys) - np.float32(b @ o)
            zb = zbuf[v0:v1, u0:u1]
            hit = (zq > NEAR) & (zq < zb) & (s >= 0) & (s <= su[q]) & (tt >= 0) & (tt <= sv[q])
            zb[hit] = zq[hit]
            ibuf[v0:v1, u0:u1][hit] = q

    # Exact float64 depth of the winning plane per pixel: z = d / (n . r), gathered from a (Q, 4) table.
    plane = np.concatenate([N, dplane[:, None]], 1)
    g = np.take(plane, np.maximum(ibuf, 0), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = g[..., 3] / (g[..., 0] * rx + g[..., 1] * ry + g[..., 2])
    depth[ibuf < 0] = 0.0
    return ibuf, depth, (O, U, V, N)


def render(scene: Scene, T_world_cam: np.ndarray, camera: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` seen from ``T_world_cam`` (4, 4) with ``camera``.

    Returns rgb (H, W, 3) uint8 and depth (H, W) float32 metres along the optical axis (0 = sky).
    """
    ibuf, depth, (O, U, V, N) = _raycast(scene, T_world_cam, camera)
    atlas = atlas_of(scene)
    H = camera.height
    rx, ry = _pixel_rays(camera)
    rx, ry = rx.astype(np.float32), ry.astype(np.float32)
    hit = ibuf >= 0

    # Per-quad table (camera frame), gathered once per pixel; pixels without a hit use quad 0 and are masked later.
    table = np.concatenate([
        U, V, N,                                                     # 0-2, 3-5, 6-8
        (np.einsum("qi,qi->q", O, U) - scene.offsets[:, 0])[:, None],  # 9: a = z (U . r) - col9  (metres)
        (np.einsum("qi,qi->q", O, V) - scene.offsets[:, 1])[:, None],  # 10
        1.0 / scene.texels,                                          # 11, 12: texels per metre
        (1.0 / scene.texels.min(1))[:, None],                        # 13
    ], 1).T.astype(np.float32, order="C")
    g = np.take(table, np.maximum(ibuf, 0), axis=1)               # (14, H, W), one contiguous plane per column
    z = depth.astype(np.float32)
    tu = (z * (g[0] * rx + g[1] * ry + g[2]) - g[9]) * g[11]     # level-0 texel coords
    tv = (z * (g[3] * rx + g[4] * ry + g[5]) - g[10]) * g[12]

    # Mip level from the pixel footprint in texels: distance / focal / texel, widened by obliquity
    # (square root of 1 / cos: a compromise between blur and aliasing on grazing surfaces).
    cos = np.abs(g[6] * rx + g[7] * ry + g[8]) / np.sqrt(rx * rx + ry * ry + 1)
    focal = np.float32(0.5 * (camera.fx + camera.fy))
    footprint = z * g[13] / (focal * np.sqrt(np.maximum(cos, np.float32(0.05))))
    lod = np.clip(np.log2(np.maximum(footprint, np.float32(1e-6))), 0, atlas.levels - 1)
    l0 = lod.astype(np.int32)                                     # floor, lod >= 0
    l1 = np.minimum(l0 + 1, atlas.levels - 1)
    frac = (lod - l0)[..., None]

    slot = np.take(scene.texture_ids.astype(np.int32), np.maximum(ibuf, 0)) * atlas.levels
    levels = np.arange(atlas.levels)
    inv_scale = np.float32(2.0) ** -levels.astype(np.float32)      # texel scale of each level
    sizes = (atlas.size >> levels).astype(np.float32)
    colors = []
    for level in (l0, l1):
        scale, size = np.take(inv_scale, level), np.take(sizes, level)
        x = tu * scale - 0.5
        y = tv * scale - 0.5
        x -= np.floor(x / size) * size                            # wrap into [0, size)
        y -= np.floor(y / size) * size
        x += np.take(atlas.x0, slot + level)
        y += np.take(atlas.y0, slot + level)
        x[~hit] = -10.0
        colors.append(cv2.remap(atlas.image, x, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT))
    shade = scene.shades[np.maximum(ibuf, 0)][..., None]
    rgb = (colors[0] + (colors[1].astype(np.float32) - colors[0]) * frac) * shade

    # Sky / background: vertical gradient where nothing was hit.
    w = np.linspace(0.0, 1.0, H, dtype=np.float32)[:, None, None]
    sky = scene.sky_top * (1 - w) + scene.sky_bottom * w
    rgb = np.where(hit[..., None], rgb, sky)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), depth.astype(np.float32)
