"""Shared fixtures: where the real data lives, and a temporary HOME so evo never writes ~/.evo."""

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KITTI_ROOT = SHARED_DATA / "kitti"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skips without one); run them with "
                                       "pytest -m gpu, as scripts/gpu_check.sh does")


@pytest.fixture
def kitti_root() -> Path:
    if not (KITTI_ROOT / "sequences" / "07" / "calib.txt").is_file():
        pytest.skip(f"real KITTI 07 data not found at {KITTI_ROOT} (../shared/data beside the repository)")
    return KITTI_ROOT


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
