"""The package's shape, checked from its source: imports run one way (no cycle, lazy imports included), and the
running operator's settings come from one module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "operator" / "flaskapp_operator"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Modules of the package that `path` imports, anywhere in it (a function-level import is still an edge)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            if not target.startswith("flaskapp_operator"):
                continue
            for alias in node.names:  # `from . import api` names a module; `from .kube import Cluster` does not
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("flaskapp_operator.")}
    return {m for m in found if m in MODULES and m != name}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def test_the_package_imports_run_one_way():
    graph = {name: imports_of(path) for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_only_the_settings_module_reads_the_operators_environment():
    readers = sorted(name for name, path in MODULES.items()
                     if "os.environ" in path.read_text() or "getenv(" in path.read_text())
    assert readers == ["flaskapp_operator.settings"]


def test_the_pure_core_does_no_io():
    """Parsing, tuning, rendering and deciding import no client, no kopf, no network."""
    impure = ("kubernetes.client", "kubernetes.config", "kubernetes.dynamic", "kubernetes.watch", "kopf", "socket",
              "urllib.request", "requests", "aiohttp", "subprocess", "http.client")
    core = ["api", "schema", "tuning", "render", "plan", "observe", "ownership", "kinds", "naming", "agentreports"]
    for name in core + [m.removeprefix("flaskapp_operator.") for m in MODULES if ".builders" in m]:
        tree = ast.parse(MODULES[f"flaskapp_operator.{name}"].read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
                     for a in n.names}
        bad = sorted(m for m in imported if m.startswith(impure))
        assert not bad, f"{name} imports {bad}"
