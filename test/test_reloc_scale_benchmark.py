"""The relocalization scale benchmark (python -m kp_vo.reloc.scale_benchmark) on a tiny map."""

import json

import pytest

from kp_vo.reloc import scale_benchmark


@pytest.mark.parametrize("metric,dim", [("l2", 64), ("hamming", 256)])
def test_scale_benchmark_reports_latency_recall_and_query_difficulty(tmp_path, capsys, metric, dim):
    out = tmp_path / "scale.json"
    assert scale_benchmark.main(["--metric", metric, "--dim", str(dim), "--min-size", "6000", "--max-size", "6000",
                                 "--kind", "ivf", "--frames", "3", "--queries", "20,100",
                                 "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report == json.loads(capsys.readouterr().out)
    (row,) = report["results"]
    assert row["size"] == 6000 and row["index_kind"] == "ivf"
    assert set(row["latency_per_frame_by_query_descriptors"]) == {"20", "100"}
    assert row["latency_per_frame_by_query_descriptors"]["100"]["median_ms"] > 0
    # default queries are matchable re-observations: the exact NN is (almost always) their source
    assert row["exact_nn_is_query_source"] >= 0.9
    assert 0.0 < row["median_nn_distance_ratio"] < 1.0
    assert row["recall_at_1_vs_exact"] >= 0.8
