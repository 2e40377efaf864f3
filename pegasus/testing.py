"""A conformance check for backbone authors: `check_backbone(spec)` in your plugin's tests.

At every resolution the backbone declares, it builds the network, runs a tiny batch on CPU
through the score model and the DSM loss, and checks the output shape, finiteness, that every
parameter receives a gradient, that an undeclared resolution is refused, that the config
survives a round trip through plain values (as checkpoints store it), and that the backbone
tuned into a consistency function (objectives/ect.py), under either preconditioning, keeps
the boundary condition f(x, sigma_L) = x exactly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pegasus.errors import RegistryError
from pegasus.hookspecs import Backbone


class ConformanceError(AssertionError):
    """A backbone that breaks the plugin contract."""


def check_backbone(
    spec: Backbone, *, options: Mapping[str, Any] | None = None, batch: int = 2, channels: int = 3
) -> None:
    import torch

    from pegasus.model.precondition import EDMPreconditioning
    from pegasus.model.score import ScoreModel
    from pegasus.noise.schedule import geometric_sigmas
    from pegasus.objectives.dsm import dsm_loss
    from pegasus.objectives.ect import ConsistencyOutput, consistency

    defaults = spec.config()
    if not dataclasses.is_dataclass(defaults):
        raise ConformanceError(f"{spec.name}: config must be a dataclass type with defaults")
    plain = dataclasses.asdict(defaults)
    if spec.make_config(plain) != defaults:
        raise ConformanceError(f"{spec.name}: config does not survive a round trip: {plain}")

    sigmas = geometric_sigmas(50.0, 0.01, 4)
    for res in spec.resolutions:
        torch.manual_seed(0)
        model = ScoreModel(spec.build(options, res=res, channels=channels))
        x = torch.rand(batch, channels, res, res)
        out = model.backbone(x, sigmas[[0, -1]].repeat(batch)[:batch])
        if out.shape != x.shape:
            raise ConformanceError(
                f"{spec.name} at {res} px: output shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        if not torch.isfinite(out).all():
            raise ConformanceError(f"{spec.name} at {res} px: non-finite output")
        loss = dsm_loss(model, x, sigmas, generator=torch.Generator().manual_seed(0)).loss
        loss.backward()
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
        if missing:
            raise ConformanceError(f"{spec.name} at {res} px: no finite gradient for {missing[:5]}")
        bottom = sigmas[-1:].expand(batch)
        for edm in (None, EDMPreconditioning(torch.full((channels, 1, 1), 0.5), 0.5)):
            tuned = ScoreModel(model.backbone, edm, output=ConsistencyOutput(float(sigmas[-1])),
                               learns="consistency")
            with torch.no_grad():
                if not torch.equal(consistency(tuned, x, bottom), x):
                    raise ConformanceError(f"{spec.name} at {res} px: the consistency function "
                                           f"moves x at sigma_L (a non-finite output there?)")
    unsupported = next(r for r in range(8, 1024, 8) if r not in spec.resolutions)
    try:
        spec.build(options, res=unsupported, channels=channels)
    except RegistryError:
        pass
    else:
        raise ConformanceError(f"{spec.name}: building at undeclared {unsupported} px did not fail")
