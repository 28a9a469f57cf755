"""Procedural colour textures for the synthetic scenes (deterministic from a numpy Generator).

Every function returns a (S, S, 3) uint8 RGB texture. Noise is tileable (wraps at the borders),
so tiled surfaces show no seams; drawn shapes stay inside the tile. Shapes are drawn
anti-aliased at many sizes and contrasts so that corners and blobs exist at several scales.
"""

from __future__ import annotations

import logging
import string
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)

TEXTURE_SIZE = 512


def value_noise(rng: np.random.Generator, size: int = TEXTURE_SIZE, scales=(4, 8, 16, 32, 64, 128),
                persistence: float = 0.65) -> np.ndarray:
    """(size, size) float32 tileable multi-scale value noise, normalised to [0, 1].

    Each octave is a random ``s x s`` grid, wrapped by 2 cells and cubically upsampled, so the
    result tiles seamlessly. Coarse octaves get more weight (``persistence`` per octave).
    """
    total = np.zeros((size, size), np.float32)
    amp, norm = 1.0, 0.0
    for s in scales:
        s = min(s, size)
        cell = size // s
        grid = rng.random((s, s)).astype(np.float32)
        padded = np.pad(grid, 2, mode="wrap")
        up = cv2.resize(padded, ((s + 4) * cell, (s + 4) * cell), interpolation=cv2.INTER_CUBIC)
        total += amp * up[2 * cell: 2 * cell + size, 2 * cell: 2 * cell + size]
        norm += amp
        amp *= persistence
    total /= norm
    lo, hi = float(total.min()), float(total.max())
    return (total - lo) / max(hi - lo, 1e-6)


def random_color(rng: np.random.Generator, lo: int = 20, hi: int = 235) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def colorize(noise: np.ndarray, dark: tuple, light: tuple) -> np.ndarray:
    """(S, S, 3) uint8 blend ``dark * (1 - noise) + light * noise``."""
    d, l = np.array(dark, np.float32), np.array(light, np.float32)
    return np.clip(d + noise[..., None] * (l - d), 0, 255).astype(np.uint8)


def _shade_of(rng: np.random.Generator, base: np.ndarray) -> tuple[int, int, int]:
    """A colour at a random contrast (low to high) from ``base`` (3,) float."""
    contrast = rng.choice([15, 30, 60, 110])
    sign = rng.choice([-1.0, 1.0])
    tint = rng.normal(0, 20, 3)
    return tuple(int(v) for v in np.clip(base + sign * contrast + tint, 0, 255))


