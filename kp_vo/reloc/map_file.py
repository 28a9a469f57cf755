"""The on-disk keypoint-map format: versioned, checksummed, memory-mappable, never a pickle.

Layout (all integers little-endian)::

    offset 0   magic        8 bytes  b"KPVOMAP\\0"
    offset 8   version      uint32   FORMAT_VERSION
    offset 12  header_len   uint32   length of the JSON header in bytes
    offset 16  header       UTF-8 JSON {"metadata": {...}, "arrays": [{"name", "dtype", "shape",
                            "offset", "nbytes"}, ...], "data_end": int}
    ...        zero padding to a 64-byte boundary, then each array's raw little-endian C-order
               bytes at its recorded (64-byte aligned) absolute offset
    data_end   sha256       32 bytes, SHA-256 of every byte before it

A reader checks magic, version, the checksum (unless told not to; before it parses anything
else), header, array table, array bounds and file size before handing out arrays; anything wrong
raises ``MapFileError`` with one line.
Writes go to a temporary file in the destination folder, are fsync'ed and then renamed over
the destination with ``os.replace``, so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np

from kp_vo.errors import MapFileError
from kp_vo.fileio import atomic_path

logger = logging.getLogger(__name__)

MAGIC = b"KPVOMAP\0"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sII")  # magic, version, header_len
_ALIGN = 64
_DIGEST = 32
# dtypes a map file may hold (stored little-endian); anything else is refused on both sides.
_DTYPES = {"uint8", "int32", "int64", "float32", "float64"}


def _aligned(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _layout(arrays: dict[str, np.ndarray], metadata: dict) -> tuple[bytes, list[dict], int]:
    """JSON header bytes, the array table and the end of the data section (absolute offsets).

    The header length depends on the offsets it records, so iterate until it is stable.
    """
    header_len = 0
    while True:
        offset = _aligned(_PREFIX.size + header_len)
        table = []
        for name, arr in arrays.items():
            table.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                          "offset": offset, "nbytes": int(arr.nbytes)})
            offset = _aligned(offset + arr.nbytes)
        header = json.dumps({"metadata": metadata, "arrays": table, "data_end": offset},
                            sort_keys=True).encode("utf-8")
        if len(header) == header_len:
            return header, table, offset
        header_len = len(header)


def write_map_file(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict) -> None:
    """Atomically write ``arrays`` (name -> numpy array) and JSON-able ``metadata`` to ``path``.

    Raises MapFileError for an unsupported dtype or an unwritable destination; on any failure the
    previous file at ``path`` (if any) is left untouched and the temporary file is removed.
    """
    path = Path(path)
    prepared: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.name not in _DTYPES:
            raise MapFileError(f"array {name!r} has unsupported dtype {arr.dtype}; allowed: {sorted(_DTYPES)}")
        prepared[name] = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    try:
        header, table, data_end = _layout(prepared, metadata)
    except TypeError as exc:
        raise MapFileError(f"map metadata is not JSON-serialisable: {exc}") from None
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MapFileError(f"cannot write map {path}: folder {folder} does not exist")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            digest = hashlib.sha256()

            def put(data) -> None:
                digest.update(data)
                fh.write(data)

            put(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)))
            put(header)
            position = _PREFIX.size + len(header)
            for entry, arr in zip(table, prepared.values()):
                put(b"\0" * (entry["offset"] - position))
                put(memoryview(arr.reshape(-1).view(np.uint8)))
                position = entry["offset"] + entry["nbytes"]
            put(b"\0" * (data_end - position))
            fh.write(digest.digest())
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise MapFileError(f"cannot write map {path}: {exc.strerror or exc}") from None
    logger.debug("wrote map %s (%d bytes of arrays)", path, data_end)


def _file_sha256(path: Path, end: int) -> bytes:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        remaining = end
        while remaining > 0:
            chunk = fh.read(min(remaining, 1 << 22))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.digest()


def read_map_file(path: str | Path, mmap: bool = True, verify: bool = True) -> tuple[dict[str, np.ndarray], dict]:
    """Read a map file written by ``write_map_file``; returns (arrays, metadata).

    mmap:   arrays are read-only ``np.memmap`` views of the file (no copy) instead of in-memory copies.
    verify: check the SHA-256 of the whole file (reads it once; skip only for trusted files).
    Raises MapFileError naming the problem for a missing, foreign, truncated, corrupt or
    wrong-version file.
    """
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"map file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(_PREFIX.size)
        if len(prefix) < _PREFIX.size:
            raise MapFileError(f"{path} is not a kp_vo map (only {size} bytes)")
        magic, version, header_len = _PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise MapFileError(f"{path} is not a kp_vo map (bad magic {magic[:8]!r})")
        if version != FORMAT_VERSION:
            raise MapFileError(f"{path} has map format version {version}; this kp_vo reads version {FORMAT_VERSION}")
        if _PREFIX.size + header_len + _DIGEST > size:
            raise MapFileError(f"{path} is truncated: header needs {header_len} bytes, file has {size}")
        if verify:  # the digest closes the file: check it before trusting a byte of the header
            fh.seek(size - _DIGEST)
            if _file_sha256(path, size - _DIGEST) != fh.read(_DIGEST):
                raise MapFileError(f"{path} is corrupt: SHA-256 checksum mismatch")
        fh.seek(_PREFIX.size)
        table, data_end, metadata = _parse_header(path, fh.read(header_len))
    if size < data_end + _DIGEST:
        raise MapFileError(f"{path} is truncated: {size} bytes, expected {data_end + _DIGEST}")
    if size > data_end + _DIGEST:
        raise MapFileError(f"{path} has {size - data_end - _DIGEST} unexpected trailing bytes")
    arrays: dict[str, np.ndarray] = {}
    for entry in table:
        name, dtype, shape, offset, nbytes = _parse_array_entry(path, entry)
        if (math.prod(shape) * dtype.itemsize != nbytes or offset < 0 or offset + nbytes > data_end
                or max(shape, default=0) > data_end):  # no dimension of a stored array exceeds the file
            raise MapFileError(f"{path}: array {name!r} does not fit the file (shape {shape}, offset {offset})")
        if nbytes == 0:
            arrays[name] = np.zeros(shape, dtype)
        elif mmap:
            arrays[name] = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
        else:
            with open(path, "rb") as fh:
                fh.seek(offset)
                arrays[name] = np.frombuffer(fh.read(nbytes), dtype=dtype).reshape(shape).copy()
    return arrays, metadata


def _parse_header(path: Path, raw: bytes) -> tuple[list, int, dict]:
    """(array table, data_end, metadata) of a header, or MapFileError naming what is wrong with it."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise MapFileError(f"{path} has a corrupt header: {type(exc).__name__}") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays"), list) \
            or not isinstance(header.get("metadata"), dict) or not isinstance(header.get("data_end"), int):
        raise MapFileError(f"{path} has a corrupt header: expected {{arrays: list, metadata: object, data_end: int}}")
    return header["arrays"], header["data_end"], header["metadata"]


def _parse_array_entry(path: Path, entry) -> tuple[str, np.dtype, tuple[int, ...], int, int]:
    """(name, little-endian dtype, shape, offset, nbytes) of one array-table entry, checked."""
    try:
        name, dtype_name, shape = entry["name"], entry["dtype"], entry["shape"]
        offset, nbytes = entry["offset"], entry["nbytes"]
    except (KeyError, TypeError) as exc:
        raise MapFileError(f"{path} has a corrupt array table: missing {exc}") from None
    if not (isinstance(name, str) and isinstance(dtype_name, str) and isinstance(shape, list)
            and all(isinstance(s, int) and s >= 0 for s in shape)
            and isinstance(offset, int) and isinstance(nbytes, int)):
        raise MapFileError(f"{path} has a corrupt array table entry for {str(name)[:40]!r}")
    if dtype_name not in _DTYPES:
        raise MapFileError(f"{path}: array {name!r} has unsupported dtype {dtype_name}")
    return name, np.dtype(dtype_name).newbyteorder("<"), tuple(shape), offset, nbytes
