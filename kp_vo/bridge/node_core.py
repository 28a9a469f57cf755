"""The logic of the VO node between "message received" and "message published", ROS-free.

``VoNodeCore`` is driven by the ROS node (``kp_vo.ros.vo_node``) and by the offline bag
runner (``kp_vo.bridge.bag_runner``) alike, so the bag runner exercises exactly the node's
behaviour:

1. camera_info: turned into the pinhole camera the odometry sees (``kp_vo.bridge.camera_model``: a
   distorted one rectified, refused, or taken as rectified, as ``distortion`` says); a bad one is logged
   (throttled) and ignored; images wait (throttled warning) until a good one arrived.
2. RGB-D: image and depth are paired by stamp within ``sync_slop`` (or exactly when
   ``approx_sync`` is false); unpaired older messages are dropped. (The ROS node may instead use
   message_filters and call ``on_pair``.)
3. stamps: a stamp more than ``loop_reset_threshold`` s before the previous one is a bag loop:
   the odometry resets and the frame is processed; any other stamp not after the previous one
   (repeated / out of order) is dropped with a warning, as is a stamp that is not a valid time and a
   zero stamp after the first frame (a header left unset, which must not read as a bag loop).
4. the frame is converted (sensor_msgs/Image, or CompressedImage with ``image_transport: compressed``),
   rectified when asked, and validated; bad encodings or payloads, empty images and size mismatches are
   one log line each (an unsupported encoding once per encoding) and the frame is dropped.
5. ``VisualOdometry.process``; its camera pose is turned into the base_link pose in the tracker's world,
   ``T_W_base = T_base_cam @ T_world_cam @ inv(T_base_cam)``, and from there into REP-105 frames
   (``kp_vo.bridge.odom_frames.OdomFrames``): ``odom -> base_link`` moves with the tracker while it tracks,
   holds the last tracked pose while it does not (LOST: no TF with ``lost_tf: none``, the held pose with
   ``hold``; never the motion prior) and never jumps: relocalization (after LOST, against the keyframe
   archive, into a map loaded by ``load_map``) and ``set_pose`` in map land in ``map -> odom``, which
   ``map_tf(now)`` gives the node's timer to republish. The covariance is carried over with the adjoint of
   ``T_base_cam`` and inflated while LOST; the twist of base_link comes from two consecutive tracked poses.
6. live rate (``latest_only``, the nodes with ``ros.drop_stale``): ``on_image`` / ``on_depth`` /
   ``on_pair`` only put the input (the RGB-D pair once synchronised) into a one-slot
   ``LatestFrameSlot``, where a newer input replaces an unprocessed older one (counted as
   ``dropped_stale``); a worker thread calls ``process_pending`` on the newest one. Without
   ``latest_only`` (``kp-vo bag``, the tests) every input is processed in order as it arrives.
   Either way the processing rate, time per frame and latency of the last ``ros.stats_window``
   frames are measured (``kp_vo.bridge.latest_frame.ProcessingStats``) and shown in diagnostics.

Threads: the receive side (``on_*``, ``on_camera_info``) runs in one thread and
``process_pending`` in one other; processing, ``reset`` and the map services are serialised by
a lock that the receive side never takes.

Errors: no entry point (``on_*``, ``process*``) raises. A bad message is one log line naming what is wrong
and counted in ``problems`` (shown as ``dropped_<kind>`` in the diagnostics); an exception that is not a
``KpVoError`` is a bug: logged with its traceback and counted as ``internal_error``. The service-like calls
(``set_pose``, ``save_map``, ``load_map``) raise a one-line ``KpVoError`` instead, which the node answers
with; a refused call changes nothing.

Outputs are plain dataclasses (``VoOutput``, ``Diagnostics``) that the node and the bag writer
both turn into messages with ``kp_vo.bridge.conversions``.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kp_vo.bridge.camera_model import CameraModel, CameraModels
from kp_vo.bridge.conversions import (
    UnsupportedEncodingError,
    compressed_image_to_numpy,
    depth_to_numpy,
    image_to_numpy,
    pose_with_covariance_stamped_to_pose,
    stamp_to_ns,
)
from kp_vo.bridge.latest_frame import FrameTiming, LatestFrameSlot, PendingInput, ProcessingStats
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.bridge.odom_frames import OdomFrames, TransformStamper, body_twist
from kp_vo.bridge.scale import Scale, check_required_metric
from kp_vo.errors import InvalidInputError, KpVoError, MapFileError
from kp_vo.geometry.se3 import adjoint_translation_first
from kp_vo.odometry.types import TrackingResult, TrackingState
from kp_vo.types import CameraIntrinsics, Frame

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- outputs

@dataclass
class VoOutput:
    """What one processed frame publishes.

    T_world_cam: (4, 4) camera pose in the odometry world frame (as VisualOdometry returns it; while
                 LOST its motion prior).
    T_odom_base: (4, 4) pose of ``base_frame`` in ``odom_frame`` (published as odom, and as TF when
                 ``publish_tf``): continuous, held while not tracking.
    covariance:  (6, 6) covariance of T_odom_base in base_frame, (x, y, z, rot_x, rot_y, rot_z).
    T_map_odom:  (4, 4) the map -> odom correction after this frame.
    twist, twist_covariance: (6,) (vx, vy, vz, wx, wy, wz) of base_frame in base_frame and its (6, 6)
                 covariance; None when unknown (not tracked, or the frame before was not).
    path_stamps_ns / path_poses: the path so far (T_odom_base poses), at most path_max_length.
    """

    stamp_ns: int
    frame_index: int
    state: str
    T_world_cam: np.ndarray
    T_odom_base: np.ndarray
    covariance: np.ndarray
    odom_frame: str
    base_frame: str
    camera_frame: str
    publish_tf: bool
    num_inliers: int
    status: str
    path_stamps_ns: list
    path_poses: list
    T_map_odom: np.ndarray = field(default_factory=lambda: np.eye(4))
    twist: np.ndarray | None = None
    twist_covariance: np.ndarray | None = None
    result: TrackingResult | None = None   # the tracker's result (debug image, timings)
    frame: Frame | None = None


@dataclass
class MapTransform:
    """One map -> odom to broadcast: ``T_parent_child`` (4, 4) stamped ``stamp_ns``."""

    stamp_ns: int
    parent: str
    child: str
    T_parent_child: np.ndarray


@dataclass
class Diagnostics:
    level: str      # "ok" | "warn" | "error"
    message: str
    values: dict


# ----------------------------------------------------------------------------- helpers

class Throttle:
    """``ready(key, now_ns)`` is true at most once per ``period_s`` per key."""

    def __init__(self, period_s: float):
        self.period_ns = int(period_s * 1e9)
        self._last: dict[str, int] = {}

    def ready(self, key: str, now_ns: int) -> bool:
        last = self._last.get(key)
        if last is not None and 0 <= now_ns - last < self.period_ns:
            return False
        self._last[key] = now_ns
        return True


def check_rigid(T: Any, what: str) -> np.ndarray:
    """``T`` as a (4, 4) float64 rigid transform; InvalidInputError (one line) when it is not one (shape,
    NaN/inf, a rotation block that is not orthonormal with det +1, a last row other than 0 0 0 1)."""
    try:
        T = np.asarray(T, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{what} is not numeric: {exc}") from None
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InvalidInputError(f"{what} is not a finite 4x4 transform (shape {T.shape})")
    R = T[:3, :3]
    if not (np.allclose(R @ R.T, np.eye(3), atol=1e-4) and np.linalg.det(R) > 0
            and np.allclose(T[3], [0, 0, 0, 1])):
        raise InvalidInputError(f"{what} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return T


def camera_to_base(T_world_cam: np.ndarray, covariance_cam: np.ndarray, T_base_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Camera pose in the VO world -> base_link pose in odom, with the covariance moved along.

    The odom frame is the base_link frame at the VO origin, so
    ``T_odom_base = T_base_cam @ T_world_cam @ inv(T_base_cam)``; a right perturbation exp(xi)
    of T_world_cam becomes exp(Ad(T_base_cam) xi) of T_odom_base.
    """
    T_cam_base = np.linalg.inv(T_base_cam)
    T_odom_base = T_base_cam @ T_world_cam @ T_cam_base
    A = adjoint_translation_first(T_base_cam)
    return T_odom_base, A @ covariance_cam @ A.T


