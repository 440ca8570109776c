"""The package's layout rules, read from the code's own imports (module level and in functions).

- the import graph of ``survey_bars`` has no cycle;
- the worker path (``survey_bars.cluster`` and all it imports) reaches neither torch nor
  ``survey_bars.training``;
- the inference-side layers (io, normalise, inference, measure, geometry, flags) import
  nothing from the layers above them (pipeline, cluster, training, simulate, report, cli).
"""

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parents[1] / "survey_bars"


def _module_name(path):
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name, path, known):
    """Modules of the package (and top-level third-party names) that ``name`` imports anywhere."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out.add(a.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            for a in node.names:  # `from . import x` imports the submodule x
                if f"{mod}.{a.name}" in known:
                    out.add(f"{mod}.{a.name}")
    return out


@pytest.fixture(scope="module")
def graph():
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _reach(graph, start):
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(graph.get(m, ()))
        parent = m.rsplit(".", 1)[0]
        if "." in m and parent in graph:  # importing a submodule runs its package's __init__
            todo.append(parent)
    return seen


def test_the_import_graph_has_no_cycle(graph):
    inner = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in inner[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(inner):
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_worker_path_reaches_no_torch_and_no_training(graph):
    reached = _reach(graph, "survey_bars.cluster")
    assert "survey_bars.pipeline" in reached and "survey_bars.inference.runtime" in reached
    assert not {m for m in reached if m == "torch" or m.startswith("torch.")}
    assert not {m for m in reached if m.startswith("survey_bars.training")}


LOWER = ("survey_bars.io", "survey_bars.normalise", "survey_bars.inference", "survey_bars.measure",
         "survey_bars.geometry", "survey_bars.flags", "survey_bars.errors")
UPPER = ("survey_bars.pipeline", "survey_bars.cluster", "survey_bars.training", "survey_bars.simulate",
         "survey_bars.report", "survey_bars.cli", "survey_bars.testing")


def _under(name, prefixes):
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_lower_layers_do_not_import_upper_ones(graph):
    bad = sorted((m, d) for m, deps in graph.items() if _under(m, LOWER) for d in deps if _under(d, UPPER))
    assert bad == []


def test_the_bundle_module_is_torch_and_pickle_free():
    src = (PKG / "inference" / "bundle.py").read_text()
    for bad in ("import torch", "import pickle", "from torch", "from pickle", "allow_pickle"):
        assert bad not in src
