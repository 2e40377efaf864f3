"""The `pegasus` command line: parse, call the library, print with rich.

Each verb lives in the module of its kind (train.py, draw.py, info.py); app.py holds what they
share. Errors caused by input are one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib

from pegasus.cli.app import app, show_library_warnings, warn

for _verbs in ("train", "draw", "info"):  # importing registers the verbs, in --help's order
    importlib.import_module(f"pegasus.cli.{_verbs}")


def main() -> None:
    """Entry point: report broken plugins (one line each), then run the command."""
    from pegasus.registry import registry

    show_library_warnings()
    for line in registry().problems():
        warn(line)
    app(prog_name="pegasus")


__all__ = ["app", "main"]
