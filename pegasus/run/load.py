"""Loading a trained run: a checkpoint or exported weights, each check one clear line, into a
TrainedRun. Nothing is built before the file's tensors are known to fit the network its config
describes, and nothing in a file runs code (checkpoint.py, weights.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pegasus.config import Config
from pegasus.devices import resolve_device
from pegasus.errors import CheckpointError, ConfigError, RegistryError, RunError
from pegasus.model.build import build_score_model
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.registry import registry
from pegasus.run.checkpoint import load_checkpoint
from pegasus.run.layout import RunDir
from pegasus.run.trained import TrainedRun

# Keys a score-model checkpoint must hold to be sampled from.
SCORE_KEYS = ("config", "sigmas", "ema", "step")


def _missing_backbone_message(name: str, record: dict[str, Any]) -> str:
    """The backbone the config names is not installed: which package provides it, when the
    file's record of its backbone says so (and is about that very backbone)."""
    installed = ", ".join(sorted(registry().backbones)) or "none"
    where = ""
    if record.get("name") == name and record.get("distribution") not in (None, "?", "unknown"):
        dist = record["distribution"]
        where = f"; it comes from package {dist} {record.get('version', '')}".rstrip()
        where += f": install it (pip install {dist}) and try again"
    return (f"this model needs backbone {name!r}, which no installed plugin provides (installed: "
            f"{installed}){where}")


def check_tensors(config: Config, weights: dict[str, torch.Tensor], source: Path) -> None:
    """The file's tensors against the network its config describes, built on the meta device
    (shapes, no memory): a config that names a network its tensors do not fit (an edited width,
    say) is refused before anything is allocated; so are tensors that are not finite floats."""
    try:
        expected, _ = build_score_model(config, device="meta")
    except RegistryError as e:
        raise RunError(str(e)) from None
    shapes = {k: tuple(v.shape) for k, v in expected.state_dict().items()}
    missing = sorted(set(shapes) - set(weights))
    unexpected = sorted(set(weights) - set(shapes))
    wrong = next((k for k in shapes if k in weights and tuple(weights[k].shape) != shapes[k]), None)
    what = f"backbone {config.model.backbone!r} {config.model.options} at {config.data.res} px"
    if missing or unexpected or wrong:
        detail = (f"{wrong} is {tuple(weights[wrong].shape)} there, {shapes[wrong]} in the network"
                  if wrong else f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}")
        raise CheckpointError(f"{source} holds weights that do not fit {what} ({detail})")
    for name, tensor in weights.items():
        if not tensor.is_floating_point():
            raise CheckpointError(f"{source}: weight {name} holds {tensor.dtype} values; a score "
                                  f"network's weights are floats, so the file was not written "
                                  f"by pegasus, or was altered")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{source}: weight {name} holds nan or inf values; the file is "
                                  f"damaged, or was saved from a diverged run")


def model_from_state(config: Config, weights: dict[str, torch.Tensor], backbone: dict[str, Any],
                     source: Path, centre: torch.Tensor | None = None) -> ScoreModel:
    """Build the config's model (preconditioned about `centre`, the recorded data mean, when
    the run is EDM's) and load `weights` into it, each failure one clear line."""
    reg = registry()
    if config.model.backbone not in reg.backbones and config.model.backbone not in reg.conflicts:
        raise RunError(_missing_backbone_message(config.model.backbone, backbone))
    check_tensors(config, weights, source)
    if config.noise.preconditioning == "edm" and centre is None:
        raise CheckpointError(f"{source} is a run preconditioned as EDM's about its data's mean, "
                              f"but records no data mean; the file was edited or damaged")
    model, _ = build_score_model(config, centre=centre)
    model.load_state_dict(weights)
    return model


def schedule_of(config: Config, sigmas: torch.Tensor, source: Path) -> Schedule:
    """The config's schedule, checked against the sigmas stored beside the weights."""
    try:
        schedule = Schedule.from_noise(config.noise)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None
    if not torch.equal(sigmas.float().cpu(), schedule.sigmas()):
        raise CheckpointError(f"{source}: its stored sigmas disagree with its config's noise "
                              f"schedule; the file was edited or damaged")
    return schedule


