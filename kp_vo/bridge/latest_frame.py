"""The live-rate policy of the nodes, ROS-free: process the newest frame, drop stale ones, measure.

A camera faster than the odometry must not make the odometry fall further and further behind.
The receive side puts every input (an image, or a synchronised image + depth pair) into a
``LatestFrameSlot`` that holds one pending input: a newer arrival replaces an unprocessed older
one, which is counted as dropped (stale). The processing side (a ``FrameWorker`` thread) takes
the newest pending input whenever it is free, so receiving never waits for the odometry.
``ProcessingStats`` keeps the timings of the last N processed frames: processing rate,
processing time per frame, latency (received -> output ready) and stamp age.

Times are integer nanoseconds of the caller's clock (``VoNodeCore.clock``).
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

if TYPE_CHECKING:
    from kp_vo.bridge.node_core import VoNodeCore, VoOutput

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LatestFrameSlot(Generic[T]):
    """A thread-safe holder of the newest unprocessed input (one slot).

    ``put`` never waits; ``take`` waits for an input (up to a timeout). Items must not be None.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._dropped = 0
        self._closed = False

    @property
    def dropped(self) -> int:
        """Inputs replaced by a newer one before they were taken (stale drops) so far."""
        with self._cond:
            return self._dropped

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def put(self, item: T) -> bool:
        """Make ``item`` the pending input; True when it replaced an untaken older one (counted as dropped)."""
        with self._cond:
            replaced = self._item is not None
            self._dropped += int(replaced)
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout_s: float | None = 0.0) -> T | None:
        """Remove and return the pending input, waiting up to ``timeout_s`` s for one (None: until one
        arrives or the slot is closed); None when there is none or the slot is closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake every waiting ``take``; from now on ``take`` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True)
class PendingInput:
    """One input waiting in the slot: the image message, the depth message (RGB-D) or None, and
    ``received_ns``, when it arrived (caller's clock)."""

    image: Any
    depth: Any
    received_ns: int


@dataclass(frozen=True)
class FrameTiming:
    """The timings of one processed frame, ns of the caller's clock."""

    received_ns: int     # the input arrived
    ready_ns: int        # its output was ready
    processing_ns: int   # spent processing it (conversion, odometry, outputs)
    stamp_ns: int        # header stamp of the image
    dropped_total: int   # stale drops counted until its output was ready


class ProcessingStats:
    """The timings of the last ``window`` processed frames (thread-safe)."""

    def __init__(self, window: int):
        self._lock = threading.Lock()
        self._frames: collections.deque[FrameTiming] = collections.deque(maxlen=window)
        self._dropped_before = 0   # stale drops counted when the frame before the window was ready

    def record(self, timing: FrameTiming) -> None:
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self._dropped_before = self._frames[0].dropped_total
            self._frames.append(timing)

    def values(self) -> dict[str, float]:
        """Measured values over the window ({} before the first processed frame).

        processing_rate_hz: processed frames per second between the first and the last output of
        the window (from two frames on); processing_ms_mean / _last: processing time per frame;
        latency_ms_mean / _last: input received -> output ready; stamp_age_ms_last: output ready
        minus the image's header stamp (meaningful when the clock is the stamps' time base).
        """
        with self._lock:
            frames = list(self._frames)
        if not frames:
            return {}
        last = frames[-1]
        values = {
            "processing_ms_mean": _ms(sum(f.processing_ns for f in frames) / len(frames)),
            "processing_ms_last": _ms(last.processing_ns),
            "latency_ms_mean": _ms(sum(f.ready_ns - f.received_ns for f in frames) / len(frames)),
            "latency_ms_last": _ms(last.ready_ns - last.received_ns),
            "stamp_age_ms_last": _ms(last.ready_ns - last.stamp_ns),
        }
        span_ns = last.ready_ns - frames[0].ready_ns
        if span_ns > 0:
            values["processing_rate_hz"] = round((len(frames) - 1) * 1e9 / span_ns, 3)
        return values

    def dropped_in_window(self, dropped_total: int) -> int:
        """Stale drops since the output before the window, given the total ``dropped_total`` now: zero
        once a whole window of frames was processed without a drop."""
        with self._lock:
            return dropped_total - self._dropped_before


def _ms(ns: float) -> float:
    return round(ns * 1e-6, 3)


class FrameWorker:
    """A thread that processes the newest pending input of a ``VoNodeCore`` (built with
    ``latest_only``) and hands each output to ``publish``.

    An exception while processing or publishing one frame is logged with its traceback and the
    worker goes on with the next frame. ``stop`` closes the core's slot (a pending input is not
    processed) and waits for the frame in progress.
    """

    def __init__(self, core: VoNodeCore, publish: Callable[[VoOutput], None], name: str = "kp_vo_frames"):
        self.core, self.publish = core, publish
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Close the slot and wait up to ``timeout_s`` s for the thread to end."""
        self.core.pending.close()
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self.core.pending.closed:
            try:
                out = self.core.process_pending(timeout_s=None)
                if out is not None:
                    self.publish(out)
            except Exception:  # noqa: BLE001  (one failing frame must not stop the odometry)
                logger.exception("processing the newest frame failed; going on with the next one")
