"""The hooks a pegasus plugin may implement.

A plugin is a module (found through the `pegasus` entry-point group) with functions marked
`@pegasus.hookimpl`. The built-in backbones register through these very hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from pegasus.registry import Backbone

hookspec = pluggy.HookspecMarker("pegasus")
hookimpl = pluggy.HookimplMarker("pegasus")


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Call `register(Backbone(...))` once for each backbone this plugin provides.

    Keep this cheap: declare names, configs and resolutions here and import torch and the
    network code inside the factory, so that `pegasus --help` stays fast.
    """