def draw_shapes(img: np.ndarray, rng: np.random.Generator, count: int, min_size: int = 4,
                max_size: int = 80, margin: int = 4) -> np.ndarray:
    """Draw ``count`` random rectangles, ellipses, lines, polygons and text strokes on ``img`` in place."""
    size = img.shape[0]
    base = img.reshape(-1, 3).mean(axis=0)
    for _ in range(count):
        r = int(np.exp(rng.uniform(np.log(min_size), np.log(max_size))))
        cx, cy = (int(v) for v in rng.integers(margin + r, size - margin - r, 2)) if size - 2 * (margin + r) > 1 \
            else (size // 2, size // 2)
        color = _shade_of(rng, base)
        kind = rng.integers(0, 6)
        if kind == 0:
            w, h = int(r * rng.uniform(0.3, 1.0)), int(r * rng.uniform(0.3, 1.0))
            cv2.rectangle(img, (cx - w, cy - h), (cx + w, cy + h), color, -1, cv2.LINE_AA)
        elif kind == 1:
            axes = (max(1, int(r * rng.uniform(0.3, 1.0))), max(1, int(r * rng.uniform(0.3, 1.0))))
            cv2.ellipse(img, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, color, -1, cv2.LINE_AA)
        elif kind == 2:
            a = rng.uniform(0, np.pi)
            dx, dy = int(r * np.cos(a)), int(r * np.sin(a))
            cv2.line(img, (cx - dx, cy - dy), (cx + dx, cy + dy), color, int(rng.integers(1, 5)), cv2.LINE_AA)
        elif kind == 3:
            n = int(rng.integers(3, 6))
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = r * rng.uniform(0.4, 1.0, n)
            pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], color, cv2.LINE_AA)
        elif kind == 4:
            cv2.rectangle(img, (cx - r, cy - r // 2), (cx + r, cy + r // 2), color, int(rng.integers(1, 4)), cv2.LINE_AA)
        else:
            draw_text(img, rng, (cx - r, cy), r, color)
    return img


def draw_text(img: np.ndarray, rng: np.random.Generator, origin: tuple[int, int], width: int, color) -> None:
    """A random word of letters/digits, roughly ``width`` pixels wide, starting at ``origin`` (bottom-left)."""
    n = int(rng.integers(2, 8))
    word = "".join(rng.choice(list(string.ascii_uppercase + string.digits), n))
    scale = max(0.3, 2.0 * width / (20.0 * n))
    thickness = max(1, int(scale * 1.5))
    cv2.putText(img, word, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def generic_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE, shapes: int = 120) -> np.ndarray:
    """Coloured multi-scale noise with random shapes on top (any surface)."""
    img = colorize(value_noise(rng, size), random_color(rng, 20, 120), random_color(rng, 120, 240))
    return draw_shapes(img, rng, shapes, 3, size // 6)


def facade_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A building front: wall noise, floors of windows (frames, sills, some lit), a door and signs."""
    wall = colorize(value_noise(rng, size, persistence=0.5), random_color(rng, 60, 150), random_color(rng, 140, 230))
    img = draw_shapes(wall, rng, 40, 2, 12)
    floors = int(rng.integers(3, 7))
    cols = int(rng.integers(3, 7))
    fh, cw = size / floors, size / cols
    frame_col = random_color(rng, 150, 255)
    for f in range(floors - 1):  # bottom floor holds the door and shop windows
        y0 = int(f * fh + fh * 0.25)
        y1 = int(f * fh + fh * 0.8)
        for c in range(cols):
            x0, x1 = int(c * cw + cw * 0.2), int(c * cw + cw * 0.8)
            glass = (rng.integers(10, 60, 3) + (120 if rng.random() < 0.2 else 0)).clip(0, 255)
            cv2.rectangle(img, (x0 - 3, y0 - 3), (x1 + 3, y1 + 3), frame_col, -1, cv2.LINE_AA)
            cv2.rectangle(img, (x0, y0), (x1, y1), tuple(int(v) for v in glass), -1, cv2.LINE_AA)
            cv2.line(img, ((x0 + x1) // 2, y0), ((x0 + x1) // 2, y1), frame_col, 2, cv2.LINE_AA)
            if rng.random() < 0.5:
                cv2.line(img, (x0, (y0 + y1) // 2), (x1, (y0 + y1) // 2), frame_col, 2, cv2.LINE_AA)
            if rng.random() < 0.3:  # curtain
                cv2.rectangle(img, (x0, y0), (int(x0 + (x1 - x0) * rng.uniform(0.2, 0.5)), y1),
                              random_color(rng), -1, cv2.LINE_AA)
    ground_y = int((floors - 1) * fh)
    door_c = int(rng.integers(1, cols)) if cols > 1 else 0
    dx0, dx1 = int(door_c * cw + cw * 0.3), int(door_c * cw + cw * 0.7)
    cv2.rectangle(img, (dx0, ground_y + int(fh * 0.15)), (dx1, size - 1), random_color(rng, 20, 120), -1, cv2.LINE_AA)
    for c in range(cols):
        if c == door_c:
            continue
        x0, x1 = int(c * cw + cw * 0.1), int(c * cw + cw * 0.9)
        cv2.rectangle(img, (x0, ground_y + int(fh * 0.25)), (x1, size - int(fh * 0.12)),
                      tuple(int(v) for v in rng.integers(20, 90, 3)), -1, cv2.LINE_AA)
        draw_shapes(img[ground_y + int(fh * 0.25): size - int(fh * 0.12), x0:x1], rng, 6, 3, 12, 1)
    sign_col = random_color(rng)
    cv2.rectangle(img, (int(cw * 0.2), ground_y + 2), (int(size - cw * 0.2), ground_y + int(fh * 0.18)), sign_col, -1)
    draw_text(img, rng, (int(cw * 0.3), ground_y + int(fh * 0.16)), int(size * 0.3), random_color(rng))
    cv2.line(img, (0, ground_y), (size - 1, ground_y), frame_col, 4, cv2.LINE_AA)
    return img


def road_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Asphalt; x runs along the road, y across it: dashed centre line, solid edge lines, patches, cracks."""
    img = colorize(value_noise(rng, size, scales=(8, 16, 32, 64, 128, 256), persistence=0.8), (55, 55, 58), (120, 118, 115))
    for _ in range(25):  # repair patches and stains
        c = random_color(rng, 40, 140)
        g = int(np.mean(c))
        x, y = (int(v) for v in rng.integers(20, size - 20, 2))
        w, h = (int(v) for v in rng.integers(4, 40, 2))
        cv2.rectangle(img, (x - w, y - h), (x + w, y + h), (g, g, g), -1, cv2.LINE_AA)
    for _ in range(30):  # cracks
        pts = np.cumsum(rng.normal(0, 6, (6, 2)), 0) + rng.integers(10, size - 10, 2)
        cv2.polylines(img, [pts.astype(np.int32)], False, (30, 30, 30), 1, cv2.LINE_AA)
    white = (225, 225, 215)
    cv2.rectangle(img, (0, size // 2 - 5), (int(size * 0.375), size // 2 + 5), white, -1, cv2.LINE_AA)
    cv2.rectangle(img, (0, 14), (size - 1, 22), white, -1, cv2.LINE_AA)
    cv2.rectangle(img, (0, size - 23), (size - 1, size - 15), white, -1, cv2.LINE_AA)
    return img


def paving_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Sidewalk slabs: noise with a grid of joints and some stains."""
    img = colorize(value_noise(rng, size), random_color(rng, 70, 120), random_color(rng, 140, 200))
    step = size // 8
    for k in range(0, size, step):
        cv2.line(img, (k, 0), (k, size - 1), (60, 60, 60), 2, cv2.LINE_AA)
        cv2.line(img, (0, k), (size - 1, k), (60, 60, 60), 2, cv2.LINE_AA)
    return draw_shapes(img, rng, 40, 3, 20)


def car_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """A car body: paint colour with reflections, dark window band, wheels, plate."""
    paint = random_color(rng)
    img = colorize(value_noise(rng, size, persistence=0.4) * 0.5 + 0.25, tuple(int(v * 0.6) for v in paint), paint)
    cv2.rectangle(img, (int(size * 0.15), int(size * 0.08)), (int(size * 0.85), int(size * 0.4)), (35, 40, 50), -1, cv2.LINE_AA)
    cv2.line(img, (size // 2, int(size * 0.08)), (size // 2, int(size * 0.4)), paint, 8, cv2.LINE_AA)
    for cx in (int(size * 0.22), int(size * 0.78)):
        cv2.circle(img, (cx, int(size * 0.85)), int(size * 0.13), (20, 20, 20), -1, cv2.LINE_AA)
        cv2.circle(img, (cx, int(size * 0.85)), int(size * 0.06), (170, 170, 170), -1, cv2.LINE_AA)
    cv2.rectangle(img, (int(size * 0.4), int(size * 0.55)), (int(size * 0.6), int(size * 0.63)), (235, 235, 235), -1)
    draw_text(img, rng, (int(size * 0.41), int(size * 0.62)), int(size * 0.18), (20, 20, 20))
    return draw_shapes(img, rng, 15, 2, 10)


def pole_texture(rng: np.random.Generator, size: int = TEXTURE_SIZE) -> np.ndarray:
    """Painted metal with bands and stickers."""
    img = colorize(value_noise(rng, size), (70, 75, 80), (170, 175, 180))
    for y in rng.integers(0, size, 6):
        cv2.rectangle(img, (0, int(y)), (size - 1, int(y) + int(rng.integers(4, 20))), random_color(rng), -1)
    return draw_shapes(img, rng, 30, 3, 25)


def load_photo_textures(texture_dir: str | Path, rng: np.random.Generator, count: int,
                        size: int = TEXTURE_SIZE) -> list[np.ndarray]:
    """Up to ``count`` photos from ``texture_dir`` (chosen by ``rng``), centre-cropped square, resized, RGB uint8."""
    paths = sorted(p for p in Path(texture_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not paths:
        return []
    chosen = rng.choice(len(paths), size=min(count, len(paths)), replace=False)
    out = []
    for k in chosen:
        img = cv2.imread(str(paths[int(k)]), cv2.IMREAD_COLOR)
        if img is None:
            logger.warning("skipping unreadable texture photo %s", paths[int(k)])
            continue
        h, w = img.shape[:2]
        m = min(h, w)
        img = img[(h - m) // 2:(h - m) // 2 + m, (w - m) // 2:(w - m) // 2 + m]
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA if m > size else cv2.INTER_CUBIC)
        out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return out
