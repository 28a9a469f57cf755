"""Local mapping off the tracking path: one background job at a time, joined at a fixed point.

The tracker hands the work a new keyframe needs (triangulating its new points, bundle-adjusting the
window) to a :class:`MappingWorker` and returns the frame's pose at once. The next frame's keypoints
are extracted while that job runs; the tracker then calls :meth:`MappingWorker.wait` before it reads
the map again. The job always runs on the same inputs and is always joined at the same point of the
next ``process`` call, so the results do not depend on thread timing: offline runs stay
deterministic for a fixed seed.

:class:`BlasLimit` keeps numpy's BLAS at a fixed thread count for as long as the tracking call or a
mapping job needs it (reference-counted, so one never restores the other's setting mid-job). It is
acquired and released on the tracking thread only: OpenBLAS ignores a thread count restored from
another thread, so a job's share is released by the :meth:`MappingWorker.wait` that joins it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from typing import Callable

from threadpoolctl import ThreadpoolController


class BlasLimit:
    """Reference-counted BLAS thread limit: held from the first ``acquire`` to the last ``release``.

    ``threads <= 0`` leaves BLAS alone.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self._controller = ThreadpoolController() if threads > 0 else None
        self._lock = threading.Lock()
        self._users = 0
        self._stack: ExitStack | None = None

    def acquire(self) -> None:
        if self._controller is None:
            return
        with self._lock:
            if self._users == 0:
                self._stack = ExitStack()
                self._stack.enter_context(self._controller.limit(limits=self.threads, user_api="blas"))
            self._users += 1

    def release(self) -> None:
        if self._controller is None:
            return
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._stack is not None:
                self._stack.close()
                self._stack = None


class MappingWorker:
    """Runs at most one mapping job in a background thread (or inline when ``asynchronous`` is False)."""

    def __init__(self, asynchronous: bool, blas: BlasLimit):
        self.asynchronous = asynchronous
        self._blas = blas
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future | None = None

    def submit(self, job: Callable[[], None]) -> None:
        """Start ``job`` (after the previous one finished); inline in synchronous mode."""
        self.wait()
        if not self.asynchronous:
            job()
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kp_vo_mapping")
        self._blas.acquire()
        self._pending = self._executor.submit(job)

    def wait(self) -> float:
        """Block until the pending job is done (re-raising its exception); returns the seconds waited."""
        if self._pending is None:
            return 0.0
        t = time.perf_counter()
        pending, self._pending = self._pending, None
        try:
            pending.result()
        finally:
            self._blas.release()
        return time.perf_counter() - t

    @property
    def busy(self) -> bool:
        return self._pending is not None
