"""Print the import graph of the pegasus package and fail on a cycle.

    python scripts/import_graph.py

Every `import` and `from ... import` counts, function-local ones included (a cycle hidden in a
function is still a cycle). Each line is a module and the pegasus modules it imports; the last
line says whether the graph has a cycle (exit 1 if so, with the cycle printed).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pegasus"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The pegasus modules `path` imports (a name imported from a package counts as its
    submodule when there is one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in modules:
                subs = {f"{node.module}.{a.name}" for a in node.names} & modules
                found |= subs or {node.module}
    return found - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (cycle := visit(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def main() -> int:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports(f, modules) for f in files}
    # A package's __init__ importing its own submodules is how packages load, not a cycle.
    for m in graph:
        graph[m] = {n for n in graph[m] if not n.startswith(m + ".")}
    for m in sorted(graph):
        deps = ", ".join(n.removeprefix("pegasus.") for n in sorted(graph[m])) or "-"
        print(f"{m.removeprefix('pegasus.') or 'pegasus'}: {deps}")
    cycle = find_cycle(graph)
    if cycle:
        print("cycle: " + " -> ".join(cycle))
        return 1
    print(f"no cycle among {len(graph)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
