"""HPatches-style keypoint metrics: known answers on synthetic keypoints, pair generation, CLI."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.errors import InvalidInputError
from kp_vo.eval.keypoints import (HomographyPair, corner_error, default_num_keypoints, evaluate_extractors,
                                  evaluate_pair, homography_pairs, hpatches_pairs, repeatability, warp)
from kp_vo.features.base import Features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_training_keypointnet import make_textured_images  # noqa: E402

SHIFT = np.array([[1, 0, 4.0], [0, 1, -2.0], [0, 0, 1]])


def test_repeatability_known_answers():
    ys, xs = np.mgrid[10:90:10, 10:90:10]                 # 64 keypoints 10 px apart
    kp_a = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64) + 0.3
    rep, loc = repeatability(kp_a, warp(kp_a, SHIFT), SHIFT, (100, 100), (100, 100))
    assert rep == pytest.approx(1.0) and loc == pytest.approx(0.0, abs=1e-9)
    # b misses half of a's keypoints (and has nothing else): 32 + 32 repeated out of 64 + 32 visible
    rep, _ = repeatability(kp_a, warp(kp_a[:32], SHIFT), SHIFT, (100, 100), (100, 100))
    assert rep == pytest.approx(64 / 96)
    # every keypoint of b off by exactly 2 px: repeated at eps 3 with error 2, not at eps 1
    rep, loc = repeatability(kp_a, warp(kp_a, SHIFT) + [2.0, 0.0], SHIFT, (100, 100), (100, 100), eps=3.0)
    assert rep == pytest.approx(1.0) and loc == pytest.approx(2.0)
    assert repeatability(kp_a, warp(kp_a, SHIFT) + [2.0, 0.0], SHIFT, (100, 100), (100, 100), eps=1.0)[0] == 0.0


def test_corner_error():
    assert corner_error(SHIFT, SHIFT, (50, 60)) == pytest.approx(0.0)
    assert corner_error(np.eye(3), SHIFT, (50, 60)) == pytest.approx(np.hypot(4, 2))


def _pair_and_features(n=80, shuffle=True, seed=0):
    rng = np.random.default_rng(seed)
    img = np.zeros((120, 160, 3), np.uint8)
    H = np.array([[0.95, 0.05, 6.0], [-0.04, 1.02, 3.0], [1e-4, 0, 1]])
    kp_a = rng.uniform(5, 110, (n, 2))
    desc = rng.normal(size=(n, 32)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    perm = rng.permutation(n) if shuffle else np.arange(n)
    fa = Features(kp_a.astype(np.float32), np.ones(n, np.float32), desc, "l2")
    fb = Features(warp(kp_a, H)[perm].astype(np.float32), np.ones(n, np.float32), desc[perm], "l2")
    return HomographyPair(img, img, H), fa, fb


def test_evaluate_pair_perfect_and_random_descriptors():
    pair, fa, fb = _pair_and_features()
    m = evaluate_pair(fa, fb, pair)
    assert all(m.correct.values()) and m.matching_score == pytest.approx(1.0, abs=0.06)
    assert m.repeatability > 0.9 and m.num_matches == 80
    # the same keypoints with unrelated descriptors: matches are wrong, no correct homography
    rng = np.random.default_rng(5)
    bad = Features(fb.keypoints, fb.scores, np.roll(fb.descriptors, 7, axis=0) * 0 + rng.normal(
        size=fb.descriptors.shape).astype(np.float32), "l2")
    m2 = evaluate_pair(fa, bad, pair)
    assert not m2.correct[1.0] and m2.matching_score < 0.2 and m2.repeatability == m.repeatability


def test_default_keypoint_budget():
    assert default_num_keypoints(240, 320) == 300 and default_num_keypoints(480, 640) == 1000


def test_homography_pairs_deterministic_and_held_out(tmp_path):
    folder = make_textured_images(tmp_path / "imgs", n=10)
    p1 = list(homography_pairs(folder, 4, (64, 96), seed=3))
    p2 = list(homography_pairs(folder, 4, (64, 96), seed=3))
    assert all(np.array_equal(a.image_b, b.image_b) and np.allclose(a.H_b_a, b.H_b_a) for a, b in zip(p1, p2))
    assert {p.name.split("#")[0] for p in p1} == {"img_00.png", "img_05.png"}
    assert p1[0].image_a.shape == (64, 96, 3) and p1[0].image_a.dtype == np.uint8
    p3 = list(homography_pairs(folder, 1, (64, 96), seed=4))
    assert not np.allclose(p3[0].H_b_a, p1[0].H_b_a)


def test_hpatches_folder_resized_homography(tmp_path):
    seq = tmp_path / "hp" / "v_test"
    seq.mkdir(parents=True)
    img = cv2.imread(str(make_textured_images(tmp_path / "imgs", n=1, size=(200, 300)) / "img_00.png"))
    cv2.imwrite(str(seq / "1.ppm"), img)
    cv2.imwrite(str(seq / "2.ppm"), cv2.warpPerspective(img, SHIFT, (300, 200)))
    np.savetxt(seq / "H_1_2", SHIFT)
    pairs = list(hpatches_pairs(tmp_path / "hp", (100, 150)))
    assert len(pairs) == 1
    np.testing.assert_allclose(warp(np.array([[10.0, 10.0]]), pairs[0].H_b_a), [[12.0, 9.0]], atol=1e-9)


def test_orb_and_sift_in_one_harness(tmp_path):
    folder = make_textured_images(tmp_path / "imgs", n=6, size=(240, 320))
    pairs = list(homography_pairs(folder, 3, (120, 160), seed=0, photometric=False))
    rows = evaluate_extractors(["orb", "sift"], pairs, 200)
    assert [r.extractor for r in rows] == ["orb", "sift"]
    for r in rows:
        assert 0.0 < r.repeatability <= 1.0 and 0.0 <= r.matching_score <= 1.0 and r.pairs == 3
        assert set(r.correctness) == {1.0, 3.0, 5.0}
    with pytest.raises(InvalidInputError):
        evaluate_extractors(["orb:model.onnx"], pairs, 10)
    with pytest.raises(InvalidInputError):
        evaluate_extractors(["orb"], [], 10)


def test_cli_eval_keypoints(tmp_path, capsys):
    import argparse
    from kp_vo.cli import evaluate
    folder = make_textured_images(tmp_path / "imgs", n=5, size=(120, 160))
    parser = argparse.ArgumentParser()
    evaluate.register(parser.add_subparsers(dest="command"))
    out_json = tmp_path / "r.json"
    args = parser.parse_args(["eval", "keypoints", "--extractors", "orb", "--photos", str(folder), "--pairs", "2",
                              "--size", "120x160", "--json", str(out_json)])
    assert args.func(args) == 0
    assert "orb" in capsys.readouterr().out
    res = json.loads(out_json.read_text())["results"]
    assert res[0]["extractor"] == "orb" and res[0]["pairs"] == 2


def test_extractor_spec_options(tmp_path):
    """",key=value" options reach the extractor (YAML-typed); typos and malformed items are one-line errors."""
    from kp_vo.pipeline import extractor_from_spec
    from kp_vo.export import export_onnx
    orb = extractor_from_spec("orb,grid_cell=64,fast_threshold=5", 100)
    assert orb.grid_cell == 64 and orb.max_keypoints == 100
    path = export_onnx("keypointnet_vgg", tmp_path / "vgg.onnx")
    kpn = extractor_from_spec(f"keypointnet:{path},scale=0.5,cell_nms=true", 50)
    assert kpn.scale == 0.5 and kpn.cell_nms is True and kpn.net.meta.kind == "keypointnet_vgg"
    for bad, match in (("orb,grid=3", "bad options"), ("orb,grid_cell", "key=value"),
                       (f"keypointnet:{path},descriptor_dim=64", "fixed in an .onnx file"), ("orb:x.onnx", "no model path")):
        with pytest.raises(InvalidInputError, match=match):
            extractor_from_spec(bad, 10)
