"""A descriptor index kept current over a growing descriptor table without stalling the table's writer.

The index in use is extended with each append (O(new rows)). When the table outgrows it (a flat
index past ``IndexConfig.exact_max``, an IVF index trained on less than half of today's rows, so
its ``nlist`` is too small), a better index is trained and filled from a snapshot of the rows in a
background thread (FAISS releases the GIL), brought up to date there with the rows appended
meanwhile (until at most ``CATCH_UP_ROWS`` are missing) and swapped in at the next append or query.
Until then queries use the index in use, so neither an append nor a relocalization waits for k-means.
Only a table that was never indexed and has just become IVF-sized (e.g. a large map loaded without a
stored index) makes its first query wait for the build.

Every method is called from the thread that owns the table; the snapshot rows are never modified
by appends (``kp_vo.reloc.repository`` hands out views of filled rows only).
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from kp_vo.reloc.index import DescriptorIndex, IndexConfig, choose_kind

logger = logging.getLogger(__name__)

REBUILD_GROWTH = 2    # an IVF index is retrained once the table has this many times its training rows
CATCH_UP_ROWS = 1000  # a finished build lagging by more rows is brought up to date in the background first


class _Build:
    """A new index (``DescriptorIndex.build`` of a snapshot, or a built index extended with the rows
    appended since) made in a daemon thread; ``trained_rows``: the rows its quantizer was trained on."""

    def __init__(self, job, trained_rows: int):
        self.trained_rows = trained_rows
        self.result: DescriptorIndex | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(job,), daemon=True, name="kp_vo_index_build")
        self.thread.start()

    def _run(self, job) -> None:
        try:
            self.result = job()
        except BaseException as exc:  # re-raised in the owner thread when the build is adopted
            self.error = exc

    @classmethod
    def new(cls, descriptors: np.ndarray, metric: str, config: IndexConfig) -> "_Build":
        return cls(lambda: DescriptorIndex.build(descriptors, metric, config), len(descriptors))

    @classmethod
    def catch_up(cls, index: DescriptorIndex, missing: np.ndarray, trained_rows: int) -> "_Build":
        def job() -> DescriptorIndex:
            index.add(missing)
            return index
        return cls(job, trained_rows)


class LiveIndex:
    """The index of a growing (N, D) descriptor table; pass the table's current rows to every call."""

    def __init__(self, metric: str, config: IndexConfig, index: DescriptorIndex | None = None):
        self.metric = metric
        self.config = config
        self.index = index                               # the index queries use (None until first needed)
        self._trained_rows = len(index) if index is not None else 0
        self._build: _Build | None = None

    def extend(self, descriptors: np.ndarray) -> None:
        """After rows were appended: add them to the index in use; start a better build when outgrown."""
        self._adopt(descriptors)
        if self.index is not None:
            self._catch_up(descriptors)
        self._maybe_rebuild(descriptors)

    def current(self, descriptors: np.ndarray) -> DescriptorIndex:
        """The index to query now, covering every row."""
        self._adopt(descriptors)
        if self.index is None:
            if self._build is None and choose_kind(len(descriptors), self.config) != "flat":
                self._build = _Build.new(descriptors, self.metric, self.config)
            if self._build is not None:
                self._build.thread.join()
                self._adopt(descriptors, wait=True)
            else:
                self._install(DescriptorIndex.build(descriptors, self.metric, self.config), len(descriptors))
        self._catch_up(descriptors)
        return self.index

    def finished(self, descriptors: np.ndarray) -> DescriptorIndex:
        """The index once any background build has finished (for saving a map)."""
        if self._build is not None:
            self._build.thread.join()
            self._adopt(descriptors, wait=True)
        return self.current(descriptors)

    def _install(self, index: DescriptorIndex, trained_rows: int) -> None:
        self.index, self._trained_rows = index, trained_rows

    def _adopt(self, descriptors: np.ndarray, wait: bool = False) -> None:
        """Swap in a finished build, or first send it back to catch up when it lags by many rows
        (``wait``: catch up here instead, as the caller waits anyway)."""
        build = self._build
        if build is None or build.thread.is_alive():
            return
        self._build = None
        if build.error is not None:
            raise build.error
        index = build.result
        if not wait and len(descriptors) - len(index) > CATCH_UP_ROWS:
            self._build = _Build.catch_up(index, descriptors[len(index):], build.trained_rows)
            return
        logger.debug("background %s index over %d rows adopted", index.kind, len(index))
        self._install(index, build.trained_rows)

    def _catch_up(self, descriptors: np.ndarray) -> None:
        if len(self.index) < len(descriptors):
            self.index.add(descriptors[len(self.index):])

    def _maybe_rebuild(self, descriptors: np.ndarray) -> None:
        rows = len(descriptors)
        kind = choose_kind(rows, self.config)
        if self._build is not None or kind == "flat":
            return
        current = self.index.kind if self.index is not None else None
        if current == kind and not (kind == "ivf" and rows >= REBUILD_GROWTH * self._trained_rows):
            return
        logger.debug("building a %s index over %d rows in the background (in use: %s)", kind, rows, current)
        self._build = _Build.new(descriptors, self.metric, self.config)
