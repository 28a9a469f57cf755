"""Reading and writing bags with ``rosbags`` (no ROS needed).

Reading: rosbag2 (sqlite3 or mcap) folders and ROS 1 ``.bag`` files through ``AnyReader``;
messages are deserialised into rosbags message objects that carry the ROS field names, so
``kp_vo.bridge.conversions`` reads them like real ROS messages (ROS 1 upper-case CameraInfo
fields included).

A bag that cannot be read (truncated, corrupt database or chunk, bad ``metadata.yaml``) is one
DatasetError naming it, whether that shows when it is opened or while its messages are read.

Writing: rosbag2 (format version 8, sqlite3 or mcap) with ROS 2 Humble message definitions;
connections are added on first use of a topic.
"""

from __future__ import annotations

import logging
import sqlite3
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import apsw
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag1 import ReaderError as Bag1ReaderError
from rosbags.rosbag2 import ReaderError as Bag2ReaderError
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_typestore

from kp_vo.bridge.conversions import MessageFactory, rosbags_factory
from kp_vo.errors import DatasetError

logger = logging.getLogger(__name__)

_TYPESTORE = None

# What rosbags and its storage back ends raise on a file that is not a readable bag.
READ_ERRORS = (AnyReaderError, Bag1ReaderError, Bag2ReaderError, apsw.Error, sqlite3.Error, struct.error,
               EOFError, OSError)


def typestore() -> Any:
    """The ROS 2 Humble type store (built once)."""
    global _TYPESTORE
    if _TYPESTORE is None:
        _TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)
    return _TYPESTORE


def factory() -> MessageFactory:
    """Message classes of the ROS 2 Humble type store, by ``pkg/msg/Name``."""
    return rosbags_factory(typestore())


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


@contextmanager
def _readable(path: Path, doing: str) -> Iterator[None]:
    """Turn rosbags' read errors inside the block into one DatasetError naming ``path``."""
    try:
        yield
    except READ_ERRORS as exc:
        raise DatasetError(f"cannot {doing} bag {path}: {_one_line(exc)}") from None


@contextmanager
def open_reader(path: str | Path) -> Iterator[AnyReader]:
    """An opened AnyReader over a rosbag2 folder or ROS 1 bag; DatasetError when it is no readable bag
    (also for read errors inside the block, e.g. a truncated file found while reading messages)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"bag {path} does not exist")
    with _readable(path, "open"):
        reader = AnyReader([path], default_typestore=typestore())
        reader.open()
    try:
        with _readable(path, "read"):
            yield reader
    finally:
        reader.close()


def bag_topics(path: str | Path) -> dict[str, str]:
    """{topic: message type} of a rosbag2 folder or ROS 1 bag."""
    with open_reader(path) as reader:
        return {c.topic: c.msgtype for c in reader.connections}


def message_counts(path: str | Path) -> dict[str, int]:
    """{topic: number of messages} of a rosbag2 folder or ROS 1 bag (from its index, nothing is read)."""
    counts: dict[str, int] = {}
    with open_reader(path) as reader:
        for c in reader.connections:
            counts[c.topic] = counts.get(c.topic, 0) + c.msgcount
    return counts


def read_messages(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """Yield (topic, msgtype, log_time_ns, message) in log-time order.

    ``topics``: only these topics (all when None). A message that does not deserialise is
    logged and skipped.
    """
    with open_reader(path) as reader:
        connections = [c for c in reader.connections if topics is None or c.topic in topics]
        if not connections:   # (rosbags reads every topic when given no connection)
            return
        for connection, log_time, raw in reader.messages(connections=connections):
            try:
                msg = reader.deserialize(raw, connection.msgtype)
            except AnyReaderError as exc:
                logger.error("skipping a %s message on %s that does not deserialise: %s",
                             connection.msgtype, connection.topic, exc)
                continue
            yield connection.topic, connection.msgtype, int(log_time), msg


def _qos(reliable: bool, transient_local: bool) -> Qos:
    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1 if transient_local else 10,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class BagWriter:
    """Write ROS 2 Humble messages into a new rosbag2 folder.

    >>> with BagWriter(out, storage="mcap") as bag:
    ...     bag.write("/odom", odometry_msg(bag.factory, ...), stamp_ns)

    ``/tf_static`` is offered with transient-local durability, as ``ros2 bag play`` expects.
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3"):
        plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
        if storage not in plugins:
            raise DatasetError(f"unknown bag storage {storage!r}; use sqlite3 or mcap")
        self.path = Path(path)
        self.factory = factory()
        try:
            self._writer = Writer(self.path, version=8, storage_plugin=plugins[storage])
        except WriterError as exc:
            raise DatasetError(f"cannot write bag {self.path}: {exc}") from exc
        self._connections: dict[str, Any] = {}
        self.count = 0

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._writer.close()

    def write(self, topic: str, msg: Any, log_time_ns: int) -> None:
        """Serialise ``msg`` (a rosbags message of this writer's factory) on ``topic``."""
        msgtype = msg.__msgtype__
        connection = self._connections.get(topic)
        if connection is None:
            static = topic == "/tf_static"
            connection = self._writer.add_connection(
                topic, msgtype, typestore=typestore(),
                offered_qos_profiles=[_qos(reliable=True, transient_local=static)])
            self._connections[topic] = connection
        elif connection.msgtype != msgtype:
            raise DatasetError(f"topic {topic} already holds {connection.msgtype}, cannot write {msgtype}")
        self._writer.write(connection, int(log_time_ns), typestore().serialize_cdr(msg, msgtype))
        self.count += 1
