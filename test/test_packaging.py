"""package.xml declares exactly what the ROS side uses, the LICENSE matches it, the pip requirements
are all used, and the code passes lint.

The ROS dependencies are read from the code with ``ast``: the modules that ``kp_vo/ros`` and
``launch/`` import, the message packages ``kp_vo.bridge.conversions`` builds messages of (the
nodes import them through ``ros_factory``), the packages whose executables the launch files run
(``Node(package=...)`` without a ``condition``: a node started only when a launch argument asks for
it, such as RViz, is optional and not declared) and ``ros2 <verb>`` commands (``ros2 bag`` also needs
the MCAP storage plugin, as ``kp-vo bag/make-bag --storage mcap`` write MCAP bags).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_XML = ROOT / "package.xml"
# Top-level imports that are not ROS packages: this project, the standard library and pip requirements.
NOT_ROS = {"kp_vo", "numpy", "cv2", "yaml"}
# rosdep keys of the Python requirements that rosdep can install, by their requirements.txt name.
PYTHON_KEYS = {"python3-numpy": "numpy", "python3-scipy": "scipy", "python3-opencv": "opencv-python-headless",
               "python3-yaml": "PyYAML", "python3-matplotlib": "matplotlib", "python3-tqdm": "tqdm"}
# The module a pip requirement provides, where it is not the distribution name in lower case with "_" for "-".
IMPORT_NAMES = {"opencv-python-headless": "cv2", "PyYAML": "yaml", "onnxruntime-gpu": "onnxruntime",
                "faiss-cpu": "faiss"}
MSGTYPE = re.compile(r"[a-z][a-z0-9_]*/msg/[A-Z][A-Za-z0-9]*")
ROS2_VERBS = {"bag": {"ros2bag", "rosbag2_storage_mcap"}}


def _declared(kind: str) -> set[str]:
    return {e.text.strip() for e in ET.parse(PACKAGE_XML).getroot().iter(kind)}


def _trees(paths) -> list[ast.Module]:
    return [ast.parse(p.read_text(), str(p)) for p in paths]


def imported_packages(trees) -> set[str]:
    """Top-level names of every absolute import (module-level or inside functions)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "__future__"} - NOT_ROS


def imported_modules(trees) -> set[str]:
    """Full dotted names of every absolute import (module-level or inside functions)."""
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
    return names


def modules_run_with_dash_m(trees) -> set[str]:
    """``X`` of every ``[..., "-m", "X", ...]`` list literal (a tool run as ``python -m X``)."""
    found = set()
    for lst in (n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.List)):
        words = [e.value if isinstance(e, ast.Constant) else None for e in lst.elts]
        found |= {b for a, b in zip(words, words[1:]) if a == "-m" and isinstance(b, str)}
    return found


def pinned(requirements: str) -> set[str]:
    """Distribution names pinned in a requirements file (``-r`` includes and comments aside)."""
    lines = (ROOT / requirements).read_text().splitlines()
    return {line.split("==")[0].split(";")[0].strip() for line in lines
            if line.strip() and not line.startswith(("#", "-r"))}


def unused_pins(pins: set[str], modules: set[str]) -> list[str]:
    """The pins none of ``modules`` comes from (a pin's module or one of its submodules)."""
    def used(pin: str) -> bool:
        top = IMPORT_NAMES.get(pin, pin.lower().replace("-", "_"))
        return any(m == top or m.startswith(top + ".") for m in modules)
    return sorted(p for p in pins if not used(p))


def message_packages(tree) -> set[str]:
    """Packages of the ``pkg/msg/Name`` string literals of a module."""
    return {n.value.split("/")[0] for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and MSGTYPE.fullmatch(n.value)}


