"""Live rate: the newest frame is processed, stale ones are dropped and counted, rate and latency are
measured (LatestFrameSlot, ProcessingStats, FrameWorker and VoNodeCore with ``latest_only``)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kp_vo.bridge.latest_frame import FrameWorker, LatestFrameSlot
from kp_vo.bridge.node_core import VoNodeCore
from kp_vo.bridge.node_config import NodeConfig
from kp_vo.errors import InvalidInputError

from test_bridge_node_core import SEC, FakeOdometry, depth, image, info  # noqa: E402  (test helpers)

MS = 1_000_000


class FakeClock:
    """The caller's clock (ns), set by the test."""

    def __init__(self, t: int = 0):
        self.t = t

    def __call__(self) -> int:
        return self.t


class TimedOdometry(FakeOdometry):
    """FakeOdometry that takes ``cost_ns`` of ``clock`` per frame."""

    def __init__(self, clock: FakeClock, cost_ns: int):
        super().__init__()
        self.clock, self.cost_ns = clock, cost_ns

    def process(self, frame):
        self.clock.t += self.cost_ns
        return super().process(frame)


def timed_core(cost_ms: int, latest_only: bool = True, t0: int = 10 * SEC, **kw):
    clock = FakeClock(t0)
    odo = TimedOdometry(clock, cost_ms * MS)
    core = VoNodeCore(NodeConfig(**kw), odo, lambda frame_id: np.eye(4), clock=clock, latest_only=latest_only)
    core.on_camera_info(info())
    return core, odo, clock


# ----------------------------------------------------------------------------- the slot

def test_slot_newest_wins_and_the_older_is_counted_stale():
    slot = LatestFrameSlot()
    assert slot.put(1) is False
    assert slot.put(2) is True          # 1 was never taken: stale
    assert slot.take() == 2 and slot.dropped == 1
    assert slot.take() is None          # taken once only


def test_slot_drops_nothing_when_the_consumer_keeps_up():
    slot = LatestFrameSlot()
    taken = []
    for k in range(100):
        assert slot.put(k) is False
        taken.append(slot.take())
    assert taken == list(range(100)) and slot.dropped == 0


def test_slot_take_waits_and_close_wakes_it():
    slot = LatestFrameSlot()
    start = time.monotonic()
    assert slot.take(timeout_s=0.05) is None and time.monotonic() - start >= 0.04
    got = []
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout_s=None)))
    waiter.start()
    slot.put(7)
    waiter.join(2.0)
    assert got == [7]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout_s=None)))
    waiter.start()
    slot.close()
    waiter.join(2.0)
    assert not waiter.is_alive() and got == [7, None] and slot.closed


def test_slot_threads_every_frame_processed_or_dropped_once_in_order():
    slot = LatestFrameSlot()
    n = 1000

    def produce():
        for k in range(n):
            slot.put(k)
            if k % 10 == 0:
                time.sleep(0.0002)

    producer = threading.Thread(target=produce)
    producer.start()
    taken = []
    while not taken or taken[-1] != n - 1:   # the last frame is never replaced, so it is taken
        item = slot.take(timeout_s=2.0)
        assert item is not None, "the consumer starved"
        taken.append(item)
        time.sleep(0.0005)                   # a consumer slower than the producer
    producer.join()
    assert all(a < b for a, b in zip(taken, taken[1:]))     # increasing: none twice, none out of order
    assert len(taken) + slot.dropped == n                   # each one either processed or counted dropped
    assert slot.dropped > 0 and len(taken) > 1


# ----------------------------------------------------------------------------- the core, measured

def test_rate_processing_time_and_latency_known_answers():
    core, odo, clock = timed_core(cost_ms=40, stats_window=5)
    for k in range(8):                       # camera at 10 Hz; the worker wakes 10 ms after each arrival
        clock.t = 10 * SEC + k * 100 * MS
        stamp = clock.t - 20 * MS            # the image was taken 20 ms before it arrived
        assert core.on_image(image(stamp)) is None
        clock.t += 10 * MS
        out = core.process_pending()
        assert out is not None and out.stamp_ns == stamp
    d = core.diagnostics(clock.t)
    assert d.level == "ok" and d.message == "tracking"
    v = d.values
    assert (v["frames_received"], v["frames_processed"], v["dropped_stale"]) == (8, 8, 0)
    assert v["processing_rate_hz"] == pytest.approx(10.0)
    assert v["processing_ms_mean"] == pytest.approx(40.0) and v["processing_ms_last"] == pytest.approx(40.0)
    assert v["latency_ms_mean"] == pytest.approx(50.0) and v["latency_ms_last"] == pytest.approx(50.0)
    assert v["stamp_age_ms_last"] == pytest.approx(70.0)
    for k in range(2):                       # frames now arrive 10 ms after the last output: 20 Hz
        clock.t += 10 * MS
        core.on_image(image(clock.t))
        assert core.process_pending() is not None
    # ready times of the last 5 frames are 100, 100, 50, 50 ms apart
    assert core.diagnostics(clock.t).values["processing_rate_hz"] == pytest.approx(4 / 0.3, abs=1e-3)
    assert core.diagnostics(clock.t).values["latency_ms_last"] == pytest.approx(40.0)


