"""The shipped distilled KeypointNet-Lite files: small, self-contained, metadata that names the committed
training config and the weights, the int8 file a trunk-only quantization of the float file, and both
served by the keypointnet extractor on a real KITTI frame (skipped without the shared data)."""

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from kp_vo.export import read_metadata

ROOT = Path(__file__).resolve().parents[1]
LITE = ROOT / "models" / "keypointnet_lite.onnx"
LITE_INT8 = ROOT / "models" / "keypointnet_lite.int8.onnx"
KITTI_FRAME = ROOT.parent / "shared" / "data" / "kitti" / "sequences" / "00" / "image_0" / "000190.png"


def test_files_are_small_trained_and_described():
    for path in (LITE, LITE_INT8):
        assert path.stat().st_size < 2_000_000
        meta = read_metadata(path)
        assert meta.kind == "keypointnet_lite" and meta.trained and meta.channels == 1
    assert read_metadata(LITE).quantization == "none"
    assert read_metadata(LITE_INT8).quantization == "static_int8_trunk"
    assert read_metadata(LITE).raw["kp_vo.weights_sha256"] == read_metadata(LITE_INT8).raw["kp_vo.weights_sha256"]
    card = LITE.with_suffix(".md").read_text()
    for section in ("## Data", "## Training", "## Metrics", "## Limitations"):
        assert section in card


def test_trained_by_the_committed_config_run_with_resume_auto():
    """The model card's command (``--resume auto`` sets train.resume) reproduces the recorded hash."""
    from kp_vo.config import load_config
    from kp_vo.training.recipe import config_hash
    from kp_vo.training.recipes import get_recipe

    recipe = get_recipe("keypointnet_distill")
    cfg = load_config(recipe.config_type, ROOT / "config" / "train_keypointnet_distill_cpu.yaml")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, resume="auto"))
    assert read_metadata(LITE).raw["kp_vo.training_config_hash"] == config_hash(cfg)


@pytest.mark.skipif(not KITTI_FRAME.is_file(), reason="shared KITTI data absent")
def test_float_and_int8_agree_on_a_kitti_frame():
    from kp_vo.runtime.extractors import KeypointNetExtractor

    image = cv2.imread(str(KITTI_FRAME), cv2.IMREAD_GRAYSCALE)
    fa = KeypointNetExtractor(model_path=str(LITE), max_keypoints=2000, threads=1).extract(image)
    fb = KeypointNetExtractor(model_path=str(LITE_INT8), max_keypoints=2000, threads=1).extract(image)
    assert len(fa.keypoints) == len(fb.keypoints) == 2000
    assert fa.keypoints[:, 0].max() <= image.shape[1] - 1 and fa.keypoints[:, 1].max() <= image.shape[0] - 1
    # Mostly the same corners (measured on this frame: 67 % of the float keypoints have an int8 keypoint
    # within 0.5 px, 82 % within 1 px; the model card has the figures).
    d = np.linalg.norm(fa.keypoints[:, None, :] - fb.keypoints[None, :, :], axis=2).min(1)
    assert np.mean(d < 0.5) > 0.6 and np.mean(d < 1.0) > 0.75
