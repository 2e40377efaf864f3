"""The plugin API: the hooks a pegasus plugin may implement and the types it hands back.

A plugin is a module (found through the `pegasus` entry-point group) with functions marked
`@pegasus.hookimpl`: backbones (the network) and objectives (the loss it trains on). The
built-in backbones and objectives register through these very hooks. This module
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
    """The config of a backbone or objective that has no options."""


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
    # Convolution-heavy networks gain; networks dominated by elementwise work on strided views
    # (norms, attention reshapes) lose (bench/README.md, "channels_last"). Off unless declared,
    # so that a backbone nobody measured is never made slower than eager float32 by it.
    # Uncompiled on a GPU, both layouts are then timed there anyway (pegasus/fastpath/probe.py).
    channels_last: bool = False
    # Whether the network's sigma input interpolates between the levels it was trained on, so
    # that samplers may walk any grid of a run trained on NCSNv2's discrete levels (the
    # RefineNet's only dependence on sigma is the 1/sigma scaling, so it does). Off unless
    # declared: the U-Net's Fourier features of log sigma do not (ScoreModel.round_sigma). A run
    # trained on continuous sigmas (noise.training) knows every sigma either way.
    interpolates: bool = False
    # Options that leave the weights as they are (dropout): a run may change them when it
    # resumes or is tuned, where every other option must stay the run's.
    free: tuple[str, ...] = ()

    def make_config(self, options: Mapping[str, Any] | None = None) -> Any:
        return _options(f"backbone {self.name!r}", "model", self.config, options)

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


def _options(what: str, where: str, config: type, options: Mapping[str, Any] | None) -> Any:
    """A plugin's typed options from plain values (the config's `where` section), each error
    one line naming `what` they belong to."""
    try:
        return from_mapping(config, dict(options or {}), where=where)
    except ConfigError as e:
        raise RegistryError(f"{what}: {e}") from None


@dataclass
class Loss:
    """What an objective's loss returns for one batch."""

    loss: Any  # scalar tensor: the mean over the batch, what the optimiser steps on
    per_sample: Any  # (B,) each image's loss
    nearest: Any  # (B,) the index of the level nearest each image's sigma (the loss log by range)


@dataclass(frozen=True)
class Objective:
    """What a plugin declares for one training objective: the loss a run trains on, which the
    config names (`objective.name`) and the trainer calls without knowing which it is.

    factory(options, *, config, sigmas, model) returns the loss for a run whose config is
    `config` (its schedule planned: `sigmas`, largest first) and whose score model is `model`
    (model/score.py: its round_sigma, the sigmas its network knows, and its loss weight): a
    callable loss(net, x, *, step, generator) -> Loss that draws each image's sigma itself, at
    whatever stage of its schedule `step` is in. `options` is an instance of `config`, the
    objective's own typed options (`objective.FIELD`), which checkpoints record.
    """

    name: str
    description: str
    factory: Callable[..., Any]
    config: type = EmptyConfig
    # What the network it trains gives: "score", the score of the noised data (every sampler of
    # a diffusion model), or "consistency", a consistency function f (samplers/consistency.py).
    learns: str = "score"
    # The parameterisation: (config) -> a function (score, sigma) -> score that the score model
    # applies to its output last (a consistency function's c_out), or None for the score as it is.
    output: Callable[[Any], Callable | None] = lambda config: None
    # Whether it starts from a trained run's weights (`pegasus tune`), never from fresh ones.
    tunes: bool = False
    # Whether its loss of the EMA weights on held-out images says something at every log step
    # (training/heldout.py; early stopping); a loss whose target moves with its stage does not.
    held_out: bool = True
    # The sampler and budget its runs draw with unless told (None: the rule of the run's noise
    # draw, run/trained.py default_sampler).
    sampler: tuple[str, int | None] | None = None

    def make_config(self, options: Mapping[str, Any] | None = None) -> Any:
        return _options(f"objective {self.name!r}", "objective", self.config, options)

    def build(self, options: Mapping[str, Any] | None = None, **run) -> Any:
        return self.factory(self.make_config(options), **run)

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config())


@hookspec
def register_objectives(register: Callable[[Objective], None]) -> None:
    """Call `register(Objective(...))` once for each training objective this plugin provides.

    Keep this cheap, as register_backbones: import torch and the loss inside the factory.
    """


@hookspec
def register_backbones(register: Callable[[Backbone], None]) -> None:
    """Call `register(Backbone(...))` once for each backbone this plugin provides.

    Keep this cheap: declare names, configs and resolutions here and import torch and the
    network code inside the factory, so that `pegasus --help` stays fast.
    """
