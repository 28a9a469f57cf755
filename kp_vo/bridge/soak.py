"""Soak run of the VO node core: N frames through ``VoNodeCore`` as the ROS node runs it, watching for
anything that grows without bound. ``scripts/soak.py`` is its command line; ``test/test_soak.py`` runs
it at a reduced size.

Input: the source's first ``loop_frames`` frames, turned once into sensor_msgs (rgb8 + 32FC1 depth for the
synthetic scenes, RGB-D mode; mono8 for KITTI 00 from ../shared/data/kitti, mono mode with
config/kitti_mono.yaml's odometry), replayed with fresh headers and increasing stamps: ``pingpong`` runs the
loop forwards then backwards (continuous motion, places revisited), ``wrap`` jumps back to its first frame
(tracking is lost there and the keyframe archive relocalizes). Per frame, as ``kp_vo.ros.vo_node``:
camera_info and the image (+ depth) into the core (conversions in), then the odometry, TF, map -> odom, path
and status messages built from its output (conversions out); diagnostics once per second of stamps.

Measured: per-frame latency (messages in -> messages out; core and publishing apart; and the process CPU
time per frame, which a loaded machine disturbs less than wall-clock time), and every ``every``
frames the resident memory (VmRSS, after a ``gc.collect()``), the keyframe window (keyframes, points), the
path length, the archive (points, ``Repository.nbytes``). Summarised with a verdict per series: its
slope per 1000 frames after the warm-up (first ``warmup`` share of the frames), whether it grows, and
the configured bound that stops it (None: grows without bound).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from kp_vo.bridge import conversions as cv
from kp_vo.bridge.bagio import factory
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig

ROOT = Path(__file__).resolve().parents[2]   # the repository (config/, ../shared/data for KITTI)
FRAME_ID = "camera_optical_frame"
F = factory()


@dataclass
class SoakSettings:
    frames: int = 2000                  # frames fed to the core
    source: str = "synthetic:room"      # synthetic:room, synthetic:street or kitti:00
    loop: str = "pingpong"              # "pingpong" or "wrap"
    loop_frames: int = 200              # source frames in the loop
    width: int | None = None            # synthetic image size (default 320 x 240)
    height: int | None = None
    every: int = 100                    # frames per sample / latency chunk
    warmup: float = 0.25                # share of the frames before growth is judged
    overrides: dict = field(default_factory=dict)   # pipeline config on top of the source's (nested mapping)
    ros: dict = field(default_factory=dict)         # NodeConfig fields (e.g. path_max_length)


def rss_mb() -> float:
    """Resident memory of this process in MiB (VmRSS), NaN where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


# ----------------------------------------------------------------------------- input

def load_loop(source: str, frames: int, width: int | None, height: int | None):
    """(mode, camera, fps, list of (image fields, depth fields or None), pipeline overrides) of the loop."""
    from kp_vo.datasets import open_sequence

    overrides: dict = {}
    if source.startswith("kitti"):
        from kp_vo.config import read_yaml
        sequence = source.partition(":")[2] or "00"
        seq = open_sequence(str(ROOT.parent / "shared" / "data" / "kitti"), sequence, max_frames=frames)
        params = read_yaml(ROOT / "config" / "kitti_mono.yaml")["vo_node"]["ros__parameters"]
        overrides = {k: v for k, v in params.items() if k != "ros"}
        mode, fps = "mono", 10.0
    else:
        seq = open_sequence(source, max_frames=frames, width=width or 320, height=height or 240)
        mode, fps = "rgbd", (30.0 if "room" in source else 10.0)
    loop = []
    for frame in seq:
        image = frame.image
        encoding = "mono8" if image.ndim == 2 else "rgb8"
        depth = None
        if mode == "rgbd":
            depth = cv.numpy_to_image_fields(np.nan_to_num(frame.depth.astype(np.float32)), "32FC1")
        loop.append((cv.numpy_to_image_fields(image, encoding), depth))
    return mode, seq.camera, fps, loop, overrides


