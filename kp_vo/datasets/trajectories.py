"""Smooth camera trajectories (T_world_cam, (N, 4, 4) float64) through the synthetic scenes.

World frame: z up (see ``scene``). Camera optical frame: x right, y down, z forward.
"""

from __future__ import annotations

import numpy as np

from kp_vo.datasets.scene import ROAD_END, road_centerline
from kp_vo.errors import InvalidInputError

# Columns: camera x (right), y (down), z (forward) expressed in the body frame (x forward, y left, z up).
R_BODY_CAM = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_pose(position, yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """(4, 4) T_world_cam of a camera at ``position`` (3,) heading ``yaw`` (rad, about +z, 0 = +x),
    ``pitch`` (rad, positive looks down) and ``roll`` (rad, about the viewing direction)."""
    cy, sy = np.cos(yaw), np.sin(yaw)
    cp, sp = np.cos(pitch), np.sin(pitch)
    cr, sr = np.cos(roll), np.sin(roll)
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1.0]])
    Ry = np.array([[cp, 0, sp], [0, 1.0, 0], [-sp, 0, cp]])
    Rx = np.array([[1.0, 0, 0], [0, cr, -sr], [0, sr, cr]])
    T = np.eye(4)
    T[:3, :3] = Rz @ Ry @ Rx @ R_BODY_CAM
    T[:3, 3] = position
    return T


def _wobble(rng: np.random.Generator, i: np.ndarray, amplitude: float, periods=(37.0, 61.0, 97.0)) -> np.ndarray:
    """Smooth zero-mean jitter: a sum of sinusoids with random phases, peak about ``amplitude``."""
    out = np.zeros(len(i))
    for p in periods:
        out += np.sin(2 * np.pi * i / p + rng.uniform(0, 2 * np.pi))
    return amplitude * out / len(periods)


def street_trajectory(num_frames: int, step: float = 1.0, start: float = 5.0, lateral: float = -2.0,
                      height: float = 1.65, jitter_deg: float = 0.3, seed: int = 0) -> np.ndarray:
    """(N, 4, 4) T_world_cam driving along the street road: ``step`` m per frame from arc length
    ``start``, ``lateral`` m left of the centreline (negative = right lane), camera ``height`` m
    above the ground looking along the road, with small smooth yaw/pitch/roll jitter (degrees)
    and +-1 cm height bounce. The road turns left by 40 deg between arc lengths 50 and 85 m."""
    num_frames = int(num_frames)
    if num_frames < 1:
        raise InvalidInputError(f"num_frames must be >= 1, got {num_frames}")
    end = start + step * (num_frames - 1)
    if end > ROAD_END - 20.0 or start < 0:
        raise InvalidInputError(f"street trajectory s = {start:.0f}..{end:.0f} m leaves the road (0..{ROAD_END - 20:.0f} m): "
                                f"use fewer frames or a smaller step")
    rng = np.random.default_rng([seed, 11])
    i = np.arange(num_frames, dtype=np.float64)
    s = start + step * i
    center, heading = road_centerline(s)
    left = np.stack([-np.sin(heading), np.cos(heading)], 1)
    xy = center + lateral * left
    z = height + _wobble(rng, i, 0.01)
    j = np.deg2rad(jitter_deg)
    yaw = heading + _wobble(rng, i, j)
    pitch = _wobble(rng, i, j)
    roll = _wobble(rng, i, j * 0.7)
    return np.stack([camera_pose([xy[k, 0], xy[k, 1], z[k]], yaw[k], pitch[k], roll[k]) for k in range(num_frames)])


def room_trajectory(num_frames: int, seed: int = 0, center=(3.0, 2.5, 1.45), radius=(0.55, 0.45),
                    period: float = 200.0, yaw_rate_deg: float = 0.6, pitch_deg: float = 10.0) -> np.ndarray:
    """(N, 4, 4) T_world_cam of a hand-held camera in the room: an ellipse of ``radius`` (m) about
    ``center`` traversed once per ``period`` frames (about 1.4-1.7 cm per frame) with +-8 cm height
    bounce, yaw turning ``yaw_rate_deg`` per frame plus a slow +-8 deg sway (0.35-0.85 deg per
    frame), looking ``pitch_deg`` down with +-4 deg pitch and +-3 deg roll sway. The ellipse stays
    more than 1 m from furniture and walls."""
    num_frames = int(num_frames)
    if num_frames < 1:
        raise InvalidInputError(f"num_frames must be >= 1, got {num_frames}")
    rng = np.random.default_rng([seed, 12])
    i = np.arange(num_frames, dtype=np.float64)
    direction = 1.0 if rng.random() < 0.5 else -1.0
    phase = rng.uniform(0, 2 * np.pi, 6)
    w = 2 * np.pi / period
    x = center[0] + radius[0] * np.cos(direction * w * i + phase[0])
    y = center[1] + radius[1] * np.sin(direction * w * i + phase[0])
    z = center[2] + 0.08 * np.sin(2 * np.pi * i / 150.0 + phase[1])
    yaw = phase[2] + direction * np.deg2rad(yaw_rate_deg) * i + np.deg2rad(8.0) * np.sin(2 * np.pi * i / 200.0 + phase[3])
    pitch = np.deg2rad(pitch_deg) + np.deg2rad(4.0) * np.sin(2 * np.pi * i / 170.0 + phase[4])
    roll = np.deg2rad(3.0) * np.sin(2 * np.pi * i / 230.0 + phase[5])
    return np.stack([camera_pose([x[k], y[k], z[k]], yaw[k], pitch[k], roll[k]) for k in range(num_frames)])
