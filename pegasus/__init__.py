"""pegasus: score-based generative models (NCSNv2) that blend two classes into new things.

    import pegasus
    model = pegasus.load("runs/demo")      # a Model: .sample, .blend, .inpaint, .score (api.py)

This module stays light (no torch import) so that the CLI starts fast; `load` imports the rest
when it is called. A plugin author needs `Backbone` (a network), `Objective` (a training loss)
and `hookimpl` (hookspecs.py).
"""

from pegasus.hookspecs import Backbone, Objective, hookimpl
from pegasus.version import __version__


def load(path, device: str = "cpu", **kwargs):
    """The trained model at `path` (a run folder, a checkpoint or exported weights) on `device`:
    a pegasus.api.Model."""
    from pegasus.api import load as _load

    return _load(path, device, **kwargs)


__all__ = ["Backbone", "Objective", "__version__", "hookimpl", "load"]
