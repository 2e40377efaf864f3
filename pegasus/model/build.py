"""The score model a config describes: its backbone (from the registry) divided by sigma."""

from __future__ import annotations

import contextlib

import torch

from pegasus.config import Config
from pegasus.model.score import ScoreModel
from pegasus.registry import Plugin, get_backbone


def build_score_model(config: Config, channels: int = 3,
                      device: torch.device | str | None = None) -> tuple[ScoreModel, Plugin]:
    """The score model a config describes (backbone / sigma), untrained, and the plugin that
    provides its backbone. On the "meta" device it has shapes but no memory: what a file's
    tensors are checked against before any real allocation."""
    spec, plugin = get_backbone(config.model.backbone)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        backbone = spec.build(config.model.options, res=config.data.res, channels=channels)
    return ScoreModel(backbone), plugin
