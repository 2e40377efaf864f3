"""pegasus: score-based generative models (NCSNv2) that blend two classes into new things.

This module stays light (no torch import) so that the CLI starts fast; import the pieces you
need from their modules: pegasus.run.job, pegasus.model.loss, pegasus.training.trainer, pegasus.tasks.blend...
"""

from pegasus.hookspecs import Backbone, hookimpl

__version__ = "0.1.0"

__all__ = ["Backbone", "__version__", "hookimpl"]
