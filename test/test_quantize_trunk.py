"""Static int8 of a keypoint model quantizes the trunk only: the keypoint coordinates stay float32."""

import numpy as np
import onnx
import onnxruntime as ort

from kp_vo.export import export_onnx, read_metadata
from kp_vo.export.quantize import quantize_model, trunk_nodes


def _run(path, x):
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, {"image": x})))


def test_static_int8_keeps_heads_and_coordinates_float(tmp_path):
    fp32 = export_onnx("keypointnet_lite", tmp_path / "lite.onnx", widths=(4, 8, 16), head_width=16)
    quantize, heads = trunk_nodes(onnx.load(str(fp32)))
    assert sorted(h.split("/")[2] for h in heads) == ["desc_out", "loc_out", "score_out"]
    assert any("/enc.0/" in n for n in quantize) and not any("/loc_out/" in n for n in quantize)
    rng = np.random.default_rng(0)
    calib = [rng.uniform(-1, 1, (1, 1, 64, 256)).astype(np.float32) for _ in range(3)]
    q = quantize_model(fp32, tmp_path / "lite.int8.onnx", mode="static", calibration=calib)
    assert read_metadata(q).quantization == "static_int8_trunk"
    graph = onnx.load(str(q)).graph
    assert not any(n.op_type == "QuantizeLinear" and "/loc_out/" in n.name for n in graph.node)
    x = calib[0]
    a, b = _run(fp32, x), _run(q, x)
    # Whole-graph uint8 would put u in 0..255 on a grid of 1 px; the trunk-only model moves keypoints by far less.
    assert np.abs(a["coord"] - b["coord"]).max() < 0.25
    assert np.abs(a["coord"] - b["coord"]).mean() < 0.05
