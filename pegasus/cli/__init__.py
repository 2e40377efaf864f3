"""The `pegasus` command line: parse, call the library, print with rich.

Each verb lives in a module of its own: train.py (train, train-guide, train-judge), sample.py
(sample, export), blend.py, hybrid.py, inpaint.py, encode.py (encode, decode), evaluate.py (eval),
imports.py (import ncsnv2), studio.py, and info.py for the verbs that describe (data, sigmas, plugins,
backbones, samplers, device); app.py holds what they share, options.py the options several
take. Errors caused by input are one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib

from pegasus.cli.app import app, show_library_warnings, warn

# Importing a module registers its verbs, in --help's order.
for _verbs in ("train", "sample", "blend", "hybrid", "inpaint", "encode", "evaluate", "imports", "info",
               "studio"):
    importlib.import_module(f"pegasus.cli.{_verbs}")


def main() -> None:
    """Entry point: report broken plugins (one line each), then run the command."""
    from pegasus.allocator import keep_freed_memory
    from pegasus.registry import registry

    keep_freed_memory()
    show_library_warnings()
    for line in registry().problems():
        warn(line)
    app(prog_name="pegasus")


__all__ = ["app", "main"]
