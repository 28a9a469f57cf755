"""``kp-vo eval viewsynth``: the ViewSynth relocalization protocol on the synthetic room and on two
dataset sequences (a fake 7-Scenes scene rendered from the room), depth-input extractors, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.cli import main
from kp_vo.errors import InvalidInputError
from kp_vo.features.base import Features, extract_frame
from kp_vo.eval.reloc_room import render_room_frames, room_trajectory
from kp_vo.types import CameraIntrinsics, Frame

FAST_ROOM = ["--num-map", "12", "--num-query", "6", "--size", "120x160"]


def _check_summary(summary: dict, num_queries: int) -> None:
    assert summary["num_queries"] == num_queries
    values = list(summary["localization_accuracy"].values()) + list(summary["mma"].values())
    assert len(values) == 6 and all(0.0 <= v <= 1.0 for v in values)
    acc = summary["localization_accuracy"]
    assert acc["0.5m_2deg"] <= acc["1m_5deg"] <= acc["5m_10deg"]


def test_room_protocol_with_orb(tmp_path, capsys):
    out = tmp_path / "vs.json"
    assert main(["eval", "viewsynth", "--extractors", "orb", *FAST_ROOM, "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "synthetic room" in table and "MMA@0.1" in table and "0.5m/2deg" in table
    summary = json.loads(out.read_text())["results"]["orb"]
    _check_summary(summary, 6)
    assert summary["localization_accuracy"]["0.5m_2deg"] >= 0.8     # ORB localizes most queries


def test_random_rooms_are_evaluated_one_by_one_and_pooled(tmp_path, capsys):
    out = tmp_path / "vs.json"
    assert main(["eval", "viewsynth", "--extractors", "orb", *FAST_ROOM, "--scene", "random_room",
                 "--seed", "100000", "100001", "--json", str(out)]) == 0
    assert "synthetic random_room (seed 100000 100001)" in capsys.readouterr().out
    summary = json.loads(out.read_text())["results"]["orb"]
    _check_summary(summary, 12)                                  # 6 queries in each of 2 rooms
    assert summary["rooms"] == 2 and summary["localization_accuracy"]["0.5m_2deg"] >= 0.8


def test_pooled_summary_counts_every_query_once():
    from kp_vo.reloc.evaluation import RelocEvaluation, pooled_summary

    def query(ok: bool, t: float = 0.0, r: float = 0.0, mma01: float = 0.0) -> dict:
        rec = {"success": ok, "has_ground_truth": True, "latency_s": 0.01,
               "mma": {"0.1": mma01, "0.25": mma01, "0.5": mma01}}
        if ok:
            rec["translation_error_m"], rec["rotation_error_deg"] = t, r
        return rec

    room_a = RelocEvaluation(records=[query(True, 0.1, 1.0, 1.0), query(False)], summary={"map_points": 100, "extractor": "x"})
    room_b = RelocEvaluation(records=[query(True, 0.3, 3.0, 0.5), query(True, 2.0, 20.0, 0.0)],
                             summary={"map_points": 300, "extractor": "x"})
    s = pooled_summary([room_a, room_b])
    assert (s["num_queries"], s["num_success"], s["map_points"], s["rooms"]) == (4, 3, 200, 2)
    assert s["localization_accuracy"] == {"0.5m_2deg": 0.25, "1m_5deg": 0.5, "5m_10deg": 0.5}
    assert s["mma"]["0.1"] == pytest.approx(1.5 / 4)
    assert s["median_translation_error_m"] == pytest.approx(0.3) and s["median_rotation_error_deg"] == pytest.approx(3.0)


def _write_7scenes_sequence(folder: Path, frames: list[Frame]) -> None:
    folder.mkdir(parents=True)
    for k, f in enumerate(frames):
        stem = folder / f"frame-{k:06d}"
        cv2.imwrite(f"{stem}.color.png", cv2.cvtColor(f.image, cv2.COLOR_RGB2BGR))
        depth_mm = np.round(f.depth * 1000.0).astype(np.uint16)
        depth_mm[f.depth <= 0] = 65535
        cv2.imwrite(f"{stem}.depth.png", depth_mm)
        np.savetxt(f"{stem}.pose.txt", f.T_world_cam_gt)


def test_map_and_query_sources_from_a_7scenes_folder(tmp_path, capsys):
    """The room rendered into 7-Scenes files (seq-01 maps, seq-02 queries on another trajectory);
    the renderer's intrinsics replace the 7-Scenes ones through --*-option."""
    map_frames = render_room_frames(room_trajectory(12), width=160, height=120)
    query_frames = render_room_frames(room_trajectory(4, radius=0.9, height=1.15, phase=0.5), width=160, height=120)
    scene = tmp_path / "room"
    _write_7scenes_sequence(scene / "seq-01", map_frames)
    _write_7scenes_sequence(scene / "seq-02", query_frames)
    c = map_frames[0].camera
    options = [f"fx={c.fx}", f"fy={c.fy}", f"cx={c.cx}", f"cy={c.cy}"]
    argv = ["eval", "viewsynth", "--extractors", "orb", "--map-source", str(scene), "--map-sequence", "seq-01",
            "--query-source", str(scene / "seq-02"), "--json", str(tmp_path / "out.json")]
    for opt in options:
        argv += ["--map-option", opt, "--query-option", opt]
    assert main(argv) == 0
    assert "map 7scenes_room_seq-01 (12 frames" in capsys.readouterr().out
    summary = json.loads((tmp_path / "out.json").read_text())["results"]["orb"]
    _check_summary(summary, 4)
    assert summary["num_success"] >= 3 and summary["median_translation_error_m"] < 0.1


@pytest.mark.parametrize("argv, message", [
    (["--extractors", "orb", "superpoint"], "unknown extractor 'superpoint'"),
    (["--extractors", "viewsynth"], "give the model file as viewsynth:PATH"),
    (["--map-source", "synthetic:room"], "give both --map-source and --query-source"),
    (["--threshold-m", "0"], "RANSAC thresholds must be > 0"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    assert main(["eval", "viewsynth", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("kp-vo eval: error:") and message in err and "\n" not in err


class _Recorder:
    """A stand-in extractor recording what it was given."""

    metric = "l2"

    def __init__(self, input_kind: str | None):
        self.name = f"recorder-{input_kind}"
        if input_kind is not None:
            self.input_kind = input_kind
        self.seen: list[np.ndarray] = []

    def extract(self, data: np.ndarray) -> Features:
        self.seen.append(data)
        return Features.empty(4, "l2")


def test_extract_frame_feeds_depth_to_depth_extractors():
    cam = CameraIntrinsics(50.0, 50.0, 15.5, 11.5, 32, 24)
    frame = Frame(0, 0, np.zeros((24, 32, 3), np.uint8), cam, depth=np.ones((24, 32), np.float32))
    for kind, expected in (("image", frame.image), (None, frame.image), ("depth", frame.depth)):
        ex = _Recorder(kind)
        extract_frame(ex, frame)
        assert ex.seen[0] is expected
    frame.depth = None
    with pytest.raises(InvalidInputError, match="works on depth images and this frame has none"):
        extract_frame(_Recorder("depth"), frame)
