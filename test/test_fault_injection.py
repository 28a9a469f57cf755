"""Fault injection through the public CLI: every bad input (map, model, bag, image, config, --set,
output path) ends ``kp-vo`` with exit code 2, exactly one ``kp-vo CMD: error: ...`` line on stderr and
no traceback, and leaves the results of the previous good run byte for byte as they were.

Each case builds its bad input in a fresh folder and runs ``main(argv)`` in-process with ``--output``
pointing at a copy of a good run's results (``kp-vo run``'s files and a ``kp-vo bag`` bag).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from kp_vo.cli import main

SMALL = ["--option", "width=160", "--option", "height=120"]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """Inputs and the results of one good run of each command, made once."""
    root = tmp_path_factory.mktemp("good")
    assert main(["-q", "make-bag", "synthetic", "--max-frames", "4", *SMALL, "--output", str(root / "in_bag")]) == 0
    assert main(["-q", "bag", str(root / "in_bag"), "--output", str(root / "results")]) == 0
    assert main(["-q", "map", "build", "synthetic:room", "--max-frames", "3", "--output", str(root / "room.kpmap")]) == 0
    from kp_vo.runtime.shipped import shipped_model   # a real exported model to damage
    root.joinpath("model.onnx").write_bytes(shipped_model("keypointnet").read_bytes())
    return root


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- bad inputs
# Each maker gets (case folder, good folder) and returns the argv (without --output).

def _truncated(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def corrupt_map_truncated(d, g):
    return ["map", "query", str(_truncated(g / "room.kpmap", d / "cut.kpmap")), "synthetic:room", "--max-frames", "2"]


def corrupt_map_flipped_byte(d, g):
    data = bytearray((g / "room.kpmap").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "flip.kpmap").write_bytes(bytes(data))
    return ["map", "query", str(d / "flip.kpmap"), "synthetic:room", "--max-frames", "2"]


def foreign_map(d, g):
    (d / "notes.kpmap").write_text("KPVOMAP but really a text file\n")
    return ["map", "query", str(d / "notes.kpmap"), "synthetic:room", "--max-frames", "2"]


def _run_with_model(path: Path) -> list[str]:
    return ["run", "synthetic:room", "--max-frames", "3", "--extractor", "keypointnet",
            "--set", f"extractor.options.model_path={path}"]


def model_truncated(d, g):
    return _run_with_model(_truncated(g / "model.onnx", d / "cut.onnx"))


def model_garbage(d, g):
    (d / "junk.onnx").write_bytes(b"\x08\x07garbage" * 100)
    return _run_with_model(d / "junk.onnx")


def _model_with(d, g, key, value):
    proto = onnx.load(str(g / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
    onnx.save(proto, str(d / "meta.onnx"))
    return _run_with_model(d / "meta.onnx")


def model_size_multiple_zero(d, g):
    return _model_with(d, g, "kp_vo.size_multiple", "0")


def model_std_zero(d, g):
    meta = json.loads(next(p.value for p in onnx.load(str(g / "model.onnx")).metadata_props if p.key == "kp_vo.input"))
    meta["std"] = [0.0] * len(meta["std"])
    return _model_with(d, g, "kp_vo.input", json.dumps(meta))


def model_output_missing(d, g):
    return _model_with(d, g, "kp_vo.outputs", json.dumps({"score": "s", "heatmap": "h"}))


def _bag_copy(d, g) -> Path:
    return Path(shutil.copytree(g / "in_bag", d / "in_bag"))


def bag_truncated(d, g):
    bag = _bag_copy(d, g)
    _truncated(bag / "in_bag.db3", bag / "in_bag.db3", 0.3)
    return ["bag", str(bag)]


def bag_garbage_database(d, g):
    bag = _bag_copy(d, g)
    (bag / "in_bag.db3").write_bytes(np.random.default_rng(0).bytes(50_000))
    return ["bag", str(bag)]


def bag_bad_metadata(d, g):
    bag = _bag_copy(d, g)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [\n")
    return ["bag", str(bag)]


def bag_not_a_bag(d, g):
    (d / "photos").mkdir()
    return ["bag", str(d / "photos")]


def images_all_unreadable(d, g):
    seq = d / "sequences" / "00"
    (seq / "image_0").mkdir(parents=True)
    for k in range(3):
        (seq / "image_0" / f"{k:06d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (seq / "calib.txt").write_text("P0: 100 0 80 0 0 100 60 0 0 0 1 0\n")
    (seq / "times.txt").write_text("0.0\n0.1\n0.2\n")
    return ["run", str(d), "--sequence", "00"]


def images_bad_calibration(d, g):
    seq = d / "sequences" / "00"
    (seq / "image_0").mkdir(parents=True)
    cv2.imwrite(str(seq / "image_0" / "000000.png"), np.zeros((60, 80), np.uint8))
    (seq / "calib.txt").write_text("P0: 0 0 0 0 0 0 0 0 0 0 0 0\n")
    (seq / "times.txt").write_text("0.0\n")
    return ["run", str(d), "--sequence", "00"]


def _config(d, content: bytes) -> list[str]:
    (d / "c.yaml").write_bytes(content)
    return ["run", "synthetic:room", "--max-frames", "3", "--config", str(d / "c.yaml")]


def config_list(d, g):
    return _config(d, b"- odometry\n- extractor\n")


def config_binary(d, g):
    return _config(d, (g / "model.onnx").read_bytes()[:4096])


def config_unknown_section(d, g):
    return _config(d, b"odometri:\n  window_size: 4\n")


def config_wrong_type(d, g):
    return _config(d, b"odometry:\n  window_size: [4]\n")


def config_out_of_range(d, g):
    return _config(d, b"odometry:\n  min_inliers: -1\n")


def config_alias_bomb(d, g):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefg", "bcdefgh")]
    return _config(d, ("\n".join(lines) + "\nextractor:\n  options:\n    bomb: *h\n").encode())


def config_unclosed(d, g):
    return _config(d, b"odometry: {window_size: 4\n")


def _set(*items):
    def make(d, g):
        argv = ["run", "synthetic:room", "--max-frames", "3"]
        for item in items:
            argv += ["--set", item]
        return argv
    return make


def bench_rows_scalar(d, g):
    (d / "rows.yaml").write_text("rows: 5\n")
    return ["bench", "synthetic:room", "--max-frames", "3", "--rows", str(d / "rows.yaml")]


def make_bag_over_existing(d, g):
    return ["make-bag", "synthetic", "--max-frames", "2", *SMALL]   # --output is the existing results folder


def map_build_negative_top_k(d, g):
    return ["map", "build", "synthetic:room", "--max-frames", "2", "--top-k", "-5"]


CASES = {
    "map truncated": (corrupt_map_truncated, "cut.kpmap"),
    "map flipped byte": (corrupt_map_flipped_byte, "flip.kpmap"),
    "map foreign": (foreign_map, "notes.kpmap"),
    "model truncated": (model_truncated, "cut.onnx"),
    "model garbage": (model_garbage, "junk.onnx"),
    "model size_multiple 0": (model_size_multiple_zero, "kp_vo.size_multiple"),
    "model std 0": (model_std_zero, "std"),
    "model output missing": (model_output_missing, "outputs"),
    "bag truncated": (bag_truncated, "cannot open bag"),
    "bag garbage database": (bag_garbage_database, "cannot open bag"),
    "bag bad metadata.yaml": (bag_bad_metadata, "metadata.yaml"),
    "bag not a bag": (bag_not_a_bag, "photos"),
    "images all unreadable": (images_all_unreadable, "000000.png: cannot read image"),
    "images bad calibration": (images_bad_calibration, "focal lengths must be positive"),
    "config a list": (config_list, "must be a mapping"),
    "config binary": (config_binary, "not UTF-8"),
    "config unknown section": (config_unknown_section, "'odometri'"),
    "config wrong type": (config_wrong_type, "odometry.window_size"),
    "config out of range": (config_out_of_range, "odometry.min_inliers"),
    "config alias bomb": (config_alias_bomb, "aliases are expanded"),
    "config unclosed": (config_unclosed, "line 2"),
    "--set without =": (_set("odometry.window_size"), "--set expects KEY=VALUE"),
    "--set unknown key": (_set("odometry.no_such_knob=1"), "odometry.no_such_knob"),
    "--set bad value": (_set("odometry.window_size=many"), "odometry.window_size"),
    "--set unparsable": (_set("extractor.options.levels=[1,2"), "--set extractor.options.levels"),
    "--set section as value": (_set("odometry=3"), "odometry"),
    "bench rows not a mapping": (bench_rows_scalar, "rows"),
    "make-bag over existing": (make_bag_over_existing, "exists already"),
    "map build top-k negative": (map_build_negative_top_k, "top_k"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_and_loses_nothing(case, good, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    make, needle = CASES[case]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    results = Path(shutil.copytree(good / "results", tmp_path / "results"))
    before = snapshot(results)
    argv = make(inputs, good)
    capsys.readouterr()

    code = main(["-q", *argv, "--output", str(results)])

    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith(f"kp-vo {argv[0]}: error: "), err
    assert needle in lines[0], lines[0]
    assert snapshot(results) == before
    assert {p.name for p in results.iterdir()} == {Path(k).parts[0] for k in before}   # no temp left
