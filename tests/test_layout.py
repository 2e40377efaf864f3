"""The package's shape (docs/design.md): an import graph without cycles whose imports never
point back up the layers, modules of at most 300 lines and functions of at most 60."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_graph_has_no_cycle_and_nothing_points_up():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "import_graph.py")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:]
    assert "no cycle" in done.stdout and " 0 imports point up" in done.stdout


def _long_functions(path: Path, most: int) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > most]


def test_modules_and_functions_stay_small():
    files = sorted((ROOT / "pegasus").rglob("*.py"))
    long_modules = [f"{f.relative_to(ROOT)} ({n})" for f in files
                    if (n := len(f.read_text().splitlines())) > 300]
    long_functions = [line for f in files for line in _long_functions(f, 60)]
    assert not long_modules and not long_functions, long_modules + long_functions