def loop_order(n: int, frames: int, kind: str) -> list[int]:
    cycle = list(range(n)) if kind == "wrap" or n < 3 else list(range(n)) + list(range(n - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(frames)]


def image_msg(fields: dict, stamp_ns: int):
    return F("sensor_msgs/msg/Image")(header=cv.header_msg(F, stamp_ns, FRAME_ID), **fields)


# ----------------------------------------------------------------------------- output

def publish(core: VoNodeCore, out) -> int:
    """Build the messages ``vo_node._publish`` sends for one output; returns how many."""
    msgs = [cv.odometry_msg(F, out.stamp_ns, out.odom_frame, out.base_frame, out.T_odom_base, out.covariance,
                            out.twist, out.twist_covariance),
            cv.path_msg(F, out.odom_frame, out.path_stamps_ns, out.path_poses), cv.string_msg(F, out.status)]
    if out.publish_tf:
        msgs.append(cv.transform_stamped_msg(F, out.stamp_ns, out.odom_frame, out.base_frame, out.T_odom_base))
    mt = core.map_tf(only_if_changed=True)
    if mt is not None:
        msgs.append(cv.transform_stamped_msg(F, mt.stamp_ns, mt.parent, mt.child, mt.T_parent_child))
    return len(msgs)


def percentiles(values_ms: list[float]) -> dict:
    a = np.asarray(values_ms, np.float64)
    if not len(a):
        return {}
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def verdict(frames: list[int], values: list[float], warmup_frame: int, bound: float | None,
            rel_tol: float, abs_tol: float) -> dict:
    """Slope per 1000 frames after the warm-up; "grows" when the rise after the warm-up passes the tolerance."""
    x = np.asarray(frames, float)
    y = np.asarray(values, float)
    keep = x >= warmup_frame
    if keep.sum() < 2:
        return {"grows": None}
    x, y = x[keep], y[keep]
    slope = float(np.polyfit(x, y, 1)[0] * 1000.0)
    rise = float(y[-1] - y[0])
    grows = bool(slope > 0 and rise > max(abs_tol, rel_tol * abs(y[0])))
    if not grows:
        text = "flat"
    elif bound is not None:
        text = f"grows, bounded by {bound:g}"
    else:
        text = "GROWS WITHOUT BOUND"
    return {"after_warmup": float(y[0]), "last": float(y[-1]), "max": float(np.max(values)),
            "slope_per_1000_frames": slope, "grows": grows, "bound": bound, "verdict": text}


# ----------------------------------------------------------------------------- run

def _nested_update(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _nested_update(merged[key], value) if isinstance(merged.get(key), dict) and \
            isinstance(value, dict) else value
    return merged


def build_core(settings: SoakSettings):
    """(core, odometry, config, node_config, mode, camera, fps, loop) ready for ``run_soak``."""
    from kp_vo.config import load_config
    from kp_vo.pipeline import PipelineConfig, build_odometry

    mode, camera, fps, loop, overrides = load_loop(settings.source, settings.loop_frames, settings.width,
                                                   settings.height)
    config = load_config(PipelineConfig, _nested_update(overrides, settings.overrides))
    odometry = build_odometry(config)
    node_config = load_config(NodeConfig, {"mode": mode, **settings.ros})
    core = VoNodeCore(node_config, odometry, lambda frame_id: np.eye(4))
    return core, odometry, config, node_config, mode, camera, fps, loop


def run_soak(settings: SoakSettings, on_sample: Callable[[dict], None] | None = None, built=None) -> dict:
    """Run the soak (see the module docstring); ``on_sample(sample)`` sees each sample as it is taken.
    ``built``: the tuple of ``build_core(settings)`` to run on (a test may wrap its core first).

    Returns {"settings", "mode", "rss_start_mb", "samples", "latency_after_warmup_ms", "core_max_ms",
    "verdicts", "archive_mb_per_keyframe", "note"}; a sample has frame, elapsed_s, rss_mb, window_keyframes,
    window_points, path_length, archive_keyframes / _points / _mb, latency/core/publish/cpu percentiles of
    its chunk, the tracking states and the core's problem counters."""
    core, odometry, config, node_config, mode, camera, fps, loop = built or build_core(settings)
    info_fields = dict(cv.camera_info_fields(camera))
    roi = F("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    order = loop_order(len(loop), settings.frames, settings.loop)
    dt_ns = int(1e9 / fps)
    samples, chunk, chunks = [], {"total": [], "core": [], "publish": [], "cpu": []}, []
    states: dict[str, int] = {}
    core_max_ms = 0.0
    gc.collect()
    rss0 = rss_mb()
    t_start = time.perf_counter()
    for i, k in enumerate(order):
        stamp = 1_000_000_000 + i * dt_ns
        image_fields, depth_fields = loop[k]
        t0, c0 = time.perf_counter(), time.process_time()
        info = F("sensor_msgs/msg/CameraInfo")(header=cv.header_msg(F, stamp, FRAME_ID), binning_x=0, binning_y=0,
                                               roi=roi, **info_fields)
        core.on_camera_info(info)
        if mode == "rgbd":
            out = core.on_pair(image_msg(image_fields, stamp), image_msg(depth_fields, stamp))
        else:
            out = core.on_image(image_msg(image_fields, stamp))
        t1 = time.perf_counter()
        if out is not None:
            publish(core, out)
            states[out.state] = states.get(out.state, 0) + 1
        if i % max(1, int(fps)) == 0:
            d = core.diagnostics()
            cv.diagnostic_array_msg(F, stamp, "kp_vo: visual odometry", "kp_vo", d.level, d.message, d.values)
        t2, c2 = time.perf_counter(), time.process_time()
        chunk["cpu"].append((c2 - c0) * 1e3)
        chunk["total"].append((t2 - t0) * 1e3)
        chunk["core"].append((t1 - t0) * 1e3)
        chunk["publish"].append((t2 - t1) * 1e3)
        core_max_ms = max(core_max_ms, (t1 - t0) * 1e3)
        if (i + 1) % settings.every == 0 or i + 1 == len(order):
            odometry.flush()
            archive = odometry._archive
            gc.collect()
            sample = {"frame": i + 1, "elapsed_s": time.perf_counter() - t_start, "rss_mb": rss_mb(),
                      "window_keyframes": len(odometry._map), "window_points": int(odometry._map.num_points),
                      "path_length": len(core.last_output.path_poses) if core.last_output else 0,
                      "archive_keyframes": archive.num_frames if archive is not None else 0,
                      "archive_points": len(archive) if archive is not None else 0,
                      "archive_mb": archive.nbytes / 2 ** 20 if archive is not None else 0.0,
                      "latency_ms": percentiles(chunk["total"]), "core_ms": percentiles(chunk["core"]),
                      "publish_ms": percentiles(chunk["publish"]), "cpu_ms": percentiles(chunk["cpu"]),
                      "states": dict(states), "problems": dict(core.problems)}
            samples.append(sample)
            chunks.append(chunk["total"])
            chunk = {"total": [], "core": [], "publish": [], "cpu": []}
            states = {}
            if on_sample is not None:
                on_sample(sample)
    result = summarise(settings, config, node_config, samples, chunks, rss0, mode)
    result["core_max_ms"] = core_max_ms
    return result


def format_sample(sample: dict) -> str:
    return (f"{sample['frame']:6d}  {sample['elapsed_s']:7.1f} s  RSS {sample['rss_mb']:7.1f} MB  "
            f"window {sample['window_keyframes']:2d} kf / {sample['window_points']:5d} pts  "
            f"path {sample['path_length']:5d}  archive {sample['archive_keyframes']:4d} kf "
            f"{sample['archive_points']:7d} pts {sample['archive_mb']:6.2f} MB  latency p50 "
            f"{sample['latency_ms']['p50']:6.1f} p95 {sample['latency_ms']['p95']:6.1f} p99 "
            f"{sample['latency_ms']['p99']:6.1f} max {sample['latency_ms']['max']:7.1f} ms (publish p50 "
            f"{sample['publish_ms']['p50']:5.1f}, CPU p50 {sample['cpu_ms']['p50']:6.1f})  "
            f"{sample['states']}")


def summarise(settings, config, node_config, samples, chunks, rss0, mode) -> dict:
    odo = config.odometry
    frames = [s["frame"] for s in samples]
    warmup = int(settings.frames * settings.warmup)
    per_kf_mb = None
    if samples[-1]["archive_points"]:
        per_kf_mb = samples[-1]["archive_mb"] / max(samples[-1]["archive_keyframes"], 1)
    archive_bound_mb = None if per_kf_mb is None else per_kf_mb * odo.archive_max_keyframes
    if odo.archive_max_mb > 0:
        archive_bound_mb = min(archive_bound_mb or odo.archive_max_mb, odo.archive_max_mb)

    def series(key, sub=None):
        return [s[key][sub] if sub else s[key] for s in samples]

    verdicts = {
        "rss_mb": verdict(frames, series("rss_mb"), warmup, None, 0.05, 20.0),
        "window_keyframes": verdict(frames, series("window_keyframes"), warmup, odo.window_size, 0.2, 2),
        "window_points": verdict(frames, series("window_points"), warmup, None, 0.5, 2000),
        "path_length": verdict(frames, series("path_length"), warmup, node_config.path_max_length, 0.05, 10),
        "archive_keyframes": verdict(frames, series("archive_keyframes"), warmup, odo.archive_max_keyframes, 0.05, 2),
        "archive_mb": verdict(frames, series("archive_mb"), warmup, archive_bound_mb, 0.05, 0.5),
        "latency_p50_ms": verdict(frames, series("latency_ms", "p50"), warmup, None, 0.25, 5.0),
        "latency_p95_ms": verdict(frames, series("latency_ms", "p95"), warmup, None, 0.25, 10.0),
        "publish_p50_ms": verdict(frames, series("publish_ms", "p50"), warmup, None, 0.25, 1.0),
        "cpu_p50_ms": verdict(frames, series("cpu_ms", "p50"), warmup, None, 0.25, 5.0),
    }
    after = [v for s, c in zip(samples, chunks) if s["frame"] > warmup for v in c]
    return {"settings": dataclasses.asdict(settings), "mode": mode, "rss_start_mb": rss0, "samples": samples,
            "latency_after_warmup_ms": percentiles(after), "verdicts": verdicts,
            "archive_mb_per_keyframe": per_kf_mb,
            "note": "bounds: window_size, ros.path_max_length, odometry.archive_max_keyframes (archive_mb: that "
                    "many keyframes at the measured MB per keyframe, or odometry.archive_max_mb when set)"}
