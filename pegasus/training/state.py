"""What a training checkpoint holds, and restoring a run from one: the weights, the EMA, Adam's
state and the random streams, so that a resumed run continues exactly."""

from __future__ import annotations

from pathlib import Path

import torch

from pegasus.config import Config
from pegasus.errors import CheckpointError, first_line
from pegasus.model.ema import EMA
from pegasus.version import __version__


def checkpoint_state(*, config: Config, sigmas: torch.Tensor, data_mean: torch.Tensor,
                     backbone: dict, model, ema: EMA, optimizer, step: int, world: int,
                     generators: list[torch.Tensor]) -> dict:
    """The dict a training checkpoint saves (run/checkpoint.py writes it)."""
    return {
        "config": config.to_dict(),
        "sigmas": sigmas.cpu(),
        "data_mean": data_mean,
        "backbone": backbone,
        "pegasus_version": __version__,
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "ema_updates": ema.updates,
        "optimizer": optimizer.state_dict(),
        "step": step,
        "world_size": world,
        "rng": {"generators": [s.cpu() for s in generators], "torch": torch.get_rng_state()},
    }


def restore(state: dict, model, ema: EMA, optimizer, generator: torch.Generator, ctx,
            config: Config, path: Path) -> None:
    """Load a checkpoint's weights, EMA, optimizer and random streams. A checkpoint without
    random streams (an imported one: interop/ncsnv2.py) continues from the run's seeded ones."""
    try:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"], int(state["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as e:
        theirs = state.get("config", {}).get("model", {})
        raise CheckpointError(
            f"{path} does not fit this run's model ({config.model.backbone} "
            f"{config.model.options}); the checkpoint holds {theirs.get('backbone', '?')} "
            f"({type(e).__name__}: {first_line(e)[:200]})") from None
    # The optimizer's saved state carries its hyper-parameters; the run's config (with any
    # override given on resume) is what holds now.
    for group in optimizer.param_groups:
        group["lr"], group["eps"] = config.train.lr, config.train.adam_eps
    streams = state.get("rng")
    if streams is None:
        return
    if len(streams["generators"]) == ctx.world:  # same world size: each rank's stream exactly
        generator.set_state(streams["generators"][ctx.rank].cpu())
    torch.set_rng_state(streams["torch"].cpu())
