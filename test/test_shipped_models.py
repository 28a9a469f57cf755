"""The trained models shipped in models/: contract, size, model card, and their accuracy where real data is.

The accuracy checks are short versions of the model card's measurements (same harness, fewer
pairs), so a model that regresses below the classical baselines fails here.
"""

from pathlib import Path

import numpy as np
import pytest

import kp_vo.runtime  # noqa: F401  (registers "keypointnet")
from kp_vo.eval.keypoints import evaluate_extractors, homography_pairs
from kp_vo.export import read_metadata
from kp_vo.features.base import create_extractor

MODELS = Path(__file__).resolve().parents[1] / "models"
KEYPOINTNET = MODELS / "keypointnet_kp2d.onnx"
KEYPOINTNET_WEIGHTS = MODELS / "keypointnet_kp2d.safetensors"     # the same weights, for the torch backend
PHOTOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "photos"
REPOSITORY_LIMIT_BYTES = 15 * 2**20


def test_keypointnet_file_contract_and_card():
    meta = read_metadata(KEYPOINTNET)
    assert meta.kind == "keypointnet_vgg" and meta.trained
    assert meta.quantization == "fp16_weights"
    assert meta.options["descriptor_dim"] == 64
    assert KEYPOINTNET.stat().st_size < REPOSITORY_LIMIT_BYTES
    card = KEYPOINTNET.with_suffix(".md").read_text()
    for section in ("## Data", "## Training", "## Metrics", "## Limitations"):
        assert section in card


def test_keypointnet_was_trained_by_the_committed_recipe_config():
    """The hash the trainer wrote into the weights (and export carried into the file) is the hash of
    config/train_keypointnet_homography_gpu.yaml: the model card's training command reproduces it."""
    from kp_vo.config import load_config
    from kp_vo.training.recipe import config_hash
    from kp_vo.training.recipes import get_recipe

    recipe = get_recipe("keypointnet_homography")
    cfg = load_config(recipe.config_type, MODELS.parent / "config" / "train_keypointnet_homography_gpu.yaml")
    assert read_metadata(KEYPOINTNET).raw["kp_vo.training_config_hash"] == config_hash(cfg)


def test_shipped_safetensors_are_the_onnx_weights():
    """models/keypointnet_kp2d.safetensors is the file the .onnx was exported from (its sha256 is in the
    .onnx metadata), and the torch backend serving it agrees with ONNX Runtime serving the .onnx up to
    the fp16 storage of the .onnx, which rounds the weights after BatchNorm folding (model card:
    mean 0.002 px, rare cells up to 0.7 px on a KITTI frame)."""
    import hashlib

    meta = read_metadata(KEYPOINTNET)
    assert hashlib.sha256(KEYPOINTNET_WEIGHTS.read_bytes()).hexdigest() == meta.raw["kp_vo.weights_sha256"]
    assert KEYPOINTNET_WEIGHTS.stat().st_size < REPOSITORY_LIMIT_BYTES
    onnx = create_extractor("keypointnet", model_path=KEYPOINTNET, device="cpu", threads=1)
    torch = create_extractor("keypointnet", backend="torch", kind="keypointnet_vgg", descriptor_dim=64,
                             model_path=KEYPOINTNET_WEIGHTS, device="cpu", threads=1)
    x = np.random.default_rng(0).random((1, 3, 96, 160), dtype=np.float32)
    a, b = onnx.net.run(x), torch.net.run(x)
    for name, mean_tol, max_tol in (("score", 1e-3, 0.02), ("coord", 0.01, 1.0), ("descriptor", 1e-3, 0.1)):
        diff = np.abs(a[name] - b[name])
        assert diff.mean() < mean_tol and diff.max() < max_tol, (name, diff.mean(), diff.max())


