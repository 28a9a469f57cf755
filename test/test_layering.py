"""The package's layers, checked on the source: every ``import`` of every module (module level and
inside functions; ``if TYPE_CHECKING:`` blocks aside) is parsed with ``ast`` and held against these layers:

    errors, types, config, settings, fileio, trajio    (foundation)
    geometry -> features -> odometry / reloc -> pipeline -> bridge -> ros, cli
    models -> export -> runtime;   datasets, eval, training (the lab) above the core
    eval uses the runtime, models and datasets, never training nor the adapters (bridge, ros, cli)

plus: no import cycles between modules, the ORB odometry imports neither torch, onnxruntime
nor FAISS until they are used, and docs/architecture.md lists the imports between layers as they are.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kp_vo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The kp_vo modules ``path`` imports anywhere in its body (``from kp_vo.x import y`` counts as
    kp_vo.x.y when that is a module, else kp_vo.x)."""
    tree = ast.parse(path.read_text(), str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {name for name in found if name == "kp_vo" or name.startswith("kp_vo.")}


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:`` (annotations only, never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imported_modules(path) for name, path in MODULES.items()}


def layer(module: str) -> str:
    """The layer of ``kp_vo.<layer>...``: the first part under kp_vo."""
    return module.split(".")[1] if module.count(".") else ""


def edges_into(sources: set[str], forbidden: set[str]) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if layer(m) in sources
                  for t in targets if layer(t) in forbidden)


FOUNDATION = {"errors", "types", "config", "settings", "fileio", "trajio"}
LAB = {"training", "eval", "export", "cli"}
ADAPTERS = {"bridge", "ros", "cli"}


def documented_imports() -> dict[str, set[str]]:
    """The ``layer -> layers`` list of docs/architecture.md (foundation layers and comments in
    parentheses left out; ``any layer`` as None)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    found = {}
    for source, targets in re.findall(r"^([a-z]+) +-> (.+)$", text, flags=re.MULTILINE):
        names = {n.strip() for n in re.sub(r"\([^)]*\)", "", targets).split(",")}
        found[source] = None if names == {"any layer"} else names - FOUNDATION - {"foundation only"}
    return found


def test_the_import_graph_was_read():
    assert "kp_vo.odometry.tracker" in GRAPH and "kp_vo.features.base" in GRAPH["kp_vo.odometry.tracker"]


def test_geometry_imports_only_the_foundation():
    bad = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if layer(m) == "geometry"
                 for t in targets if layer(t) not in {"geometry", "errors", "types"})
    assert not bad, bad


def test_foundation_imports_no_layer_above_it():
    bad = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if layer(m) in FOUNDATION
                 for t in targets if layer(t) not in FOUNDATION)
    assert not bad, bad


def test_features_odometry_and_reloc_never_import_the_lab_the_adapters_or_datasets():
    assert not edges_into({"features"}, LAB | ADAPTERS | {"odometry", "reloc", "datasets", "pipeline", "runtime"})
    assert not edges_into({"odometry", "reloc"}, LAB | ADAPTERS | {"datasets", "pipeline", "runtime", "models"})


def test_datasets_never_import_the_core_above_geometry_or_the_lab():
    assert not edges_into({"datasets"}, LAB | ADAPTERS | {"odometry", "reloc", "pipeline", "runtime", "models"})


def test_eval_never_imports_training_or_the_adapters():
    """Evaluation measures what the runtime, models and datasets provide; what it shares with the
    training recipes (augmentations, synthetic objects, checkpoint reading) lives in those layers."""
    assert not edges_into({"eval"}, {"training"} | ADAPTERS)


def test_pipeline_and_bridge_never_import_the_lab_or_ros():
    assert not edges_into({"pipeline", "bridge"}, {"training", "export", "cli", "ros"})


def test_only_cli_imports_cli():
    assert not sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if layer(m) != "cli"
                      for t in targets if layer(t) == "cli")


def test_the_architecture_doc_lists_the_imports_between_layers():
    """docs/architecture.md's ``A -> B`` list is the layer graph of the code: every layer, nothing more
    or less (the foundation aside)."""
    documented = documented_imports()
    layers = {layer(m) for m in GRAPH} - FOUNDATION - {""}
    assert set(documented) == layers
    actual = {source: {layer(t) for m, targets in GRAPH.items() if layer(m) == source for t in targets}
              - FOUNDATION - {source, ""} for source in layers}
    assert {s: d for s, d in documented.items() if d is not None} == {
        s: a for s, a in actual.items() if documented[s] is not None}


def test_no_import_cycles_between_modules():
    """Tarjan's strongly connected components over module -> imported module (packages' __init__
    importing their own submodules, and those importing the package's names, included)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_orb_odometry_loads_no_heavy_library():
    """Importing the pipeline and the tracker (relocalization included) loads neither torch,
    onnxruntime nor FAISS: they are imported where they are used."""
    code = ("import sys, kp_vo.pipeline, kp_vo.odometry.tracker, kp_vo.reloc.localizer, kp_vo.bridge.node_core; "
            "print(','.join(m for m in ('torch', 'onnxruntime', 'faiss') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""


@pytest.mark.parametrize("source, target", [
    ("kp_vo.reloc.evaluation", "kp_vo.datasets"),
    ("kp_vo.datasets.scene", "kp_vo.datasets.random_room"),
    ("kp_vo.eval.keypoints", "kp_vo.training.homography"),
    ("kp_vo.eval.objects", "kp_vo.training.checkpoint"),
])
def test_fixed_edges_would_be_caught(source, target):
    """Putting a removed edge back breaks a rule above (the checks are not vacuous)."""
    GRAPH[source].add(target)
    try:
        failed = []
        for check in (test_features_odometry_and_reloc_never_import_the_lab_the_adapters_or_datasets,
                      test_eval_never_imports_training_or_the_adapters, test_no_import_cycles_between_modules):
            try:
                check()
            except AssertionError:
                failed.append(check.__name__)
        assert failed
    finally:
        GRAPH[source].discard(target)
