"""The package's import graph: no cycles, and imports point down the layers of ``LAYERS``.

The graph is read from the sources with ``ast`` (nothing is imported), every import counted,
those inside functions and ``importlib.import_module("portraitseg...")`` calls included: an import
moved into a function still ties the two modules together.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "portraitseg"

#: Layers, lowest first. A module may import modules of its own group (the name in the table
#: that is the longest prefix of its own) and of groups on lower layers, never higher ones.
#: A new module goes under the group it belongs to; a new top-level module gets a row here.
LAYERS: list[tuple[str, ...]] = [
    ("portraitseg._version", "portraitseg.argtypes", "portraitseg.classes", "portraitseg.config",
     "portraitseg.onnx_contract", "portraitseg.runtime", "portraitseg.sizing", "portraitseg.boxes"),
    ("portraitseg.io", "portraitseg.viz", "portraitseg.inputs"),
    ("portraitseg.sweep",),                       # run summaries: yaml, written through io
    ("portraitseg.models", "portraitseg.data"),   # models and data do not import each other
    ("portraitseg.render",),                      # may use a model; no pipeline, lit, data
    ("portraitseg.subject",),
    ("portraitseg.presets",),
    ("portraitseg.pretrained",),                  # from_pretrained's parts: model file + preset
    ("portraitseg.pipeline",),
    ("portraitseg.video",),                       # clips: the pipeline's steps frame by frame
    ("portraitseg.serve",),                       # HTTP server: the pipeline behind an API and a page
    ("portraitseg.lit",),                         # training: renders its grids through the pipeline
    ("portraitseg.onnx_export", "portraitseg.onnx_infer"),
    ("portraitseg.cli",),                         # command lines: may import anything
    ("portraitseg",),                             # the package's face (lazy PortraitPipeline)
]

#: Edges that break the layering today, each with what removes it. Keep this list short.
KNOWN_EXCEPTIONS: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (a package's name for its __init__)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(target: str, known: dict[str, Path]) -> str | None:
    """The module of the package that importing ``target`` names (longest known prefix)."""
    while target and target not in known:
        target = target.rpartition(".")[0]
    return target or None


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, from the sources."""
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: list[str] = []
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the package, up level - 1
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # `from pkg import mod` names the submodule, `from mod import name` the module
                targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                  and isinstance(node.args[0].value, str)
                  and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"):
                targets.append(node.args[0].value)
        resolved = {_resolve(t, known) for t in targets if t == PACKAGE or t.startswith(PACKAGE + ".")}
        graph[name] = {t for t in resolved if t and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def layer_of(module: str) -> tuple[int, str]:
    """``(layer index, group)`` of a module: the group in ``LAYERS`` that is its longest prefix."""
    best = None
    for index, groups in enumerate(LAYERS):
        for group in groups:
            inside = module == group or module.startswith(group + ".")
            if inside and (best is None or len(group) > len(best[1])):
                best = (index, group)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges ``(a, b)`` where ``a`` imports ``b`` of another group on the same or a higher layer."""
    bad = []
    for a, targets in graph.items():
        la, ga = layer_of(a)
        for b in targets:
            lb, gb = layer_of(b)
            if gb != ga and lb >= la:
                bad.append((a, b))
    return sorted(bad)


def test_graph_is_read() -> None:
    """The reader sees top-level and function-level imports, of modules of the package only."""
    graph = import_graph()
    assert "portraitseg.models.registry" in graph["portraitseg.models.loading"]
    assert "portraitseg.onnx_export" in graph["portraitseg.cli.export"]  # imported inside a function
    assert all(t.startswith(PACKAGE) for targets in graph.values() for t in targets)


def test_find_cycle_reports_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    bad = [edge for edge in upward_imports(import_graph()) if edge not in KNOWN_EXCEPTIONS]
    assert not bad, "imports against the layers (see LAYERS): " + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_known_exceptions_still_exist() -> None:
    """An exception that the code no longer needs is removed from the list."""
    edges = set(upward_imports(import_graph()))
    stale = [edge for edge in KNOWN_EXCEPTIONS if edge not in edges]
    assert not stale, f"no longer needed, remove from KNOWN_EXCEPTIONS: {stale}"

