"""The score model a config describes: its backbone (from the registry) divided by sigma, or
preconditioned as EDM's (`noise.preconditioning`: model/precondition.py), then parameterised as
its objective asks (hookspecs.Objective.output), knowing the sigmas it trains on."""

from __future__ import annotations

import contextlib

import torch

from pegasus.config import Config
from pegasus.model.precondition import EDMPreconditioning
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.registry import Plugin, get_backbone, get_objective


def build_score_model(config: Config, channels: int = 3,
                      device: torch.device | str | None = None,
                      centre: torch.Tensor | None = None) -> tuple[ScoreModel, Plugin]:
    """The score model a config describes (backbone / sigma), untrained, and the plugin that
    provides its backbone. On the "meta" device it has shapes but no memory: what a file's
    tensors are checked against before any real allocation. `centre` is the training images'
    (C, 1, 1) mean, which EDM's preconditioning is taken about (0.5 when not given: shapes only,
    as the centre is not among the weights). A network trained on NCSNv2's levels whose sigma
    input does not interpolate knows those levels alone: the schedule's, once it is planned
    (training plans it from the data, then tells the model: ScoreModel.know)."""
    spec, plugin = get_backbone(config.model.backbone)
    objective, _ = get_objective(config.objective.name)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        backbone = spec.build(config.model.options, res=config.data.res, channels=channels)
        edm = None
        if config.noise.preconditioning == "edm":
            centre = torch.full((channels, 1, 1), 0.5) if centre is None else centre
            edm = EDMPreconditioning(centre, config.noise.sigma_data)
    model = ScoreModel(backbone, edm, output=objective.output(config), learns=objective.learns,
                       discrete=config.noise.training == "levels" and not spec.interpolates)
    if config.noise.planned:
        model.know(Schedule.from_noise(config.noise).sigmas())
    return model, plugin
