"""KeypointNet distillation: the loss's known answers, crops on the teacher's cell grid, a few training
steps that resume from a checkpoint, and an exported student served by the keypointnet extractor."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from kp_vo.export import read_metadata
from kp_vo.models import build_model
from kp_vo.runtime.extractors import KeypointNetExtractor
from kp_vo.training.recipe import config_hash
from kp_vo.training.recipes.keypointnet_distill import (
    DistillLossConfig,
    KeypointDistillConfig,
    distill_loss,
)
from kp_vo.training.trainer import train

TEACHER = Path(__file__).resolve().parents[1] / "models" / "keypointnet_kp2d.onnx"
pytestmark = pytest.mark.skipif(not TEACHER.is_file(), reason="shipped teacher models/keypointnet_kp2d.onnx absent")


def _images(folder: Path, n: int = 4, size=(72, 104), seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    h, w = size
    for i in range(n):
        img = cv2.resize(rng.uniform(0, 255, (h // 8, w // 8)).astype(np.uint8), (w, h))
        for _ in range(12):
            cv2.circle(img, (int(rng.integers(0, w)), int(rng.integers(0, h))), int(rng.integers(3, 10)),
                       int(rng.integers(0, 255)), -1)
        cv2.imwrite(str(folder / f"img_{i:02d}.png"), img)
    return folder


def _config(tmp_path: Path, **train) -> dict:
    t = {"steps": 2, "batch_size": 2, "threads": 1, "device": "cpu", "log_every": 1, "checkpoint_every": 2,
         "progress": False, "export": False, "output_dir": str(tmp_path / "run")}
    t.update(train)
    return {"teacher": str(TEACHER), "teacher_threads": 1, "widths": [4, 8, 16], "head_width": 16,
            "kitti_root": "", "photo_dir": str(_images(tmp_path / "imgs")), "holdout_every": 2,
            "crop_height": 48, "crop_width": 64, "samples_per_epoch": 16, "val_samples": 2, "train": t}


def test_distill_loss_known_answers():
    torch.manual_seed(0)
    b, d, hc, wc = 2, 64, 5, 6
    t_score = torch.rand(b, 1, hc, wc)
    desc = torch.nn.functional.normalize(torch.randn(b, d, hc, wc), dim=1)
    coord = torch.rand(b, 2, hc, wc) * 40
    valid = torch.ones(b, 1, hc, wc)
    batch = {"score": t_score, "coord": coord, "descriptor": desc, "valid": valid}
    logit = torch.logit(t_score)
    cfg = DistillLossConfig(w_score=0.0, w_loc=1.0, w_desc=1.0)
    loss, s = distill_loss({"score_logit": logit, "coord": coord, "descriptor": desc}, batch, cfg)
    assert float(loss) == pytest.approx(0.0, abs=1e-5) and s["top25_overlap"] == pytest.approx(1.0)
    shifted = coord + torch.tensor([1.0, -0.5]).view(1, 2, 1, 1)                  # L1 = 1.5 px everywhere
    _, s = distill_loss({"score_logit": logit, "coord": shifted, "descriptor": -desc}, batch, cfg)
    assert s["loc_px"] == pytest.approx(1.5, rel=1e-5) and s["desc_1mcos"] == pytest.approx(2.0, rel=1e-5)
    # Cells outside ``valid`` count for nothing.
    valid2 = valid.clone()
    valid2[..., 0] = 0
    far = coord.clone()
    far[..., 0] += 100
    _, s = distill_loss({"score_logit": logit, "coord": far, "descriptor": desc}, {**batch, "valid": valid2}, cfg)
    assert s["loc_px"] == pytest.approx(0.0, abs=1e-5)


def test_distill_trains_resumes_and_exports_a_student_the_extractor_serves(tmp_path):
    from kp_vo.config import load_config
    from kp_vo.training.recipes import get_recipe

    cfg = _config(tmp_path)
    first = train("keypointnet_distill", cfg)
    assert first.step == 2 and first.checkpoint is not None
    # Crops lie on the teacher's cell grid: a crop's targets are the cached teacher outputs at that offset.
    recipe = get_recipe("keypointnet_distill")(load_config(KeypointDistillConfig, cfg))
    item = recipe.build_dataset("train")[0]
    assert item["image"].shape == (1, 48, 64) and item["coord"].shape == (2, 6, 8)
    assert item["descriptor"].shape == (64, 6, 8) and float(item["valid"][0, 0].sum()) == 0.0
    inner = item["coord"][:, 1:-1, 1:-1]
    assert float(inner.min()) > -8.0 and float(inner[0].max()) < 64 + 8 and float(inner[1].max()) < 48 + 8

    resumed = train("keypointnet_distill", _config(tmp_path, steps=4, resume="auto"))
    assert resumed.start_step == 2 and resumed.step == 4
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["split"] == "train"]
    assert steps == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in rows)

    # Export through the recipe (trained, with the config hash) and serve it with the keypointnet extractor.
    model = build_model("keypointnet_lite", widths=(4, 8, 16), head_width=16)
    from kp_vo.training.checkpoint import load_checkpoint
    load_checkpoint(resumed.checkpoint, {"keypointnet_lite": model})
    [path] = recipe.export({"keypointnet_lite": model}, tmp_path / "export")
    meta = read_metadata(path)
    assert meta.kind == "keypointnet_lite" and meta.trained and meta.channels == 1
    assert meta.training_config_hash == config_hash(recipe.config)
    ext = KeypointNetExtractor(model_path=str(path), max_keypoints=50, threads=1)
    image = cv2.imread(str(tmp_path / "imgs" / "img_00.png"), cv2.IMREAD_GRAYSCALE)
    feats = ext.extract(np.dstack([image] * 3))
    assert 0 < len(feats.keypoints) <= 50 and feats.descriptors.shape[1] == 64
    assert np.allclose(np.linalg.norm(feats.descriptors, axis=1), 1.0, atol=1e-4)
    assert feats.keypoints[:, 0].max() <= 103 and feats.keypoints[:, 1].max() <= 71