def launched_packages(trees) -> set[str]:
    """Packages of unconditional ``Node(package="...")`` and of the ``ros2 <verb>`` commands of
    ``ExecuteProcess(cmd=[...])``."""
    found = set()
    for tree in trees:
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            optional = any(kw.arg == "condition" for kw in call.keywords)
            for kw in call.keywords:
                if kw.arg == "package" and isinstance(kw.value, ast.Constant) and not optional:
                    found.add(kw.value.value)
                if kw.arg == "cmd" and isinstance(kw.value, ast.List):
                    words = [e.value for e in kw.value.elts[:2] if isinstance(e, ast.Constant)]
                    if len(words) == 2 and words[0] == "ros2":
                        found |= ROS2_VERBS.get(words[1], {f"ros2{words[1]}"})
    return found - {"kp_vo"}


def ros_runtime_dependencies() -> set[str]:
    launch_trees = _trees(sorted((ROOT / "launch").glob("*.py")))
    ros_trees = _trees(sorted((ROOT / "kp_vo" / "ros").glob("*.py")))
    conversions = ast.parse((ROOT / "kp_vo" / "bridge" / "conversions.py").read_text())
    return (imported_packages(launch_trees + ros_trees) | message_packages(conversions)
            | launched_packages(launch_trees))


def test_exec_depends_are_what_the_ros_code_uses():
    declared = {d for d in _declared("exec_depend") if not d.startswith("python3-")}
    used = ros_runtime_dependencies()
    assert declared == used, f"declared but unused: {sorted(declared - used)}; used but undeclared: {sorted(used - declared)}"


def test_python_exec_depends_are_pinned_requirements():
    pins = pinned("requirements.txt")
    declared = {d for d in _declared("exec_depend") if d.startswith("python3-")}
    assert declared <= set(PYTHON_KEYS), f"no requirement known for {sorted(declared - set(PYTHON_KEYS))}"
    assert {PYTHON_KEYS[d] for d in declared} <= pins


def test_every_runtime_requirement_is_imported():
    """requirements.txt pins only what the package, its launch files or its scripts import."""
    paths = [*(ROOT / "kp_vo").rglob("*.py"), *(ROOT / "launch").glob("*.py"), *(ROOT / "scripts").glob("*.py"),
             ROOT / "setup.py"]
    unused = unused_pins(pinned("requirements.txt"), imported_modules(_trees(paths)))
    assert not unused, f"pinned in requirements.txt but imported nowhere: {unused}"


def test_every_development_requirement_is_used_by_the_tests():
    """requirements-dev.txt adds only what the tests import or run with ``python -m``, and repeats no
    runtime pin (it includes requirements.txt)."""
    trees = _trees(sorted((ROOT / "test").glob("*.py")))
    dev = pinned("requirements-dev.txt")
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert not dev & pinned("requirements.txt")
    unused = unused_pins(dev, imported_modules(trees) | modules_run_with_dash_m(trees))
    assert not unused, f"pinned in requirements-dev.txt but used by no test: {unused}"


def test_test_depends_are_what_the_tests_skip_without():
    """The ROS packages a test needs are the ones it ``pytest.importorskip``s (it skips without ROS)."""
    skipped_without = set()
    for tree in _trees(sorted((ROOT / "test").glob("test_*.py"))):
        skipped_without |= {n.args[0].value.split(".")[0] for n in ast.walk(tree)
                            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                            and n.func.attr == "importorskip" and isinstance(n.args[0], ast.Constant)}
    ros_needed = skipped_without - NOT_ROS
    test_only = _declared("test_depend") - {"python3-pytest"}
    assert test_only <= ros_needed, f"test_depend never used by a test: {sorted(test_only - ros_needed)}"
    assert ros_needed <= test_only | _declared("exec_depend"), f"undeclared: {sorted(ros_needed - test_only)}"


def test_license_file_is_the_declared_apache_2():
    assert _declared("license") == {"Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX: How to apply the Apache License" in text


def test_lint_passes():
    """ruff with the configuration of pyproject.toml (pyflakes-class errors, syntax, statements, line
    length 140, warnings; `# noqa: F401` marks registration imports), the one `ruff check` uses."""
    lint = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]
    assert {"F", "E7", "E9", "E501", "W"} <= set(lint["select"]), lint["select"]
    paths = [str(ROOT / p) for p in ("kp_vo", "launch", "test", "scripts", "setup.py")]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                           "--output-format", "concise", *paths], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