def _guarded(method: Callable) -> Callable:
    """A message entry point that never raises: a KpVoError that got this far is one warning line
    (``bad_input``); any other exception is a bug, logged with its traceback and counted as
    ``internal_error`` (shown in the diagnostics). The message is dropped either way."""

    @functools.wraps(method)
    def entry(self: "VoNodeCore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except KpVoError as exc:
            self._problem("bad_input", f"{method.__name__}: dropping the message: {exc}", None, throttled=False)
        except Exception:   # noqa: BLE001 - the last resort that keeps the node alive
            self.problems["internal_error"] += 1
            logger.exception("%s: unexpected error, message dropped (internal_error %d)", method.__name__,
                             self.problems["internal_error"])
        return None

    return entry


# ----------------------------------------------------------------------------- core

ExtrinsicLookup = Callable[[str], "np.ndarray | None"]
Clock = Callable[[], int]


class VoNodeCore:
    """See the module docstring. ``odometry`` has ``process(frame) -> TrackingResult`` and
    ``reset()`` (kp_vo.odometry.tracker.VisualOdometry or a stand-in).

    ``lookup_extrinsic(camera_frame) -> T_base_cam (4, 4) | None`` gives the camera's pose in
    base_link (from TF); while it returns None frames wait with a throttled warning. With
    ``frames.base_link == ""`` the camera frame itself is published and no lookup happens.

    ``clock() -> ns`` is the caller's clock: it stands in for every ``now_ns`` left out and
    measures the processing time of each frame (default: ``time.monotonic_ns``; the node passes
    its ROS clock). ``latest_only``: inputs wait in ``pending`` for ``process_pending`` (item 6).

    ``scale``: whether the odometry is metric (``kp_vo.bridge.scale``; diagnostics ``metric_scale``);
    with ``require_metric`` a non-metric one raises ConfigError here. None: not known (reloc_node).
    ``continuous_odom``: the REP-105 frames of item 5; False publishes the odometry's poses as they
    come (reloc_node: every localization is an absolute map pose).
    """

    def __init__(self, config: NodeConfig, odometry: Any, lookup_extrinsic: ExtrinsicLookup | None = None,
                 clock: Clock | None = None, latest_only: bool = False, scale: Scale | None = None,
                 continuous_odom: bool = True):
        if scale is not None:
            check_required_metric(config.require_metric, scale)
        self.config = config
        self.odometry = odometry
        self.scale = scale
        self.continuous_odom = continuous_odom
        self.odom_frames = OdomFrames()
        self._map_stamps = TransformStamper(config.map_tf_tolerance)
        self._map_sent: np.ndarray | None = None    # the last map -> odom handed out by map_tf
        self._cameras = CameraModels(config.distortion)
        self.camera_model: CameraModel | None = None
        self._previous: tuple[int, np.ndarray, np.ndarray] | None = None   # last tracked (stamp, pose, cov)
        self.lookup_extrinsic = lookup_extrinsic or (lambda frame_id: np.eye(4))
        self.clock: Clock = clock or time.monotonic_ns
        self.latest_only = latest_only
        self.pending: LatestFrameSlot[PendingInput] = LatestFrameSlot()
        self.stats = ProcessingStats(config.stats_window)
        self.T_base_cam: np.ndarray | None = None
        self.state = "waiting"
        self.problems: collections.Counter = collections.Counter()   # problem kind -> count
        self.received = 0    # inputs (images, or synchronised RGB-D pairs) handed on for processing
        self.processed = 0
        self._lock = threading.RLock()        # processing, reset, maps
        self._sync_lock = threading.Lock()    # the RGB-D sync queues
        self._throttle = Throttle(config.warn_period)
        self._bad_encodings: set[str] = set()
        self._images: collections.deque = collections.deque()
        self._depths: collections.deque = collections.deque()
        self._last_stamp_ns: int | None = None
        self._last_image_ns: int | None = None   # receive time (clock of the caller)
        self._path_stamps: collections.deque = collections.deque(maxlen=config.path_max_length)
        self._path_poses: collections.deque = collections.deque(maxlen=config.path_max_length)
        self._frame_index = 0
        self.last_output: VoOutput | None = None

    @property
    def camera(self) -> CameraIntrinsics | None:
        """The pinhole camera the odometry sees (after rectification), None before a good camera_info."""
        model = self.camera_model
        return None if model is None else model.camera

    # ------------------------------------------------------------------ inputs
    @_guarded
    def on_camera_info(self, msg: Any, now_ns: int | None = None) -> None:
        """Keep the camera model of a good camera_info (maps built once per camera_info); log (throttled)
        and ignore a bad one."""
        try:
            model = self._cameras.update(msg)
        except (InvalidInputError, AttributeError, ValueError) as exc:
            self._problem("bad_camera_info", f"ignoring camera_info: {exc}", now_ns)
            return
        if self.camera_model is not None and model.camera != self.camera_model.camera:
            logger.info("camera_info changed: %s", model.camera)
        self.camera_model = model

    def set_pose(self, msg: Any) -> str:
        """``~/set_pose`` (geometry_msgs/PoseWithCovarianceStamped, like Nav2's initial pose): reset the
        odometry with base_link at the message's pose in ``frames.odom`` ("" reads as odom) or
        ``frames.map``. Returns a status line; raises InvalidInputError (one line) on a bad message."""
        frame_id, T = pose_with_covariance_stamped_to_pose(msg)
        frames = self.config.frames
        kind = {"": "odom", frames.odom: "odom", frames.map: "map"}.get(frame_id)
        if kind is None:
            raise InvalidInputError(f"set_pose in frame {frame_id!r}: expected {frames.odom!r} or {frames.map!r}")
        with self._lock:
            self.odometry.reset()
            self.odom_frames.set_pose(kind, T)
            self._previous = None
            self.state = "waiting"
        t = T[:3, 3]
        return f"odometry reset at ({t[0]:.3f}, {t[1]:.3f}, {t[2]:.3f}) in {frame_id or frames.odom}"

    @_guarded
    def on_image(self, msg: Any, now_ns: int | None = None) -> VoOutput | None:
        """An image message. Mono: processed now (``latest_only``: made the pending input, None);
        RGB-D: it waits for its depth."""
        now_ns = self._now(now_ns)
        self._last_image_ns = now_ns
        if self._read_stamp(msg, "image", now_ns) is None:
            return None
        if self.config.mode == "mono":
            return self._accept(msg, None, now_ns)
        with self._sync_lock:
            self._images.append(msg)
        return self._try_pair(now_ns)

    @_guarded
    def on_depth(self, msg: Any, now_ns: int | None = None) -> VoOutput | None:
        """A depth message (RGB-D mode): waits for the image of the same instant."""
        if self._read_stamp(msg, "depth", self._now(now_ns)) is None:
            return None
        with self._sync_lock:
            self._depths.append(msg)
        return self._try_pair(self._now(now_ns))

    @_guarded
    def on_pair(self, image_msg: Any, depth_msg: Any, now_ns: int | None = None) -> VoOutput | None:
        """An RGB-D pair synchronised by the caller (message_filters): processed now, or with
        ``latest_only`` made the pending input (None)."""
        now_ns = self._now(now_ns)
        self._last_image_ns = now_ns
        if self._read_stamp(image_msg, "image", now_ns) is None or self._read_stamp(depth_msg, "depth", now_ns) is None:
            return None
        return self._accept(image_msg, depth_msg, now_ns)

    def reset(self, reason: str = "requested") -> None:
        """Forget the trajectory, the stamp history and the sync queues; reset the odometry."""
        with self._lock:
            logger.warning("resetting odometry (%s)", reason)
            self.odometry.reset()
            with self._sync_lock:
                self._images.clear()
                self._depths.clear()
            self._last_stamp_ns = None
            self._path_stamps.clear()
            self._path_poses.clear()
            self.odom_frames.reset()
            self._map_stamps.reset()
            self._map_sent = None
            self._previous = None
            self.state = "waiting"

    # ------------------------------------------------------------------ maps
    def save_map(self, path: str) -> str:
        """Write the odometry's keyframe map (archive + window) to ``path``; returns a status line."""
        if not path:
            raise KpVoError("parameter ros.map_path is empty")
        with self._lock:
            repository = self.odometry.export_map()
        try:
            repository.save(path)
        except KpVoError:
            raise
        except (OSError, ValueError) as exc:
            raise MapFileError(f"cannot write map {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
        return f"map with {len(repository)} points from {repository.num_frames} keyframes saved to {path}"

    def load_map(self, path: str) -> str:
        """Load a map saved by ``save_map`` (or ``kp-vo map build``): the odometry restarts inside it and
        the map frame becomes the map's; odom holds its pose until the first frame placed in the map,
        where map -> odom is set (odom -> base_link does not jump)."""
        from kp_vo.reloc.repository import Repository

        if not path:
            raise KpVoError("parameter ros.map_path is empty")
        try:
            repository = Repository.load(path)
        except KpVoError:
            raise
        except (OSError, ValueError) as exc:
            raise MapFileError(f"cannot read map {path!r}: {getattr(exc, 'strerror', None) or exc}") from None
        with self._lock:
            self.odometry.load_map(repository)    # checks first: a refused map leaves the odometry as it is
            self.odom_frames.enter_map()
            self._previous = None
            logger.warning("map %s loaded: the odometry relocalizes in it", path)
        return f"loaded {repository!r}; the next frames relocalize in it"

    def reconfigure(self, config: NodeConfig) -> None:
        """Take a NodeConfig changed at run time (``kp_vo.bridge.parameters.apply_changes`` lets through only
        the parameters read per frame, the throttle period and the map -> odom tolerance)."""
        with self._lock:
            self.config = config
            self._throttle = Throttle(config.warn_period)
            self._map_stamps.tolerance_s = config.map_tf_tolerance

    def map_tf(self, now_ns: int | None = None, only_if_changed: bool = False) -> MapTransform | None:
        """The map -> odom to broadcast now: the latest correction, stamped ``now + map_tf_tolerance`` and
        strictly after the last one (``TransformStamper``). The node's ``map_tf_rate`` timer calls it, and
        after each output with ``only_if_changed`` (then None unless the correction differs from the last
        one broadcast). None too without ``publish_map_tf``."""
        if not (self.config.publish_map_tf and self.continuous_odom):
            return None
        with self._lock:
            T = self.odom_frames.T_map_odom.copy()
            if only_if_changed and self._map_sent is not None and np.array_equal(T, self._map_sent):
                return None
            stamp_ns = self._map_stamps.stamp(self._now(now_ns))
            self._map_sent = T
        return MapTransform(stamp_ns, self.config.frames.map, self.config.frames.odom, T)

    # ------------------------------------------------------------------ sync
    def _try_pair(self, now_ns: int) -> VoOutput | None:
        """Pair the newest arrival with the closest partner within the slop; drop older unpaired ones."""
        with self._sync_lock:
            pair = self._pop_pair(now_ns)
        return None if pair is None else self._accept(*pair, now_ns)

    def _pop_pair(self, now_ns: int) -> tuple[Any, Any] | None:
        """The (image, depth) pair of ``_try_pair`` taken out of the sync queues, or None."""
        slop_ns = int(self.config.sync_slop * 1e9) if self.config.approx_sync else 0
        for queue in (self._images, self._depths):
            while len(queue) > self.config.queue_size:
                queue.popleft()
                self._problem("sync_dropped", "RGB-D sync queue full: dropping the oldest message", now_ns)
        best = None
        for i, img in enumerate(self._images):
            ti = stamp_to_ns(img.header.stamp)
            for j, dep in enumerate(self._depths):
                dt = abs(ti - stamp_to_ns(dep.header.stamp))
                if dt <= slop_ns and (best is None or dt < best[0]):
                    best = (dt, i, j)
        if best is None:
            return None
        _, i, j = best
        image, depth = self._images[i], self._depths[j]
        for _ in range(i + 1):
            self._images.popleft()
        for _ in range(j + 1):
            self._depths.popleft()
        if i or j:
            logger.debug("RGB-D sync: dropped %d images and %d depths without a partner", i, j)
        return image, depth

    # ------------------------------------------------------------------ processing
    def _accept(self, image_msg: Any, depth_msg: Any | None, now_ns: int) -> VoOutput | None:
        """One input for processing: processed now, or with ``latest_only`` made the pending input."""
        if not self.latest_only:
            return self.process(image_msg, depth_msg, now_ns)
        self.received += 1
        if self.pending.put(PendingInput(image_msg, depth_msg, now_ns)) and self._throttle.ready("stale", now_ns):
            logger.warning("dropping stale frames: the odometry is slower than the camera (%d dropped so far)",
                           self.pending.dropped)
        return None

    @_guarded
    def process_pending(self, timeout_s: float | None = 0.0) -> VoOutput | None:
        """Process the newest pending input (``latest_only``), waiting up to ``timeout_s`` s for one
        (None: until one arrives or ``pending`` is closed); None when there is none or it is dropped."""
        item = self.pending.take(timeout_s)
        if item is None:
            return None
        return self._run(item.image, item.depth, item.received_ns, self.clock())

    @_guarded
    def process(self, image_msg: Any, depth_msg: Any | None = None, now_ns: int | None = None) -> VoOutput | None:
        """Run the odometry on one (image[, depth]) pair now; None when the frame is dropped."""
        now_ns = self._now(now_ns)
        self._last_image_ns = now_ns
        self.received += 1
        return self._run(image_msg, depth_msg, now_ns, now_ns)

    def _run(self, image_msg: Any, depth_msg: Any | None, received_ns: int, now_ns: int) -> VoOutput | None:
        """Process one input under the lock and record its timings: it arrived at ``received_ns`` and
        processing starts at ``now_ns``; its output is ready ``clock()``-measured processing time later."""
        with self._lock:
            start_ns = self.clock()
            out = self._process(image_msg, depth_msg, now_ns)
            processing_ns = self.clock() - start_ns
        if out is not None:
            self.stats.record(FrameTiming(received_ns, now_ns + processing_ns, processing_ns, out.stamp_ns,
                                          self.pending.dropped))
        return out

    def _process(self, image_msg: Any, depth_msg: Any | None, now_ns: int) -> VoOutput | None:
        """Steps 1 and 3-5 of the module docstring for one input; None when the frame is dropped."""
        stamp_ns = self._read_stamp(image_msg, "image", now_ns)
        if stamp_ns is None or (depth_msg is not None and self._read_stamp(depth_msg, "depth", now_ns) is None):
            return None
        if self.camera_model is None:
            self._problem("camera_info_missing", "waiting for camera_info: dropping image", now_ns)
            return None
        if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
            back_s = (self._last_stamp_ns - stamp_ns) * 1e-9
            if back_s > self.config.loop_reset_threshold:
                self.problems["loop_reset"] += 1
                self.reset(f"time jumped back by {back_s:.3f} s (bag loop?)")
            else:
                kind = "repeated stamp" if back_s == 0 else f"stamp {back_s:.3f} s before the previous one"
                self._problem("stamp_order", f"dropping image at {stamp_ns} ns: {kind}", now_ns, throttled=False)
                return None
        frame = self._make_frame(image_msg, depth_msg, stamp_ns, now_ns)
        if frame is None:
            return None
        T_base_cam = self._extrinsic(frame.meta["frame_id"], now_ns)
        if T_base_cam is None:
            return None
        try:
            result = self.odometry.process(frame)
        except InvalidInputError as exc:
            self._problem("bad_frame", f"odometry refused frame at {stamp_ns} ns: {exc}", now_ns, throttled=False)
            return None
        self._last_stamp_ns = stamp_ns
        self._frame_index += 1
        self.processed += 1
        return self._output(frame, result, T_base_cam)

    def _make_frame(self, image_msg: Any, depth_msg: Any | None, stamp_ns: int, now_ns: int) -> Frame | None:
        model = self.camera_model
        try:
            decode = compressed_image_to_numpy if self.config.image_transport == "compressed" else image_to_numpy
            image = model.image(decode(image_msg))
            depth = model.depth(depth_to_numpy(depth_msg)) if depth_msg is not None else None
            frame = Frame(self._frame_index, stamp_ns, image, model.camera, depth=depth,
                          meta={"frame_id": str(image_msg.header.frame_id)})
            frame.validate()
            if depth is not None and not np.any(depth > 0):
                self._problem("invalid_depth", f"depth at {stamp_ns} ns has no valid pixel (all NaN/inf/<=0): "
                              "the frame is tracked without depth", now_ns)
        except UnsupportedEncodingError as exc:
            self.problems["bad_encoding"] += 1
            if exc.encoding not in self._bad_encodings:
                self._bad_encodings.add(exc.encoding)
                logger.error("%s; such frames are dropped (logged once per encoding)", exc)
            return None
        except InvalidInputError as exc:
            self._problem("bad_frame", f"dropping frame at {stamp_ns} ns: {exc}", now_ns, throttled=False)
            return None
        return frame

    def _extrinsic(self, image_frame_id: str, now_ns: int) -> np.ndarray | None:
        if self.T_base_cam is not None:
            return self.T_base_cam
        if not self.config.frames.base_link:
            self.T_base_cam = np.eye(4)
            return self.T_base_cam
        camera_frame = self.config.frames.camera or image_frame_id
        edge = f"{self.config.frames.base_link} -> {camera_frame}"
        try:
            T = self.lookup_extrinsic(camera_frame)
            if T is not None:
                T = check_rigid(T, f"TF {edge}")
        except KpVoError as exc:
            self._problem("bad_extrinsic", f"refusing TF {edge}, dropping image: {exc}", now_ns)
            return None
        if T is None:
            self._problem("extrinsic_missing", f"waiting for TF {edge}: dropping image", now_ns)
            return None
        self.T_base_cam = T
        return self.T_base_cam

    def _output(self, frame: Frame, result: TrackingResult, T_base_cam: np.ndarray) -> VoOutput:
        """Step 5 of the module docstring: the tracker's pose as REP-105 outputs."""
        tracking_state = TrackingState(result.state)
        state = tracking_state.value
        if state != self.state and self.state != "waiting":
            logger.info("tracking state %s -> %s (frame at %d ns)", self.state, state, frame.stamp_ns)
        self.state = state
        T_world_cam = np.asarray(result.T_world_cam, dtype=np.float64)
        T_W_base, cov = camera_to_base(T_world_cam, np.asarray(result.covariance, dtype=np.float64), T_base_cam)
        tracking = tracking_state is TrackingState.TRACKING
        if self.continuous_odom:
            T_odom_base, jumped = self.odom_frames.update(tracking, T_W_base, result.relocalized)
            if jumped:
                logger.info("frame at %d ns re-anchored: map -> odom corrected, odom -> base_link continues",
                            frame.stamp_ns)
        else:
            T_odom_base, jumped = T_W_base, False
        if tracking_state is TrackingState.LOST:
            cov = cov + np.diag([self.config.lost_position_variance] * 3 + [self.config.lost_rotation_variance] * 3)
        twist = twist_cov = None
        if tracking and not jumped and self._previous is not None:
            stamp_prev, T_prev, cov_prev = self._previous
            twist, twist_cov = body_twist(T_prev, T_odom_base, cov_prev, cov, (frame.stamp_ns - stamp_prev) * 1e-9)
        self._previous = (frame.stamp_ns, T_odom_base, cov) if tracking else None
        frames = self.config.frames
        base = frames.base_link or frame.meta["frame_id"]
        self._path_stamps.append(frame.stamp_ns)
        self._path_poses.append(T_odom_base)
        status = f"{state} inliers={result.num_inliers} matches={result.num_matches}"
        if result.message:
            status += f" {result.message}"
        publish_tf = self.config.publish_tf and (tracking or self.config.lost_tf == "hold")
        out = VoOutput(frame.stamp_ns, frame.index, state, T_world_cam, T_odom_base, cov, frames.odom, base,
                       frames.camera or frame.meta["frame_id"], publish_tf, int(result.num_inliers),
                       status, list(self._path_stamps), list(self._path_poses),
                       self.odom_frames.T_map_odom.copy(), twist, twist_cov, result, frame)
        self.last_output = out
        return out

    # ------------------------------------------------------------------ diagnostics
    def diagnostics(self, now_ns: int | None = None) -> Diagnostics:
        """The node's health: camera_info missing, no image for N s, lost and/or dropping stale frames
        (during the stats window), or ok.

        values: state, frames_received, frames_processed, dropped_stale, dropped_<problem>, the
        measured processing rate (Hz), processing time and latency (ms) of ``ProcessingStats.values``,
        ``metric_scale`` ("true" / "false") and ``scale_source`` when the scale is known, and the
        inliers of the last output.
        """
        now_ns = self._now(now_ns)
        dropped_stale = self.pending.dropped
        values = {"state": self.state, "frames_received": self.received, "frames_processed": self.processed,
                  "dropped_stale": dropped_stale, **{f"dropped_{k}": v for k, v in sorted(dict(self.problems).items())},
                  **self.stats.values()}
        if self.scale is not None:
            values["metric_scale"] = "true" if self.scale.metric else "false"
            values["scale_source"] = self.scale.source
        if self.last_output is not None:
            values["inliers"] = self.last_output.num_inliers
        if self.camera is None:
            return Diagnostics("warn", "camera_info missing", values)
        if self._last_image_ns is None:
            return Diagnostics("warn", "no image received yet", values)
        idle_s = (now_ns - self._last_image_ns) * 1e-9
        if idle_s > self.config.no_image_timeout:
            return Diagnostics("warn", f"no image for {idle_s:.1f} s", values)
        warnings = ["lost"] if self.state == TrackingState.LOST.value else []
        if self.stats.dropped_in_window(dropped_stale) > 0:
            warnings.append(f"processing at {values.get('processing_rate_hz', 0.0):.1f} Hz, dropping stale frames: "
                            "camera faster than the odometry")
        if warnings:
            return Diagnostics("warn", "; ".join(warnings), values)
        return Diagnostics("ok", self.state, values)

    # ------------------------------------------------------------------ utilities
    def _read_stamp(self, msg: Any, what: str, now_ns: int | None) -> int | None:
        """The message's header stamp in ns, or None (one line, ``bad_stamp``) for an invalid one, or a zero
        one after a frame was processed (a header never filled in must not read as a bag loop; a bag whose
        clock starts at 0 still has its first frame processed)."""
        try:
            stamp_ns = stamp_to_ns(msg.header.stamp)
        except InvalidInputError as exc:
            self._problem("bad_stamp", f"dropping {what}: {exc}", now_ns, throttled=False)
            return None
        if stamp_ns == 0 and self._last_stamp_ns is not None:
            self._problem("bad_stamp", f"dropping {what}: header.stamp is zero (not set)", now_ns, throttled=False)
            return None
        return stamp_ns

    def _problem(self, kind: str, text: str, now_ns: int | None, throttled: bool = True) -> None:
        self.problems[kind] += 1
        if not throttled or self._throttle.ready(kind, self._now(now_ns)):
            logger.warning(text)

    def _now(self, now_ns: int | None) -> int:
        return self.clock() if now_ns is None else int(now_ns)

