"""scripts/depthnet_onnx_to_safetensors.py: a DepthNet export back to trainable weights that compute the
exported function (BatchNorm folded into the encoder's convolutions, then calibrated)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
KITTI = ROOT.parent / "shared" / "data" / "kitti"
pytestmark = pytest.mark.skipif(not (KITTI / "sequences" / "00").is_dir(),
                                reason="needs ../shared/data/kitti sequence 00 (calibration images)")


def _script():
    spec = importlib.util.spec_from_file_location("onnx_to_st", ROOT / "scripts" / "depthnet_onnx_to_safetensors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_depthnet_round_trips_into_the_training_recipe(tmp_path):
    import onnxruntime as ort
    from kp_vo.config import load_config
    from kp_vo.training.recipes.depthnet_selfsup import RECIPE
    from kp_vo.training.recipes.kp3d import normalise_input

    onnx_path = ROOT / "models" / "depthnet.onnx"
    out = tmp_path / "depthnet.safetensors"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert _script().main([str(onnx_path), str(out), "--calibrate", str(KITTI), "--frames", "0", "8"]) == 0
        recipe = RECIPE(load_config(RECIPE.config_type, {"model": {
            "width": 32, "posenet_encoder_width": 32, "posenet_width": 128, "depthnet_weights": str(out)}}))
        net = recipe.build_models()["depthnet"].eval()
        images = _script().calibration_images(str(KITTI), "00", (100, 102), (96, 320))
        x = normalise_input(images, net)
        with torch.no_grad():
            ours = net({"image": x})["inv_depth"].numpy()
    finally:
        torch.set_num_threads(n)
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(
        ["inv_depth"], {"image": x.numpy()})[0]
    np.testing.assert_allclose(ours, want, rtol=2e-3)      # float32 rounding (measured: up to 4e-4)
