"""Loading a trained run and drawing samples from its EMA weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pegasus.build import build_score_model, resolve_device, schedule_from_config
from pegasus.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from pegasus.config import Config, ConfigError
from pegasus.errors import UserError
from pegasus.registry import RegistryError, registry
from pegasus.sampling import Callback, annealed_langevin_graphed, uniform_prior
from pegasus.schedule import Schedule
from pegasus.score import ScoreFn, ScoreModel


class RunError(UserError):
    """A run folder or checkpoint that cannot be used."""


@dataclass
class TrainedRun:
    config: Config
    model: ScoreModel  # the EMA weights, in eval mode
    schedule: Schedule
    sigmas: torch.Tensor
    step: int
    checkpoint: Path


def find_checkpoint(run_dir: Path, checkpoint: Path | None = None) -> Path:
    if checkpoint is not None:
        return Path(checkpoint)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(
            f"run directory {run_dir} does not exist; train one with pegasus train --run {run_dir}"
        )
    found = latest_checkpoint(run_dir / "checkpoints")
    if found is None:
        raise RunError(f"run {run_dir} has no checkpoint yet; train it first")
    return found


def _missing_backbone_message(state: dict[str, Any]) -> str:
    info = state.get("backbone", {})
    name, dist = info.get("name", "?"), info.get("distribution", "?")
    return (
        f"this checkpoint needs backbone {name!r} from package {dist} {info.get('version', '')}".rstrip()
        + f"; install it (pip install {dist}) and try again"
    )


def load_trained_run(
    run_dir: Path | None = None, checkpoint: Path | None = None, device: str = "auto"
) -> TrainedRun:
    path = find_checkpoint(run_dir, checkpoint) if run_dir is not None else Path(checkpoint)
    dev = resolve_device(device)
    state = load_checkpoint(path)
    try:
        config = Config.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path} holds an invalid config: {e}") from None
    reg = registry()
    if config.model.backbone not in reg.backbones and config.model.backbone not in reg.conflicts:
        raise RunError(_missing_backbone_message(state))
    try:
        model, _ = build_score_model(config)
    except RegistryError as e:
        raise RunError(str(e)) from None
    model.load_state_dict(state["ema"])
    model.to(dev).eval().requires_grad_(False)
    schedule = schedule_from_config(config.noise)
    return TrainedRun(config, model, schedule, state["sigmas"].to(dev), int(state["step"]), path)


def sample_images(
    model: ScoreFn,
    schedule: Schedule,
    sigmas: torch.Tensor,
    *,
    num: int,
    res: int,
    seed: int,
    denoise: bool = True,
    channels: int = 3,
    callback: Callback | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """`num` samples by annealed Langevin from uniform noise, seeded: the same seed and batch
    size give the same images. `batch_size` None means all at once on CPU and, on a GPU, the
    largest batch that fits (`fill_gpu_batch_size`)."""
    device = sigmas.device
    shape = (channels, res, res)
    if batch_size is None:
        batch_size = fill_gpu_batch_size(model, shape, device) if device.type == "cuda" else num
    g = torch.Generator(device=device).manual_seed(seed)
    chunks = []
    for start in range(0, num, batch_size):
        x0 = uniform_prior((min(batch_size, num - start), *shape), generator=g, device=device)
        # On a GPU one Langevin step is captured as a CUDA graph and replayed; on CPU it runs eagerly.
        chunks.append(annealed_langevin_graphed(
            model, x0, sigmas, steps_per_level=schedule.steps_per_level, eps=schedule.eps,
            generator=g, denoise=denoise, callback=callback,
        ).clamp_(0, 1))
    return torch.cat(chunks)


@torch.no_grad()
def fill_gpu_batch_size(model, shape: tuple[int, ...], device: torch.device,
                        fraction: float = 0.8, probe: int = 8) -> int:
    """The largest batch whose evaluations fit in `fraction` of the free GPU memory, from the
    peak memory of one probe evaluation (plus the chain's own x, noise and score tensors)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(torch.rand(probe, *shape, device=device), torch.ones(probe, device=device))
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - before) / probe
    per_image += 3 * 4 * math.prod(shape)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(fraction * free / per_image))
