"""The package's shape (docs/design.md): an import graph without cycles whose imports never
point back up the layers, functions of at most 60 lines, and modules that stay readable. The
module cap is guidance: a module holding one idea may pass 300 lines (the trainer does), so the
test only catches one that has grown past any single idea (500)."""

import ast
import inspect
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
                    if (n := len(f.read_text().splitlines())) > 500]
    long_functions = [line for f in files for line in _long_functions(f, 60)]
    assert not long_modules and not long_functions, long_modules + long_functions


def test_pegasus_sample_reaches_its_sampler_in_few_frames(run, tmp_path, monkeypatch):
    """From the `pegasus` entry point to the sampler function: at most 8 frames of pegasus code
    in at most 6 modules (a reader steps from the verb to the library to the sampler), recorded
    when the sampler is entered."""
    import pegasus
    from pegasus.cli import main
    from pegasus.samplers import heun

    package = str(Path(pegasus.__file__).parent)
    sampler = inspect.unwrap(heun.heun_sampler).__code__  # under torch.no_grad's wrapper
    stacks = []

    def profile(frame, event, _arg):
        if event == "call" and frame.f_code is sampler and not stacks:
            stack, f = [], frame
            while f is not None:
                if f.f_code.co_filename.startswith(package):
                    stack.append(f"{Path(f.f_code.co_filename).relative_to(package)}:"
                                 f"{f.f_code.co_name}")
                f = f.f_back
            stacks.append(stack[::-1])

    monkeypatch.setattr(sys, "argv", ["pegasus", "sample", "--run", str(run), "--num", "2",
                                      "--sampler", "heun", "--steps", "3",
                                      "--out", str(tmp_path / "s.png")])
    sys.setprofile(profile)
    try:
        main()
    except SystemExit as e:
        assert e.code in (0, None)
    finally:
        sys.setprofile(None)
    assert (tmp_path / "s.png").is_file() and stacks, "the sampler was never entered"
    frames = stacks[0]
    modules = {frame.split(":")[0] for frame in frames}
    assert frames[0] == "cli/__init__.py:main" and frames[-1] == "samplers/heun.py:heun_sampler"
    assert len(frames) <= 8 and len(modules) <= 6, frames


def test_the_design_page_names_every_sampler_verb_and_objective():
    """docs/design.md stays in step with the samplers (each one's module), the CLI's verbs and
    the built-in objectives."""
    from pegasus.cli import app
    from pegasus.registry import load_registry
    from pegasus.samplers import SAMPLERS

    page = (ROOT / "docs" / "design.md").read_text()
    missing = [f"sampler {name}" for name in SAMPLERS
               if f"{name.replace('-', '_')}.py" not in page]
    verbs = [c.name or c.callback.__name__ for c in app.registered_commands]
    verbs += [f"{g.name} {c.name or c.callback.__name__}" for g in app.registered_groups
              for c in g.typer_instance.registered_commands]
    missing += [f"verb {verb}" for verb in verbs if f"`pegasus {verb}`" not in page]
    missing += [f"objective {name}" for name in load_registry(entry_points=[], env={}).objectives
                if f"(`{name}`)" not in page]
    assert len(verbs) >= 18 and not missing, missing
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert len(headings) == len(set(headings)), headings  # no section twice
