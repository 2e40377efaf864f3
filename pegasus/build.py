"""From a config to the objects a run needs: the device, the score model, the schedule."""

from __future__ import annotations

import torch

from pegasus.config import Config, NoiseConfig
from pegasus.errors import UserError
from pegasus.registry import Plugin, get_backbone
from pegasus.schedule import Schedule
from pegasus.score import ScoreModel


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA device is available; use cpu")
    return device


def build_score_model(config: Config, channels: int = 3) -> tuple[ScoreModel, Plugin]:
    spec, plugin = get_backbone(config.model.backbone)
    backbone = spec.build(config.model.options, res=config.data.res, channels=channels)
    return ScoreModel(backbone), plugin


def schedule_from_config(noise: NoiseConfig) -> Schedule:
    if not noise.planned:
        raise UserError("the noise schedule still says 'auto'; plan it first (pegasus.planner)")
    return Schedule(
        sigma_max=noise.sigma_max,
        sigma_min=noise.sigma_min,
        levels=noise.levels,
        steps_per_level=noise.steps_per_level,
        eps=noise.eps,
    )
