"""Print the import graph of the pegasus package and fail on a cycle or on an import that
points back up the layers (docs/design.md).

    python scripts/import_graph.py

Every `import` and `from ... import` counts, function-local ones included (a cycle hidden in a
function is still a cycle). Each line is a module and the pegasus modules it imports; the last
lines say whether the graph has a cycle and whether any module imports from a higher layer
(exit 1 if so, each offence printed). tests/test_layout.py runs it in CI.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "pegasus"
# The layers, lowest first: a module may import from its own layer and the ones below, never
# from one above. A name is a module or a package (all its modules).
LAYERS = [
    ("base", ["errors", "signatures", "version", "coerce", "atomic", "devices", "images", "colour", "texture",
              "distributed", "allocator"]),
    ("noise", ["noise"]),
    ("plugins", ["hookspecs", "backbones", "objectives", "registry"]),
    ("config", ["config"]),
    ("data", ["data"]),
    ("model", ["model"]),
    ("samplers", ["samplers"]),
    ("fastpath", ["fastpath"]),
    ("run", ["run"]),
    ("work", ["training", "tasks", "interop", "device_report", "testing"]),
    ("api", ["api"]),
    ("studio", ["studio"]),
    ("cli", ["cli", "__main__", ""]),  # "": the package's front door, pegasus/__init__.py
]


def layer_of(module: str) -> int:
    name = module.removeprefix("pegasus").removeprefix(".")
    for rank, (_, members) in enumerate(LAYERS):
        for member in members:
            if name == member or (member and name.startswith(member + ".")):
                return rank
    raise SystemExit(f"{module} is in no layer; add it to LAYERS in {__file__}")


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
    upward = [f"{m} ({LAYERS[layer_of(m)][0]}) imports {n} ({LAYERS[layer_of(n)][0]})"
              for m in sorted(graph) for n in sorted(graph[m]) if layer_of(n) > layer_of(m)]
    for line in upward:
        print(f"points up: {line}")
    if cycle:
        print("cycle: " + " -> ".join(cycle))
    print(f"{'a cycle' if cycle else 'no cycle'} among {len(graph)} modules; "
          f"{len(upward)} imports point up the layers")
    return 1 if cycle or upward else 0


if __name__ == "__main__":
    sys.exit(main())
