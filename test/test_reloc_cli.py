"""``kp-vo map build|query|info`` end to end on a small synthetic room, and bad-file errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kp_vo.cli import main
from kp_vo.reloc.repository import Repository

SMALL = ["--option", "width=320", "--option", "height=240"]


def test_map_build_query_info(tmp_path, capsys):
    map_path = tmp_path / "room.kpmap"
    rc = main(["map", "build", "synthetic:room", "--output", str(map_path), "--extractor", "orb",
               "--top-k", "200", "--stride", "4", "--max-frames", "20", "--every", "2", *SMALL])
    assert rc == 0 and map_path.is_file()
    repo = Repository.load(map_path)
    assert repo.num_frames == 10 and repo.extractor == "orb" and len(repo) > 1000
    capsys.readouterr()

    assert main(["map", "info", str(map_path)]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["num_points"] == len(repo) and meta["metric"] == "hamming"

    out_dir = tmp_path / "query"
    rc = main(["map", "query", str(map_path), "synthetic:room", "--start", "2", "--stride", "8",
               "--max-frames", "4", "--output", str(out_dir), *SMALL])
    assert rc == 0
    metrics = json.loads((out_dir / "metrics.json").read_text())
    summary = metrics["summary"]
    assert summary["num_queries"] == 4 and len(metrics["queries"]) == 4
    assert summary["localization_accuracy"]["0.5m_2deg"] >= 0.75
    assert set(summary["mma"]) == {"0.1", "0.25", "0.5"}
    poses = np.loadtxt(out_dir / "poses_tum.txt", ndmin=2)
    assert poses.shape == (summary["num_success"], 8)


@pytest.mark.parametrize("content", [b"", b"not a map at all" * 10, b"KPVOMAP\0\x01\0\0\0\xff\xff\0\0"])
def test_bad_map_is_one_line_error(tmp_path, capsys, content):
    bad = tmp_path / "bad.kpmap"
    bad.write_bytes(content)
    for argv in (["map", "info", str(bad)], ["map", "query", str(bad), "synthetic:room"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("kp-vo map: error:") and str(bad) in err and "\n" not in err


def test_depth_only_map_with_extractor_options(tmp_path, capsys):
    """The shipped ViewSynth model maps and localizes from depth alone; --extractor-option reaches the
    extractor (half-size input: fewer cells, fewer map points) and a malformed one is a one-line error."""
    full, half = tmp_path / "full.kpmap", tmp_path / "half.kpmap"
    build = ["map", "build", "synthetic:random_room", "--option", "seed=7", "--max-frames", "12", "--stride", "3",
             "--extractor", "viewsynth", "--extractor-option", "threads=1", *SMALL]
    assert main([*build, "--output", str(full)]) == 0
    assert main([*build, "--extractor-option", "scale=0.5", "--output", str(half)]) == 0
    assert Repository.load(full).extractor == "viewsynth" and len(Repository.load(half)) < len(Repository.load(full))
    capsys.readouterr()
    assert main(["map", "query", str(full), "synthetic:random_room", "--option", "seed=7", "--start", "4",
                 "--stride", "9", "--max-frames", "3", "--extractor-option", "threads=1", *SMALL]) == 0
    summary = json.loads(capsys.readouterr().out.split("\nwrote")[0])
    assert summary["num_queries"] == 3 and summary["localization_accuracy"]["1m_5deg"] >= 2 / 3
    assert main([*build, "--extractor-option", "scale", "--output", str(half)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "kp-vo map: error: --extractor-option expects KEY=VALUE, got 'scale'"
