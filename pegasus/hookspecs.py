"""The plugin API: the hooks a pegasus plugin may implement and the types it hands back.

A plugin is a module (found through the `pegasus` entry-point group) with functions marked
`@pegasus.hookimpl`. The built-in backbones register through these very hooks. This module
imports nothing of the registry (as pytest's and datasette's hookspecs), so a plugin, the
registry and the config code can all import it without a cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from pegasus.coerce import from_mapping
from pegasus.errors import ConfigError, RegistryError

hookspec = pluggy.HookspecMarker("pegasus")
hookimpl = pluggy.HookimplMarker("pegasus")

DEFAULT_RESOLUTIONS = (32, 48, 64, 96)


@dataclass(frozen=True)
class EmptyConfig:
    """The config of a backbone that has no options."""


@dataclass(frozen=True)
class Backbone:
    """What a plugin declares for one backbone.

    factory(config, res=..., channels=...) returns an nn.Module whose forward(x, sigma) returns
    a tensor shaped like x; the engine divides it by sigma. `config` is a dataclass type whose
    fields all have defaults; it is what `model.FIELD` overrides and what checkpoints record.
    """

    name: str
    description: str
    factory: Callable[..., Any]
    config: type = EmptyConfig
    resolutions: tuple[int, ...] = DEFAULT_RESOLUTIONS
    # Whether the fast path stores activations channels_last (NHWC), on a GPU and on a CPU.
    # Convolution-heavy networks gain (the RefineNet: bf16 1.23x -> 1.42x eager fp32 on an H100;
    # fp32 on this project's CPU 1.1-1.3x a training step, 1.3-1.6x an evaluation); networks
    # dominated by elementwise work on strided views (norms, attention reshapes) lose (the U-Net:
    # 1.05x -> 0.80x on the H100, bench/README.md; 0.8-1.0x on the CPU). Off unless
    # declared, so that a backbone nobody measured is never made slower than eager float32 by it.
    # Uncompiled on a GPU, both layouts are then timed there anyway (pegasus/fastpath/probe.py).
    channels_last: bool = False
    # Whether the network's sigma input interpolates between the levels it was trained on, so
    # that samplers may walk any grid of a run trained on NCSNv2's discrete levels (the
    # RefineNet's only dependence on sigma is the 1/sigma scaling, so it does). Off unless
    # declared: the U-Net's Fourier features of log sigma do not (samplers/plan.py). A run
    # trained on continuous sigmas (noise.training) knows every sigma either way.
    interpolates: bool = False

    def make_config(self, options: Mapping[str, Any] | None = None) -> Any:
        try:
            return from_mapping(self.config, dict(options or {}), where="model")
        except ConfigError as e:
            raise RegistryError(f"backbone {self.name!r}: {e}") from None

    def check_resolution(self, res: int) -> None:
        if res not in self.resolutions:
            supported = ", ".join(map(str, self.resolutions))
            raise RegistryError(
                f"backbone {self.name!r} does not support {res} px; supported: {supported}"
            )

    def build(self, options: Mapping[str, Any] | None = None, *, res: int, channels: int = 3):
        self.check_resolution(res)
        config = self.make_config(options)
        try:
            return self.factory(config, res=res, channels=channels)
        except ValueError as e:  # a factory's own refusal of a combination of options
            raise RegistryError(f"backbone {self.name!r}: {e}") from None

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config())


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Call `register(Backbone(...))` once for each backbone this plugin provides.

    Keep this cheap: declare names, configs and resolutions here and import torch and the
    network code inside the factory, so that `pegasus --help` stays fast.
    """
