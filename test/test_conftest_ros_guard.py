"""test/conftest.py's ROS guard: with KP_VO_REQUIRE_ROS=1 a skipped ROS test file fails (the ros2
workflow sets it); without it the same file skips. Run on a throw-away test folder in a subprocess."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

ROS_FILE = '''
import pytest
pytest.importorskip("kp_vo_no_such_ros_module", reason="ROS is not installed here")

def test_never_runs():
    assert False
'''
ROS_RUNTIME_SKIP = '''
import pytest

def test_skips_inside():
    pytest.skip("no ROS daemon")

def test_passes():
    assert True
'''
OTHER_FILE = '''
import pytest

def test_data_absent():
    pytest.skip("data not here")
'''


def _run(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    folder = tmp_path / "t"
    folder.mkdir(exist_ok=True)
    shutil.copy(CONFTEST, folder / "conftest.py")
    (folder / "test_ros_fake_import.py").write_text(ROS_FILE)
    (folder / "test_ros_fake_runtime.py").write_text(ROS_RUNTIME_SKIP)
    (folder / "test_other.py").write_text(OTHER_FILE)
    env = {k: v for k, v in os.environ.items() if k != "KP_VO_REQUIRE_ROS"}
    if require is not None:
        env["KP_VO_REQUIRE_ROS"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
                           "--continue-on-collection-errors", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("require", [None, "0"])
def test_ros_files_skip_when_ros_is_not_required(tmp_path, require):
    done = _run(tmp_path, require)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 3 skipped" in done.stdout, done.stdout


def test_ros_files_fail_when_ros_is_required(tmp_path):
    done = _run(tmp_path, "1")
    assert done.returncode != 0, done.stdout
    out = done.stdout
    assert "KP_VO_REQUIRE_ROS=1 but test_ros_fake_import.py was skipped" in out and "ROS is not installed here" in out
    assert "test_ros_fake_runtime.py::test_skips_inside was skipped" in out and "no ROS daemon" in out
    # Only the ROS files are concerned: another file's skip (absent data) stays a skip.
    assert "SKIPPED" in out and "data not here" in out


def test_ros_workflow_requires_ros_and_never_hides_a_failed_install():
    import yaml

    path = CONFTEST.parents[1] / ".github" / "workflows" / "ros2.yml"
    wf = yaml.safe_load(path.read_text())
    (job,) = wf["jobs"].values()
    assert str(job["env"]["KP_VO_REQUIRE_ROS"]) == "1"
    runs = "\n".join(step.get("run", "") for step in job["steps"])
    assert "rosdep install" in runs
    assert "|| true" not in runs and "|| :" not in runs and "continue-on-error" not in path.read_text()
    test_step = next(step["run"] for step in job["steps"] if "colcon test " in step.get("run", ""))
    assert "test/test_ros_nodes.py" in test_step and "test/test_ros_launch.py" in test_step
    assert "colcon test-result" in test_step      # colcon test itself exits 0 on failed tests