def test_keypointnet_runs_on_any_multiple_of_its_size():
    ext = create_extractor("keypointnet", model_path=KEYPOINTNET, device="cpu", threads=1, max_keypoints=100)
    rng = np.random.default_rng(0)
    for h, w in ((96, 160), (120, 200), (370, 1226)):
        feats = ext.extract(rng.integers(0, 255, (h, w), dtype=np.uint8))
        assert feats.descriptors.shape == (len(feats.keypoints), 64) and 50 < len(feats.keypoints) <= 100
        np.testing.assert_allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-3)
        assert feats.keypoints[:, 0].max() <= w - 1 and feats.keypoints[:, 1].max() <= h - 1


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="real photos not found at ../shared/data/photos")
def test_keypointnet_beats_orb_and_sift_on_held_out_photo_pairs():
    """12 held-out pairs at 240x320, 300 keypoints (the card uses 50): repeatability and matching score
    above both ORB and SIFT in the same run."""
    pairs = list(homography_pairs(PHOTOS, 12, (240, 320), seed=1))
    orb, sift, kpn = evaluate_extractors(["orb", "sift", f"keypointnet:{KEYPOINTNET}"], pairs, 300)
    assert kpn.repeatability > max(orb.repeatability, sift.repeatability), (kpn, orb, sift)
    assert kpn.matching_score > max(orb.matching_score, sift.matching_score), (kpn, orb, sift)
    assert kpn.correctness[3.0] >= orb.correctness[3.0], (kpn, orb)


def test_keypointnet_without_model_path_uses_the_shipped_model(monkeypatch, tmp_path):
    ext = create_extractor("keypointnet", device="cpu", threads=1)
    assert ext.net.path.resolve() == KEYPOINTNET.resolve()
    from kp_vo.errors import ModelFileError
    from kp_vo.runtime import shipped
    monkeypatch.setattr(shipped, "model_dirs", lambda: [tmp_path])
    with pytest.raises(ModelFileError, match=f"keypointnet_kp2d.onnx not found in {tmp_path}; give model_path"):
        create_extractor("keypointnet", device="cpu")
    monkeypatch.undo()
    monkeypatch.setenv("KP_VO_MODELS_DIR", str(tmp_path))
    assert shipped.model_dirs()[0] == tmp_path


def _check_contract_card_and_config(path: Path, kind: str, recipe_name: str, config: Path):
    """A trained ``kind`` file small enough for the repository, exported from a run of the committed
    ``config`` (its hash is the metadata's), with a model card of the four sections; its metadata."""
    from kp_vo.config import load_config
    from kp_vo.training.recipe import config_hash
    from kp_vo.training.recipes import get_recipe

    meta = read_metadata(path)
    assert meta.kind == kind and meta.trained
    assert path.stat().st_size < REPOSITORY_LIMIT_BYTES
    recipe = get_recipe(recipe_name)
    assert meta.raw["kp_vo.training_config_hash"] == config_hash(load_config(recipe.config_type, config))
    card = path.with_suffix(".md").read_text()
    for section in ("## Data", "## Training", "## Metrics", "## Limitations"):
        assert section in card
    return meta


OBJECT_KEYPOINTNET = MODELS / "object_keypointnet.onnx"
OBJECT_CONFIG = MODELS.parent / "config" / "train_object_keypoints_cpu.yaml"


def test_object_keypointnet_contract_card_and_training_config():
    meta = _check_contract_card_and_config(OBJECT_KEYPOINTNET, "object_keypointnet", "object_keypoints", OBJECT_CONFIG)
    assert meta.options["num_keypoints"] == 10


def test_object_keypointnet_recovers_relative_rotations_of_unseen_chairs():
    """40 pairs of the held-out chairs (the card uses 200): the Procrustes rotation of its keypoints is far
    closer to the truth than answering "no rotation", whose error is the angle between the two views."""
    from kp_vo.config import load_config
    from kp_vo.eval.objects import ObjectKeypointModel, evaluate_pairs, held_out_pairs, no_rotation_baseline
    from kp_vo.training.recipes.object_keypoints import ObjectKeypointsConfig

    data = load_config(ObjectKeypointsConfig, OBJECT_CONFIG).data
    pairs = held_out_pairs(40, data.size, data.distance, num_objects=10, seed=1)
    model = evaluate_pairs(ObjectKeypointModel(OBJECT_KEYPOINTNET).predict, pairs, data.distance)
    baseline = no_rotation_baseline(pairs)
    assert baseline.mean_deg > 60.0
    assert model.median_deg < 10.0 and model.mean_deg < 25.0, (model.as_dict(), baseline.as_dict())


