"""scripts/gpu_check.sh and its rows helper, without running the benches (the CPU dry run is in docs/gpu.md)."""

import importlib.util
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"


def load_helper():
    path = ROOT / "scripts" / "bench_rows_for_device.py"
    spec = importlib.util.spec_from_file_location("bench_rows_for_device", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["bench_gpu.yaml", "bench_gpu_rgbd.yaml", "bench_gpu_learned.yaml"])
def test_rows_for_cpu_drop_fp16_and_move_cuda_rows(name):
    rows = yaml.safe_load((ROOT / "config" / name).read_text())["rows"]
    helper = load_helper()
    assert helper.rows_for_device(rows, "cuda") == rows
    cpu = helper.rows_for_device(rows, "cpu")
    text = yaml.safe_dump(cpu)
    assert "cuda" not in text and "fp16" not in text
    assert len(cpu) == len(rows) - sum("fp16" in yaml.safe_dump(r) for r in rows.values())
    assert "cuda" in yaml.safe_dump(rows) and "device: cpu" in text


def test_script_parses_and_refuses_bad_arguments():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    for args in (["--device", "tpu"], ["--max-frames", "0"], ["--frobnicate"]):
        done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.strip(), args
