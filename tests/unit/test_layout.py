"""The layout's import rules (docs/design.md "Import rules"), checked on the source text.

- only `finpass_pipeline/cli.py` and `finpass_pipeline/dev/` import `consumers` or `producers`;
- `consumers` and `producers` do not import each other;
- no import cycle among the modules (every import counts, lazy ones inside functions too,
  except those under `if TYPE_CHECKING:`);
- the consumer's core names events by their types, never `Any`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("finpass_pipeline", "consumers", "producers")
MAY_IMPORT_ROLES = ("finpass_pipeline.cli", "finpass_pipeline.dev")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules `path` imports (a name imported from a package counts as its
    submodule when there is one), skipping `if TYPE_CHECKING:` blocks."""
    tree = ast.parse(path.read_text("utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names
                         if f"{node.module}.{a.name}" in modules)
    return found


GRAPH = {name: imports(path, set(sources())) for name, path in sources().items()}


def top(name: str) -> str:
    return name.partition(".")[0]


def test_the_graph_is_read() -> None:
    """The checks below see real edges (a parser that found none would pass them all)."""
    assert "consumers.store" in GRAPH["consumers.committer"]
    assert "finpass_pipeline.events.codec" in GRAPH["finpass_pipeline.events"]
    assert "consumers.daemon" in GRAPH["finpass_pipeline.cli"]  # a lazy import, inside a function
    assert "finpass_pipeline.events.models" not in GRAPH["finpass_pipeline.events.routing"]


def test_only_the_shell_and_dev_tools_import_consumers_or_producers() -> None:
    offenders = sorted(
        f"{name} -> {dep}" for name, deps in GRAPH.items() for dep in deps
        if top(name) == "finpass_pipeline" and top(dep) in ("consumers", "producers")
        and not name.startswith(MAY_IMPORT_ROLES))
    assert offenders == []


def test_consumers_and_producers_do_not_import_each_other() -> None:
    offenders = sorted(
        f"{name} -> {dep}" for name, deps in GRAPH.items() for dep in deps
        if {top(name), top(dep)} == {"consumers", "producers"})
    assert offenders == []


def test_no_import_cycle() -> None:
    # A package's __init__ importing its own submodules (a facade) is not a cycle by itself;
    # anything else that comes back to where it started is.
    def edges(name: str) -> set[str]:
        return {d for d in GRAPH[name] if not (name and d.startswith(name + "."))}

    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for dep in sorted(edges(name)):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_consumer_core_types_its_events() -> None:
    """No `Any` where the consumer handles events: records, planner, apply, store."""
    for name in ("records", "planner", "apply", "store"):
        text = (ROOT / "consumers" / f"{name}.py").read_text("utf-8")
        hits = [line.strip() for line in text.splitlines()
                if re.search(r"\bevent\w*\b.*\bAny\b|\be: Any\b", line)]
        assert hits == [], f"consumers/{name}.py: {hits}"
        assert "getattr(e" not in text and "hasattr(" not in text, name