VIEWSYNTH = MODELS / "viewsynth.onnx"
VIEWSYNTH_CONFIG = MODELS.parent / "config" / "train_viewsynth_cpu_240x320.yaml"


def test_viewsynth_contract_card_and_training_config():
    meta = _check_contract_card_and_config(VIEWSYNTH, "viewsynth", "viewsynth", VIEWSYNTH_CONFIG)
    assert meta.options["width"] == 32


def test_viewsynth_relocalizes_in_an_unseen_room_where_untrained_features_cannot(tmp_path):
    """Short version of the card's held-out-room measurement (another unseen room, fewer frames):
    depth-only matching far above the same network untrained, and some queries localized."""
    import torch

    from kp_vo.export import export_onnx
    from kp_vo.eval.reloc_room import room_experiment
    from kp_vo.reloc.localizer import LocalizerConfig

    torch.manual_seed(0)
    untrained = export_onnx("viewsynth", tmp_path / "untrained.onnx", width=32)

    def run(path):
        extractor = create_extractor("viewsynth", model_path=path, device="cpu", threads=1)
        return room_experiment(extractor, top_k=300, num_map=16, num_query=8, seed=300000, width=320, height=240,
                               config=LocalizerConfig(threshold_m=0.1), kind="random_room").summary

    model, baseline = run(VIEWSYNTH), run(untrained)
    assert model["mma"]["0.25"] > 0.25 and model["mma"]["0.25"] > 3 * baseline["mma"]["0.25"], (model, baseline)
    assert model["localization_accuracy"]["1m_5deg"] >= 0.125 and baseline["localization_accuracy"]["5m_10deg"] == 0


def test_viewsynth_without_model_path_uses_the_shipped_model():
    ext = create_extractor("viewsynth", device="cpu", threads=1)
    assert ext.net.path.resolve() == VIEWSYNTH.resolve()


DEPTHNET = MODELS / "depthnet.onnx"
DEPTHNET_CONFIG = MODELS.parent / "config" / "train_depthnet_selfsup_cpu.yaml"
DEPTHNET_METRIC_SCALE = 22.94  # metres per output unit on the street camera rig: the card's validation-street median


def test_depthnet_contract_card_and_training_config():
    meta = _check_contract_card_and_config(DEPTHNET, "depthnet", "depthnet_selfsup", DEPTHNET_CONFIG)
    assert meta.options["width"] == 32 and meta.trained_input_hw == (96, 320)
    assert f"{DEPTHNET_METRIC_SCALE:g}" in DEPTHNET.with_suffix(".md").read_text()


def test_depthnet_estimates_the_depth_of_an_unseen_street():
    """Short version of the card's held-out-street measurement (another unseen street, fewer images):
    far better than the no-information baseline, and metric with the card's scale."""
    from kp_vo.datasets.synthetic import SyntheticSequence
    from kp_vo.eval.depth import constant_depth, evaluate_depth
    from kp_vo.runtime.extractors import DepthNetEstimator

    street = SyntheticSequence("street", num_frames=61, width=320, height=96, seed=300000)
    frames = [street[i] for i in range(0, 61, 10)]
    estimator = DepthNetEstimator(threads=1)                 # no model_path: the shipped model
    assert estimator.net.path.resolve() == DEPTHNET.resolve()
    model, baseline = evaluate_depth(estimator.estimate, frames), evaluate_depth(constant_depth, frames)
    # measured: abs rel 0.12, delta < 1.25 0.91; constant depth 0.78, 0.27
    assert model["abs_rel"] < min(0.25, 0.4 * baseline["abs_rel"]) and model["a1"] > 0.75, (model, baseline)
    estimator.scale = DEPTHNET_METRIC_SCALE
    still_needed = evaluate_depth(estimator.estimate, frames)["scale_mean"]     # median gt / prediction
    metric = evaluate_depth(estimator.estimate, frames, median_scaling=False)
    assert 0.85 < still_needed < 1.18 and metric["abs_rel"] < 0.25, (still_needed, metric)    # 1.02, 0.12
