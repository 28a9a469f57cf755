"""Atomic file writing: a reader never sees a half-written file, an interrupted write leaves the old one.

Temporary files and folders live beside their target as ``.NAME.kpvo-PID-RANDOM.tmp`` (PID: the
writing process). A write killed before it could clean up (SIGKILL, power loss) leaves one behind;
the next atomic write of the same target removes those whose process no longer runs.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

TEMP_TAG = ".kpvo-"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}{TEMP_TAG}{os.getpid()}-"


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's running process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files and folders of ``path`` left by writers that died; returns them."""
    path = Path(path)
    removed = []
    for temp in path.parent.glob(f".{glob.escape(path.name)}{TEMP_TAG}*.tmp"):
        pid = temp.name[len(path.name) + 1 + len(TEMP_TAG):].split("-")[0]
        if not pid.isdigit() or _writer_alive(int(pid)):
            continue
        if temp.is_dir() and not temp.is_symlink():
            shutil.rmtree(temp, ignore_errors=True)
        else:
            temp.unlink(missing_ok=True)
        removed.append(temp)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds it replaces ``path``.

    The temporary file is created empty (mode 0644 once in place) in the destination folder, so
    the final ``os.replace`` is a rename on one file system. If the block raises, the temporary
    file is removed and ``path`` is left as it was. Stale temporary files of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a not yet existing folder path to create and fill; when the block succeeds it becomes ``path``.

    The folder is built as ``NAME`` inside a temporary folder beside ``path`` (so files named after
    their folder, as in a rosbag2, keep their names) and renamed into place; an existing ``path``
    is replaced (moved aside, then deleted). If the block raises, nothing of it remains and
    ``path`` is left as it was. Stale temporary folders of ``path`` are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_temp_prefix(path), suffix=".tmp"))
    try:
        yield temp / path.name
        if path.exists():
            os.replace(path, temp / ".replaced")
        os.replace(temp / path.name, path)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
