"""The ViewSynth relocalization protocol on the synthetic room (§4.1): map one circular trajectory
about the room's centre, localize another (other radius, height, pitch and headings), score with
``kp_vo.reloc.evaluation``. Used by ``kp-vo eval viewsynth`` and the relocalization tests."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kp_vo.datasets import SyntheticSequence
from kp_vo.datasets.scenes import make_scene
from kp_vo.reloc.evaluation import RelocEvaluation, map_and_localize
from kp_vo.types import Frame


def room_pose(position, yaw: float, pitch: float = 0.0) -> np.ndarray:
    """(4, 4) T_world_cam of a camera at ``position`` (world z up) looking along heading ``yaw``
    (radians from world +x towards +y), tilted up by ``pitch`` radians; optical frame x right, y down."""
    c, s = np.cos(yaw), np.sin(yaw)
    forward = np.array([c, s, 0.0])
    right = np.array([s, -c, 0.0])
    down = np.array([0.0, 0.0, -1.0])
    cp, sp = np.cos(pitch), np.sin(pitch)
    fwd_p = cp * forward - sp * down   # pitch up: forward leans towards -down (up)
    down_p = sp * forward + cp * down
    T = np.eye(4)
    T[:3, :3] = np.stack([right, down_p, fwd_p], axis=1)
    T[:3, 3] = position
    return T


def room_trajectory(num: int, center=(3.0, 2.5), radius: float = 0.5, height: float = 1.4, yaw0: float = 0.0,
                    pitch: float = 0.0, phase: float = 0.0) -> np.ndarray:
    """(num, 4, 4) poses on a circle of ``radius`` around ``center`` in the synthetic room, the camera
    turning a full 360 deg outward-ish (heading = yaw0 + angle) so every wall is seen."""
    poses = []
    for i in range(num):
        a = phase + 2 * np.pi * i / num
        pos = [center[0] + radius * np.cos(a), center[1] + radius * np.sin(a), height]
        poses.append(room_pose(pos, yaw0 + a, pitch))
    return np.array(poses)


def render_room_frames(poses: np.ndarray, width: int = 320, height: int = 240, seed: int = 0,
                       first_index: int = 0, noise_std: float = 2.0, kind: str = "room") -> list[Frame]:
    """RGB-D ``Frame``s of the synthetic room ``kind`` ("room" | "random_room") at ``poses`` (N, 4, 4)
    rendered by ``kp_vo.datasets.SyntheticSequence(kind, trajectory=poses)`` (ground truth attached),
    re-indexed from ``first_index`` so map and query frames have distinct indices."""
    seq = SyntheticSequence(kind, width=width, height=height, seed=seed, noise_std=noise_std, trajectory=poses)
    return [replace(f, index=first_index + i, stamp_ns=int(f.stamp_ns) + first_index * 100_000_000)
            for i, f in enumerate(seq)]


def room_experiment(extractor, top_k: int | None = 300, num_map: int = 30, num_query: int = 10, seed: int = 0,
                    width: int = 320, height: int = 240, config=None, index_config=None,
                    kind: str = "room") -> RelocEvaluation:
    """ViewSynth protocol on a synthetic room (``kind`` "room": the fixed room, "random_room": room
    ``seed`` of random layout): map a circular trajectory about the room's centre with ground-truth
    poses, then localize a DIFFERENT trajectory (other radius, height, pitch and headings between the
    mapped ones) with ``extractor``. Returns the evaluation (summary has accuracy and MMA)."""
    center = tuple(make_scene(kind, seed).extent[:2] / 2)
    map_poses = room_trajectory(num_map, center=center, radius=0.5, height=1.4)
    query_poses = room_trajectory(num_query, center=center, radius=0.9, height=1.15, pitch=np.radians(8.0),
                                  phase=np.pi / num_map + 0.3, yaw0=np.radians(10.0))
    return map_and_localize(extractor, render_room_frames(map_poses, width, height, seed, kind=kind),
                            render_room_frames(query_poses, width, height, seed, first_index=1000, kind=kind),
                            top_k=top_k, config=config, index_config=index_config)