def test_camera_faster_than_odometry_drops_stale_frames_and_warns():
    core, odo, clock = timed_core(cost_ms=250, stats_window=3)
    t0 = clock.t
    core.on_image(image(t0))
    assert core.process_pending().stamp_ns == t0                 # the odometry is busy until t0 + 250 ms
    for pair in ((100, 200), (300, 400)):                       # two arrivals per processed frame
        for ms in pair:
            core.on_image(image(t0 + ms * MS), now_ns=t0 + ms * MS)
        assert core.process_pending().stamp_ns == t0 + pair[1] * MS   # the newest wins
    assert [f.stamp_ns - t0 for f in odo.frames] == [0, 200 * MS, 400 * MS]
    d = core.diagnostics(clock.t)
    v = d.values
    assert (v["frames_received"], v["frames_processed"], v["dropped_stale"]) == (5, 3, 2)
    assert v["frames_processed"] + v["dropped_stale"] == v["frames_received"]
    assert v["processing_rate_hz"] == pytest.approx(4.0)           # outputs at 250, 500, 750 ms
    assert v["processing_ms_mean"] == pytest.approx(250.0)
    assert v["latency_ms_mean"] == pytest.approx(300.0)            # 250, 300, 350 ms
    assert v["latency_ms_last"] == pytest.approx(350.0)
    assert d.level == "warn"
    assert d.message == "processing at 4.0 Hz, dropping stale frames: camera faster than the odometry"
    for k in range(3):                                             # the camera slows down to the odometry's rate
        core.on_image(image(clock.t))
        core.process_pending()
        # the warning lasts until a whole window (3 frames) ran without a drop
        assert ("dropping stale" in core.diagnostics(clock.t).message) == (k < 2)
    assert core.diagnostics(clock.t).level == "ok"


def test_stale_warning_joins_lost_and_yields_to_no_image():
    core, _, clock = timed_core(cost_ms=250)
    core.on_image(image(clock.t))
    core.on_image(image(clock.t + 100 * MS, value=0))   # replaces the first one; black = LOST
    core.process_pending()
    assert core.diagnostics(clock.t).message.startswith("lost; processing at ")
    assert core.diagnostics(clock.t + 10 * SEC).message == "no image for 10.2 s"


def test_nothing_dropped_when_the_worker_keeps_up_and_receiving_never_processes():
    core, odo, clock = timed_core(cost_ms=5)
    for k in range(50):
        clock.t += 100 * MS
        core.on_image(image(clock.t))
        assert not odo.frames[k:]                        # on_image only stored it
        assert core.process_pending() is not None
    d = core.diagnostics(clock.t)
    assert d.level == "ok" and d.values["dropped_stale"] == 0 and d.values["frames_processed"] == 50


def test_without_latest_only_every_frame_is_processed_in_order():
    """The bag runner's path: a slow odometry still gets every frame, in order, when it arrives."""
    core, odo, clock = timed_core(cost_ms=250, latest_only=False)
    t0 = clock.t
    outs = [core.on_image(image(t0 + k * 100 * MS), now_ns=t0 + k * 100 * MS) for k in range(6)]
    assert [o.stamp_ns - t0 for o in outs] == [k * 100 * MS for k in range(6)]
    v = core.diagnostics(t0 + SEC).values
    assert (v["frames_received"], v["frames_processed"], v["dropped_stale"]) == (6, 6, 0)
    assert v["processing_rate_hz"] == pytest.approx(10.0)     # by the caller's now_ns
    assert v["latency_ms_mean"] == pytest.approx(250.0)       # processed on arrival: latency = processing
    assert core.process_pending() is None


def test_rgbd_pairs_feed_the_slot():
    core, odo, clock = timed_core(cost_ms=10, mode="rgbd")
    for s in (SEC, 2 * SEC):
        assert core.on_image(image(s, encoding="rgb8")) is None
        assert core.on_depth(depth(s + 5 * MS)) is None           # paired, pending
    assert core.pending.dropped == 1
    out = core.process_pending()
    assert out.stamp_ns == 2 * SEC and odo.frames[-1].depth is not None
    core.on_pair(image(3 * SEC, encoding="rgb8"), depth(3 * SEC))  # synchronised by message_filters
    assert core.process_pending().stamp_ns == 3 * SEC
    assert core.received == 3 and core.processed == 2


# ----------------------------------------------------------------------------- the worker thread

class SleepyOdometry(FakeOdometry):
    def process(self, frame):
        time.sleep(0.002)
        return super().process(frame)


def test_worker_thread_processes_newest_frames_and_accounts_for_every_one():
    odo = SleepyOdometry()
    core = VoNodeCore(NodeConfig(), odo, lambda frame_id: np.eye(4), latest_only=True)
    core.on_camera_info(info())
    published = []
    worker = FrameWorker(core, published.append)
    worker.start()
    n = 300
    for k in range(1, n + 1):
        core.on_image(image(k * SEC // 100))
        time.sleep(0.0002)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and (not published or published[-1].stamp_ns != n * SEC // 100):
        time.sleep(0.005)
    worker.stop()
    stamps = [o.stamp_ns for o in published]
    assert stamps[-1] == n * SEC // 100 and all(a < b for a, b in zip(stamps, stamps[1:]))
    assert core.received == n and core.processed == len(published) == len(odo.frames)
    assert core.processed + core.pending.dropped == n and core.pending.dropped > 0
    assert not core.problems                       # no drop other than stale ones


def test_worker_survives_a_failing_publish_and_stops():
    core = VoNodeCore(NodeConfig(), FakeOdometry(), lambda frame_id: np.eye(4), latest_only=True)
    core.on_camera_info(info())
    published, done = [], threading.Event()

    def publish(out):
        published.append(out.stamp_ns)
        if len(published) == 1:
            raise RuntimeError("publisher gone")
        done.set()

    worker = FrameWorker(core, publish)
    worker.start()
    core.on_image(image(SEC))
    deadline = time.monotonic() + 5.0
    while len(published) < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    core.on_image(image(2 * SEC))
    assert done.wait(5.0) and published == [SEC, 2 * SEC]
    worker.stop()
    assert not worker._thread.is_alive()


def test_stats_window_validated():
    with pytest.raises(InvalidInputError, match="stats_window"):
        NodeConfig(stats_window=1)
