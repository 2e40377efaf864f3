"""Resuming a run: the newest checkpoint that loads, and the config a training command trains
with (a new run's, or a resumed run's own with the overrides asked for now), out of one function
and one read of the checkpoint (`training_start`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pegasus.config import Config, build_config, resolve_model_options
from pegasus.errors import CheckpointError, ConfigError, DatasetError, FieldError, RunError
from pegasus.run.checkpoint import list_checkpoints
from pegasus.run.layout import RunDir
from pegasus.run.load import config_of, score_checkpoint


def load_resume_state(run: RunDir, warn=None, mmap: bool = False,
                      verb: str = "resume") -> tuple[dict[str, Any], Path]:
    """The newest checkpoint of `run` that loads, falling back past damaged ones (each skipped
    one is reported through `warn`): what resuming it continues, and what tuning it starts
    from (`verb` says which, in the errors)."""
    first = run.latest_checkpoint(warn)
    if first is None:
        raise RunError(f"cannot {verb}: {run.checkpoints} holds no checkpoint; train the run "
                       f"first" + (", without resuming" if verb == "resume" else ""))
    candidates = [first] + [p for p in reversed(list_checkpoints(run.checkpoints)) if p != first]
    problems = []
    for path in candidates:
        try:
            return score_checkpoint(path, mmap), path
        except CheckpointError as e:
            problems.append(str(e))
            if warn is not None and path != candidates[-1]:
                warn(f"{e}; falling back to the previous checkpoint")
    raise CheckpointError(f"cannot {verb} {run.path}: no checkpoint loads; the newest: {problems[0]}")


@dataclass(frozen=True)
class Resumed:
    """A resumed run's newest good checkpoint, read once: its state and its file."""

    state: dict[str, Any]
    path: Path

    @property
    def step(self) -> int:
        return int(self.state["step"])


@dataclass(frozen=True)
class TrainingStart:
    """What a training command starts from: the config it trains with and, resuming, the
    checkpoint it continues (training.train takes both)."""

    config: Config
    resumed: Resumed | None = None


def resumed_state(run: RunDir, iters: int, warn=None) -> Resumed:
    """The newest good checkpoint of `run`, read once, at a step before the `iters` it is to
    train to."""
    resumed = Resumed(*load_resume_state(run, warn))
    _check_iters(iters, resumed.step)
    return resumed


def _check_iters(iters: int, step: int) -> None:
    if iters < step:
        raise FieldError("train.iters", f"is {iters}, but the run is at step {step}; give a value "
                                        f"above {step} to train on")


def training_start(
    run_dir: Path,
    *,
    preset: str | None = None,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    resume: bool = False,
    warn=None,
) -> TrainingStart:
    """The config a training command trains with and where it starts. A new run: preset,
    flags, overrides. A resumed run: exactly the config its checkpoint was trained with, plus
    the overrides asked for now, and that checkpoint; a config.toml edited since (a section
    lost, a field changed) is refused rather than trusted, unless it already holds those
    overrides."""
    if not resume:
        config = build_config(preset, flags, overrides)
        _check_preset_folder(preset, config)
        return TrainingStart(config)
    run = RunDir(run_dir)
    state, path = load_resume_state(run, warn)
    trained = resolve_model_options(config_of(state, path))
    config = build_config(preset, flags, overrides, saved=trained)
    _check_iters(config.train.iters, int(state["step"]))
    on_disk = resolve_model_options(run.read_config())
    # An override given on an earlier resume that stopped before its first checkpoint is in
    # config.toml as pegasus wrote it: accepted. A hand edit is not, since resuming trains with
    # the checkpoint's config and the edit would be silently ignored.
    if on_disk != trained and on_disk != config and not run.config_written_by_pegasus():
        field = _first_difference(on_disk.to_dict(), trained.to_dict())
        raise ConfigError(
            f"{run.config} no longer matches the config {path.name} was trained with ({field}); "
            f"restore it, or change fields on purpose with overrides (section.field=value)")
    return TrainingStart(config, Resumed(state, path))


def _check_preset_folder(preset: str | None, config: Config) -> None:
    """The presets of datasets pegasus cannot download read folder:PATH; a missing folder is
    one line naming the preset and the layout it expects."""
    dataset = config.data.dataset
    if preset is None or not dataset.startswith("folder:"):
        return
    folder = Path(dataset.removeprefix("folder:")).expanduser()
    if not folder.is_dir():
        layout = ", ".join(f"{folder / c}/" for c in config.data.classes)
        raise DatasetError(f"preset {preset!r} reads {dataset}, which does not exist; pegasus "
                           f"cannot download this dataset: put its images in {layout} or point "
                           f"data.dataset at another folder:PATH")


def _first_difference(a: dict[str, Any], b: dict[str, Any], where: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        name = f"{where}.{key}" if where else key
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            if a[key] != b[key]:
                return _first_difference(a[key], b[key], name)
        elif a.get(key) != b.get(key):
            return f"{name} is {a.get(key)!r} there, {b.get(key)!r} in the checkpoint"
    return "no field differs"
