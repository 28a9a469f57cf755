"""Atomic writes: success replaces the file readable by others; a failure keeps the old one and no temp file."""

import os
import stat

import pytest

from kp_vo.fileio import atomic_dir, atomic_path


def test_success_replaces_with_mode_0644(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        tmp.write_text("new")
        assert not target.exists()
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_previous_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_next_write_removes_temps_of_dead_writers_only(tmp_path):
    """A writer killed mid-write (SIGKILL) leaves its temp; the next write of the same target removes it,
    but not a running writer's temp, another target's or an unrelated hidden file."""
    dead, alive = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".metrics.json.kpvo-{dead}-abc123.tmp"
    stale_dir = tmp_path / f".metrics.json.kpvo-{dead}-def456.tmp"
    running = tmp_path / f".metrics.json.kpvo-{alive}-ghi789.tmp"
    other = tmp_path / f".config.yaml.kpvo-{dead}-abc123.tmp"
    unrelated = tmp_path / ".metrics.json.swp"
    for p in (stale_file, running, other, unrelated):
        p.write_text("partial")
    (stale_dir / "bag").mkdir(parents=True)
    with atomic_path(tmp_path / "metrics.json") as tmp:
        assert tmp.name.startswith(f".metrics.json.kpvo-{alive}-") and tmp.name.endswith(".tmp")
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["metrics.json", running.name, other.name, unrelated.name])


def test_atomic_dir_creates_replaces_and_keeps_the_old_one_on_failure(tmp_path):
    target = tmp_path / "bag"
    with atomic_dir(target) as tmp:
        assert tmp.name == "bag" and not tmp.exists() and not target.exists()
        tmp.mkdir()
        (tmp / "bag.db3").write_text("first")
    assert (target / "bag.db3").read_text() == "first"
    with atomic_dir(target) as tmp:
        tmp.mkdir()
        (tmp / "bag.db3").write_text("second")
    assert [p.name for p in target.iterdir()] == ["bag.db3"] and (target / "bag.db3").read_text() == "second"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            tmp.mkdir()
            (tmp / "bag.db3").write_text("half")
            raise RuntimeError("interrupted")
    assert (target / "bag.db3").read_text() == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["bag"]
