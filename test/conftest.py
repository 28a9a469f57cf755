"""Shared fixtures: where the real data lives, and a temporary HOME so evo never writes ~/.evo.

ROS: the ROS-only test files (``test_ros_*.py``) ``importorskip`` rclpy, launch_testing, ... so
that they skip on a machine without ROS. Where ROS is expected (the ros2 CI workflow sets
``KP_VO_REQUIRE_ROS=1``) any skip in those files -- at import or inside a test -- is turned into
a failure, so a broken ROS environment cannot pass as a row of skips.
"""

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KITTI_ROOT = SHARED_DATA / "kitti"
REQUIRE_ROS_ENV = "KP_VO_REQUIRE_ROS"
ROS_TEST_PREFIX = "test_ros_"


def ros_required() -> bool:
    """True when ``KP_VO_REQUIRE_ROS`` is set to anything but "", "0", "false" or "no"."""
    return os.environ.get(REQUIRE_ROS_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _is_ros_test_file(path) -> bool:
    return path is not None and Path(path).name.startswith(ROS_TEST_PREFIX)


def _skip_reason(longrepr) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:   # (path, line, "Skipped: reason")
        return str(longrepr[2])
    return str(longrepr)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skips without one); run them with "
                                       "pytest -m gpu, as scripts/gpu_check.sh does")
    config.addinivalue_line("markers", "slow: long-running (the node-core soak); run by .ci/run's plain "
                                       "pytest at a reduced length, deselect with -m 'not slow'")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A ROS test module skipped at import (``importorskip``) fails when ROS is required."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ros_required() and _is_ros_test_file(getattr(collector, "path", None)):
        report.outcome = "failed"
        report.longrepr = (f"{REQUIRE_ROS_ENV}=1 but {Path(collector.path).name} was skipped: "
                           f"{_skip_reason(report.longrepr)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A ROS test skipped while it runs fails when ROS is required."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and ros_required() and _is_ros_test_file(getattr(item, "path", None)):
        report.outcome = "failed"
        report.longrepr = f"{REQUIRE_ROS_ENV}=1 but {item.nodeid} was skipped: {_skip_reason(report.longrepr)}"


@pytest.fixture
def one_thread():
    """torch on one thread for the test (small CPU models run faster so on a loaded machine); restored after."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def kitti_root() -> Path:
    if not (KITTI_ROOT / "sequences" / "07" / "calib.txt").is_file():
        pytest.skip(f"real KITTI 07 data not found at {KITTI_ROOT} (../shared/data beside the repository)")
    return KITTI_ROOT


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))
