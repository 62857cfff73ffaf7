"""The import graph of ``src/squall`` has no cycle, and no module imports from a layer above its own.

The graph is read from the source (every ``import``, at module level and
inside functions; those under ``if TYPE_CHECKING:`` are for annotations only
and left out), so a lazy import cannot hide an edge. :data:`LAYERS` is the
architecture, bottom to top: a module may import from its own layer and the
layers below. A module belongs to the longest prefix of its name in the table.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import squall

SRC = Path(squall.__file__).resolve().parent

LAYERS: dict[str, int] = {  # as docs/architecture.md ("Layers and what each may import") draws them
    # 1. Foundations: the error tree, the named states, the registry mechanism, redaction, owner-only files.
    "squall.errors": 1, "squall.states": 1, "squall.registry": 1, "squall.secrets": 1, "squall.owner_only": 1,
    # 2. Records that are stored or cross a process boundary: chunk descriptors (and how one splits), read
    #    options, model references, the job's task and invocation reports, worker messages, limits.
    "squall.plan.chunk": 2, "squall.plan.split": 2, "squall.formats.options": 2, "squall.models.base": 2,
    "squall.runtime.task": 2, "squall.runtime.messages": 2, "squall.limits": 2, "squall.invocations": 2,
    # 3. Storage and plugins: reading inputs (and listing them), loading models, writing and committing parts;
    #    the registries of formats, flavors, outputs and output formats live here.
    "squall.io": 3, "squall.formats": 3, "squall.models": 3, "squall.sql": 3, "squall.plan.sources": 3,
    # 4. One invocation: what every backend's worker runs.
    "squall.runtime": 4,
    # 5. Workers: the backends and their registry.
    "squall.backends": 5,
    # 6. The spec, checked against the registries below it.
    "squall.spec": 6,
    # 7. One job: the store, planning, coordination, finalize, the ledger, results, the listeners.
    "squall.store": 7, "squall.plan": 7, "squall.coordinator": 7, "squall.finalize": 7, "squall.coalesce": 7,
    "squall.ledger": 7,
    "squall.failed_rows": 7, "squall.result": 7, "squall.observe": 7,
    # 8. The pipeline: a job from spec to result, and reading jobs back.
    "squall.resolve": 8, "squall.pipeline": 8, "squall.job_status": 8, "squall.tuning": 8, "squall.diff": 8,
    # 9. The public API (and the package, which re-exports it).
    "squall.api": 9, "squall": 9,
    # 10. Entry points: what users and other programs call.
    "squall.cli": 10, "squall.cli_deploy": 10, "squall.service": 10, "squall.triggers": 10, "squall.demo": 10,
}


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` of its file."""

    source: str
    target: str
    line: int

    def __str__(self) -> str:
        where = modules()[self.source].relative_to(SRC.parent)
        return f"{self.source} (layer {layer_of(self.source)}) imports {self.target} (layer {layer_of(self.target)}) at {where}:{self.line}"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int | None:
    """The layer of the longest prefix of ``module`` in :data:`LAYERS` (``squall`` itself only for the package)."""
    prefixes = [p for p in LAYERS if module == p or (p != "squall" and module.startswith(p + "."))]
    return LAYERS[max(prefixes, key=len)] if prefixes else None


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]


def edges() -> list[Edge]:
    """Every import of a squall module by another, read from the source."""
    known = modules()
    found = []
    for module, path in known.items():
        pending: list[ast.AST] = [ast.parse(path.read_text(), str(path))]
        while pending:
            node = pending.pop()
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and _type_checking(child.test):
                    pending.extend(child.orelse)  # the branch that runs
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _imported(module, path.name == "__init__.py", child, known):
                        while target and target not in known:
                            target = target.rpartition(".")[0]  # an attribute of a module: the module
                        if target.startswith("squall") and target != module:
                            found.append(Edge(module, target, child.lineno))
                pending.append(child)
    return found


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer_of(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [edge for edge in edges() if (layer_of(edge.target) or 0) > (layer_of(edge.source) or 0)]
    assert not upward, "imports from a layer above:\n" + "\n".join(sorted(map(str, upward)))


def test_the_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], Edge] = {}
    for edge in edges():
        graph.setdefault(edge.source, set()).add(edge.target)
        lines.setdefault((edge.source, edge.target), edge)
    cycle = _a_cycle(graph)
    assert cycle is None, "an import cycle:\n" + "\n".join(str(lines[(a, b)]) for a, b in zip(cycle, cycle[1:]))


def _a_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or ``None`` (depth-first, colouring nodes)."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checks_see_a_lazy_import_and_ignore_one_for_annotations_only():
    """The reader itself: ``spec`` imports the registries inside its validators (an edge), and ``backends.base``
    imports ``spec`` only under ``TYPE_CHECKING`` (none)."""
    found = {(edge.source, edge.target) for edge in edges()}
    assert ("squall.spec", "squall.models.registry") in found
    assert ("squall.backends.base", "squall.spec") not in found


def test_every_error_squall_raises_to_its_callers_is_defined_in_errors_py():
    """The error tree is one module: no other module subclasses one of its classes (nor ``Exception`` for an
    error that leaves it; a private one, named ``_…``, that its module catches itself is allowed)."""
    tree = {node.name for node in ast.walk(ast.parse((SRC / "errors.py").read_text())) if isinstance(node, ast.ClassDef)}
    elsewhere = []
    for module, path in modules().items():
        if module == "squall.errors":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = {base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "") for base in node.bases}
            if bases & (tree | {"Exception", "BaseException"}):
                elsewhere.append(f"{module}.{node.name}")
    assert elsewhere == [], f"error classes outside errors.py: {elsewhere}"