def score_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint that holds a score model, or a clear error saying what the file is."""
    state = load_checkpoint(path, mmap=mmap)
    if "spec" in state and "config" not in state:
        raise CheckpointError(f"{path} is a guide or judge classifier, not a score-model checkpoint")
    missing = [k for k in SCORE_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path} is not a score-model checkpoint (it lacks "
                              f"{', '.join(missing)})")
    return state


def config_of(state: dict[str, Any], source: Path) -> Config:
    try:
        return Config.from_dict(state["config"])
    except ConfigError as e:
        raise CheckpointError(f"{source} holds an invalid config: {e}") from None


def centre_of(data_mean, source: Path) -> torch.Tensor:
    """A recorded per-channel data mean as the (C, 1, 1) centre of the samplers' start."""
    mean = torch.as_tensor(data_mean, dtype=torch.float32)
    if mean.dim() != 1 or not (mean.isfinite().all() and (mean >= 0).all() and (mean <= 1).all()):
        raise CheckpointError(f"{source}: its recorded data mean {mean.tolist()} is not one value "
                              f"in [0, 1] per channel; the file was edited or damaged")
    return mean.view(-1, 1, 1)


def load_trained_run(
    run_dir: Path | None = None,
    checkpoint: Path | None = None,
    device: str = "auto",
    weights: Path | None = None,
    warn=None,
    notify: Callable[[str], None] | None = None,
) -> TrainedRun:
    """The EMA model of a run (its latest checkpoint, or `checkpoint`), or of an exported
    weights file (`weights`, safetensors: no run folder needed). `warn` hears of skipped
    checkpoints, `notify` of compiles (TrainedRun.notify)."""
    if weights is not None and (run_dir is not None or checkpoint is not None):
        raise RunError("give a weights file or a run (or checkpoint), not both")
    dev = resolve_device(device)
    if weights is not None:
        from pegasus.run.weights import read_weights

        exported = read_weights(weights)
        state = {"config": exported.config.to_dict(), "sigmas": exported.sigmas,
                 "ema": exported.tensors, "backbone": exported.backbone, "step": exported.step,
                 "data_mean": exported.data_mean}
        return trained_from_state(state, Path(weights), dev, None, notify)
    if checkpoint is None:
        if run_dir is None:
            raise RunError("give a run folder, a checkpoint or a weights file")
        checkpoint = RunDir(run_dir).require_checkpoint(warn)
    source = Path(checkpoint)
    if run_dir is not None and warn is not None and not RunDir(run_dir).holds(source):
        real = source.resolve()
        linked = f" (a link to {real})" if real != source.absolute() else ""
        warn(f"{source}{linked} is not run {run_dir}'s own file: its weights and config are "
             f"used, with that run folder's guide, judge and data")
    return trained_from_state(score_checkpoint(source), source, dev,
                              RunDir(run_dir) if run_dir is not None else None, notify)


def trained_from_state(state: dict[str, Any], source: Path, device: torch.device,
                       run_dir: RunDir | None = None, notify=None) -> TrainedRun:
    """The TrainedRun of a score-model checkpoint's dict (its EMA weights), from a file or made
    in memory (an imported reference checkpoint: interop/ncsnv2.py)."""
    config = config_of(state, source)
    schedule = schedule_of(config, state["sigmas"], source)
    mean = state.get("data_mean")
    centre = None if mean is None else centre_of(mean, source)
    model = model_from_state(config, state["ema"], state.get("backbone", {}), source, centre)
    model.to(device).eval().requires_grad_(False)
    centre = None if centre is None else centre.to(device)
    return TrainedRun(config, model, schedule, int(state["step"]), source, device, run_dir,
                      notify, centre, centre_recorded=centre is not None)


def trained_schedule(run_dir: Path, warn=None) -> tuple[Config, Schedule]:
    """The config and schedule of a run's latest checkpoint, without building its model (what
    the classifier trainer needs)."""
    path = RunDir(run_dir).require_checkpoint(warn)
    state = score_checkpoint(path)
    config = config_of(state, path)
    return config, schedule_of(config, state["sigmas"], path)
