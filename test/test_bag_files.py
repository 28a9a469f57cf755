"""Bag outputs: make-bag stamps never 0, bags appear whole or not at all, `kp-vo bag` replaces its
results like `kp-vo run` and keeps them when it fails."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from kp_vo.bridge import bagio
from kp_vo.bridge.bagio import read_messages
from kp_vo.bridge.make_bag import BAG_EPOCH_NS, on_bag_timeline
from kp_vo.cli import main
from kp_vo.types import CameraIntrinsics, Frame

SMALL = ["--option", "width=160", "--option", "height=120"]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def make_bag(path, frames=4) -> None:
    assert main(["-q", "make-bag", "synthetic", "--max-frames", str(frames), *SMALL, "--output", str(path)]) == 0


def _dead_pid() -> int:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(done.stdout)


def test_make_bag_moves_relative_times_to_its_epoch(home):
    """The synthetic sequence (like KITTI) starts at t = 0; TF reads a zero stamp as 'latest'."""
    make_bag(home / "in")
    stamps = [(log, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)
              for _, _, log, msg in read_messages(home / "in", ["/camera/image_raw"])]
    assert stamps[0] == (BAG_EPOCH_NS, BAG_EPOCH_NS)
    assert all(log == header > BAG_EPOCH_NS for log, header in stamps[1:])


def test_absolute_times_are_kept():
    cam = CameraIntrinsics(100.0, 100.0, 31.5, 23.5, 64, 48)
    image = np.zeros((48, 64), np.uint8)
    tum = [Frame(k, 1_305_031_102_175_304_000 + k * 10**8, image, cam) for k in range(3)]
    assert [f.stamp_ns for f in on_bag_timeline(tum)] == [f.stamp_ns for f in tum]
    kitti = [dataclasses.replace(f, stamp_ns=k * 10**8) for k, f in enumerate(tum)]
    assert [f.stamp_ns for f in on_bag_timeline(kitti)] == [BAG_EPOCH_NS + k * 10**8 for k in range(3)]


def test_interrupted_make_bag_leaves_nothing_and_the_rerun_works(home, monkeypatch):
    write = bagio.BagWriter.write
    calls = []

    def failing_write(self, topic, msg, log_time_ns):
        calls.append(topic)
        if len(calls) == 9:   # mid-way through the second frame
            raise OSError(28, "No space left on device")
        write(self, topic, msg, log_time_ns)

    monkeypatch.setattr(bagio.BagWriter, "write", failing_write)
    with pytest.raises(OSError):
        main(["-q", "make-bag", "synthetic", "--max-frames", "4", *SMALL, "--output", str(home / "in")])
    assert list(home.iterdir()) == []          # no half bag under the name nor beside it
    monkeypatch.setattr(bagio.BagWriter, "write", write)
    make_bag(home / "in")
    assert sum(1 for _ in read_messages(home / "in", ["/camera/image_raw"])) == 4


def test_make_bag_removes_leftovers_of_a_killed_run(home):
    stale = home / f".in.kpvo-{_dead_pid()}-x1y2z3.tmp"
    (stale / "in").mkdir(parents=True)
    (stale / "in" / "in.db3").write_bytes(b"SQLite format 3\0 half")
    make_bag(home / "in")
    assert sorted(p.name for p in home.iterdir()) == ["in"]


def test_bag_replaces_earlier_results_and_keeps_them_when_it_fails(home, monkeypatch, capsys):
    make_bag(home / "in", frames=5)
    out = home / "out"
    assert main(["-q", "bag", str(home / "in"), "--output", str(out)]) == 0
    first = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert (out / "bag" / "metadata.yaml").is_file() and (out / "metrics.json").is_file()

    # a second run whose outputs fail after the bag was written: everything of the first run stays
    import kp_vo.pipeline

    def broken(*args, **kwargs):
        raise kp_vo.pipeline.InvalidInputError("disk full (simulated)")

    monkeypatch.setattr(kp_vo.pipeline, "write_outputs", broken)
    assert main(["-q", "bag", str(home / "in"), "--output", str(out)]) == 2
    assert "disk full (simulated)" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == first
    assert not [p for p in out.iterdir() if p.name.startswith(".")]   # no temp left behind

    # a successful rerun replaces the bag (as `kp-vo run` replaces its files) and removes a killed run's temp
    monkeypatch.undo()
    monkeypatch.setenv("HOME", str(home))
    stale = out / f".bag.kpvo-{_dead_pid()}-a1b2c3.tmp"
    (stale / "bag").mkdir(parents=True)
    assert main(["-q", "bag", str(home / "in"), "--output", str(out), "--storage", "mcap"]) == 0
    assert not stale.exists()
    assert sorted(p.name for p in (out / "bag").iterdir()) == ["bag.mcap", "metadata.yaml"]
    assert sum(1 for _ in read_messages(out / "bag", ["/odom"])) == 5
