"""Nearest-neighbour search over map descriptors with FAISS, the index kind chosen by map size.

- metric "l2" (float32, L2-normalised descriptors): ``IndexFlatL2`` (exact) up to
  ``IndexConfig.exact_max`` descriptors, above it an IVF index (inverted lists over a k-means coarse
  quantizer, ``nlist ~ 2 sqrt(N)``, ``nprobe`` lists scanned per query) whose lists hold 8-bit
  scalar-quantized codes (``IndexIVFScalarQuantizer``, 4x smaller than float32 and faster to scan;
  ``ivf_codes="flat"`` keeps float32: ``IndexIVFFlat``), or ``IndexHNSWFlat`` when ``kind="hnsw"``.
- metric "hamming" (uint8 packed bits): ``IndexBinaryFlat`` (exact) or ``IndexBinaryIVF``
  (``binary_nprobe`` lists scanned) or ``IndexBinaryHNSW``.

Distances returned are squared L2 for "l2" (approximate, from the 8-bit codes, with "sq8") and bit
counts for "hamming". Defaults were chosen with ``python -m kp_vo.reloc.scale_benchmark`` (figures in
kp_vo/reloc/README.md): at 10^6 descriptors a 300-descriptor query frame stays under 20 ms on one
core of this 2-core machine.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from kp_vo.errors import InvalidInputError

logger = logging.getLogger(__name__)

INDEX_KINDS = ("auto", "flat", "ivf", "hnsw")
IVF_CODES = ("sq8", "flat")


@dataclass
class IndexConfig:
    kind: str = "auto"        # "auto" picks "flat" up to exact_max descriptors, else "ivf"
    exact_max: int = 10_000   # largest map searched exhaustively under "auto"
    nlist: int = 0            # IVF lists; 0 = 2 * sqrt(N) clamped to [16, 65536]
    nprobe: int = 2           # float IVF lists scanned per query (recall/latency knob; see kp_vo/reloc/README.md)
    binary_nprobe: int = 8    # the same for binary (Hamming) IVF: its lists are cheap to scan, its recall needs more
    ivf_codes: str = "sq8"    # float IVF list storage: "sq8" (8-bit scalar quantizer) or "flat" (float32)
    train_size: int = 0       # descriptors sampled to train the IVF quantizer; 0 = 40 per list (>= 50k)
    kmeans_iterations: int = 10  # k-means iterations of the IVF quantizer training
    hnsw_m: int = 32          # HNSW graph degree
    ef_search: int = 64       # HNSW search breadth
    ef_construction: int = 80
    threads: int = 1          # FAISS OpenMP threads (process-wide); 0 = leave FAISS's default. One thread is
                              # fastest for per-frame batches: OpenMP spin-waits cost up to 30x on a busy CPU


def choose_kind(num: int, config: IndexConfig) -> str:
    """The index kind ("flat" | "ivf" | "hnsw") used for ``num`` descriptors under ``config``."""
    if config.kind not in INDEX_KINDS:
        raise InvalidInputError(f"unknown index kind {config.kind!r}; expected one of {INDEX_KINDS}")
    if config.ivf_codes not in IVF_CODES:
        raise InvalidInputError(f"unknown ivf_codes {config.ivf_codes!r}; expected one of {IVF_CODES}")
    if config.kind != "auto":
        return config.kind
    return "flat" if num <= config.exact_max else "ivf"


def _nlist(num: int, config: IndexConfig) -> int:
    if config.nlist > 0:
        return config.nlist
    return int(min(65536, max(16, 2 * round(math.sqrt(num)))))


def _set_threads(config: IndexConfig) -> None:
    """FAISS's OpenMP thread count for the calling thread (an OpenMP setting is per thread: an index
    built in a background thread and used in another sets it again there)."""
    import faiss  # lazy: imported with the tracker, FAISS is needed only once a map is indexed
    if config.threads > 0 and faiss.omp_get_max_threads() != config.threads:
        faiss.omp_set_num_threads(config.threads)


class DescriptorIndex:
    """A FAISS index over (N, D) float32 or (N, B) uint8 descriptors, row i = map point i.

    Use ``DescriptorIndex.build(descriptors, metric, config)``; ``search(queries, k)`` returns
    (distances (Q, k) float32, ids (Q, k) int64) with id -1 where fewer than k results exist.
    """

    def __init__(self, index, metric: str, kind: str, dim: int, config: IndexConfig):
        self.faiss_index = index
        self.metric = metric
        self.kind = kind
        self.dim = dim  # float dimension (l2) or bytes per descriptor (hamming)
        self.config = config
        _set_threads(config)
        self._apply_search_params()

    def __len__(self) -> int:
        return int(self.faiss_index.ntotal)

    @staticmethod
    def _check(descriptors: np.ndarray, metric: str, dim: int | None = None) -> np.ndarray:
        if metric == "l2":
            arr = np.ascontiguousarray(descriptors, dtype=np.float32)
        elif metric == "hamming":
            if np.asarray(descriptors).dtype != np.uint8:
                raise InvalidInputError(f"hamming descriptors must be uint8 packed bits, got {np.asarray(descriptors).dtype}")
            arr = np.ascontiguousarray(descriptors)
        else:
            raise InvalidInputError(f"unknown descriptor metric {metric!r}")
        if arr.ndim != 2:
            raise InvalidInputError(f"descriptors must be (N, D), got shape {arr.shape}")
        if dim is not None and arr.shape[1] != dim:
            raise InvalidInputError(f"descriptor width {arr.shape[1]} differs from the index's {dim}")
        return arr

    @classmethod
    def build(cls, descriptors: np.ndarray, metric: str, config: IndexConfig | None = None,
              rng: np.random.Generator | None = None) -> "DescriptorIndex":
        """Build and fill an index for ``descriptors`` ((N, D) f32 for "l2", (N, B) uint8 for "hamming")."""
        import faiss  # lazy: imported with the tracker, FAISS is needed only once a map is indexed
        config = config or IndexConfig()
        arr = cls._check(descriptors, metric)
        _set_threads(config)
        num, width = arr.shape
        kind = choose_kind(num, config)
        if kind == "ivf" and num < 16:
            kind = "flat"  # too few points to train a quantizer
        bits = width * 8
        if kind == "flat":
            index = faiss.IndexFlatL2(width) if metric == "l2" else faiss.IndexBinaryFlat(bits)
        elif kind == "hnsw":
            if metric == "l2":
                index = faiss.IndexHNSWFlat(width, config.hnsw_m)
            else:
                index = faiss.IndexBinaryHNSW(bits, config.hnsw_m)
            index.hnsw.efConstruction = config.ef_construction
        else:
            nlist = min(_nlist(num, config), max(1, num // 39))  # FAISS wants >= 39 points per list
            if metric == "l2":
                quantizer = faiss.IndexFlatL2(width)
                if config.ivf_codes == "sq8":
                    index = faiss.IndexIVFScalarQuantizer(quantizer, width, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                          faiss.METRIC_L2)
                else:
                    index = faiss.IndexIVFFlat(quantizer, width, nlist, faiss.METRIC_L2)
            else:
                quantizer = faiss.IndexBinaryFlat(bits)
                index = faiss.IndexBinaryIVF(quantizer, bits, nlist)
            index.own_fields = True
            quantizer.this.disown()
            index.cp.niter = config.kmeans_iterations
            rng = rng or np.random.default_rng(0)
            train_size = config.train_size or max(50_000, 40 * nlist)
            sample = arr if num <= train_size else arr[np.sort(rng.choice(num, train_size, replace=False))]
            index.train(sample)
        if num:
            index.add(arr)
        logger.debug("built %s %s index over %d descriptors", kind, metric, num)
        return cls(index, metric, kind, width, config)

    def _apply_search_params(self) -> None:
        index = self.faiss_index
        if self.kind == "ivf":
            index.nprobe = self.config.nprobe if self.metric == "l2" else self.config.binary_nprobe
        elif self.kind == "hnsw":
            index.hnsw.efSearch = self.config.ef_search

    def add(self, descriptors: np.ndarray) -> None:
        """Append descriptors; their ids continue after the current ``len(self)``."""
        arr = self._check(descriptors, self.metric, self.dim)
        if len(arr):
            _set_threads(self.config)
            self.faiss_index.add(arr)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """k nearest map descriptors of each query: (distances (Q, k) f32, ids (Q, k) int64, -1 = none)."""
        arr = self._check(queries, self.metric, self.dim)
        k = int(k)
        if k < 1:
            raise InvalidInputError(f"k must be >= 1, got {k}")
        if len(arr) == 0 or len(self) == 0:
            return np.full((len(arr), k), np.inf, np.float32), np.full((len(arr), k), -1, np.int64)
        _set_threads(self.config)
        distances, ids = self.faiss_index.search(arr, k)
        return distances.astype(np.float32), ids.astype(np.int64)

    def serialize(self) -> np.ndarray:
        """The index as a uint8 array (FAISS's own binary format, not a pickle) for a map file."""
        import faiss  # lazy: imported with the tracker, FAISS is needed only once a map is indexed
        if self.metric == "l2":
            return faiss.serialize_index(self.faiss_index)
        return faiss.serialize_index_binary(self.faiss_index)

    @classmethod
    def deserialize(cls, data: np.ndarray, metric: str, kind: str, dim: int,
                    config: IndexConfig | None = None) -> "DescriptorIndex":
        """An index from ``serialize``'s bytes; InvalidInputError when it indexes descriptors of another
        width than ``dim`` (FAISS would only assert at the first search)."""
        import faiss  # lazy: imported with the tracker, FAISS is needed only once a map is indexed
        data = np.ascontiguousarray(data, dtype=np.uint8)
        index = faiss.deserialize_index(data) if metric == "l2" else faiss.deserialize_index_binary(data)
        width = index.d if metric == "l2" else index.d // 8
        if width != dim:
            raise InvalidInputError(f"the stored index holds {width}-wide descriptors, the map {dim}-wide ones")
        return cls(index, metric, kind, dim, config or IndexConfig())
