"""Tuning a trained run into a new run on an objective that starts from trained weights (ECT's
consistency tuning, objectives/ect.py, by default): the new run's config is the source's with
the objective named, and its network and EMA start from the source's EMA weights. Everything
else is an ordinary training run (the trainer calling the objective's loss): the lock, the NaN
guard, checkpoints, resume (`train --resume` of the new run), TensorBoard, exports and torchrun.

The source run is only read, and is its newest good checkpoint (a damaged newest one is passed
over, as resuming does). The tuned run keeps its source's network and schedule: overrides of the
model or noise sections are refused before anything is written. Its guide and judge
(classifiers of noisy and clean images, blind to the score network) serve the tuned run as they
are: each is checked to load, then copied into it when tuning starts, for guided blends and
reports; one the source gains while the tuning runs (trained beside it) is copied when it ends,
if the tuned run has none of its own by then.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pegasus.atomic import atomic_write
from pegasus.config import Config, build_config, resolve_model_options
from pegasus.devices import resolve_device
from pegasus.errors import ConfigError, RunError, UserError
from pegasus.registry import get_backbone, get_objective
from pegasus.run.classifiers import load_classifier
from pegasus.run.layout import CLASSIFIER_FILES, RunDir
from pegasus.run.load import trained_from_state
from pegasus.run.resume import load_resume_state
from pegasus.training import restarted_job, train
from pegasus.training.trainer import TrainResult

# r's schedule in 4 stages spread over the tuning whatever its length (stage_every = iters /
# stages); ECT's CIFAR-10 schedule has 16 (a stage every 25k of 400k iterations), which measured
# far worse on the demo's run up to 3000 steps (bench/README.md, "Two evaluations").
STAGES = 4
# The tuning's dropout unless told: the source run's (off unless it trained with one). ECT's
# CIFAR-10 rate, 0.2, is `--dropout 0.2`; on the demo's run it cost quality (the same table).
DROPOUT = None
OBJECTIVE = "ect"


def tuning_config(config: Config, source: Path, *, iters: int, overrides: Sequence[str] = (),
                  objective: str = OBJECTIVE, stages: int = STAGES,
                  dropout: float | None = DROPOUT) -> Config:
    """The tuned run's config: the source's `config` (as it trained: its noise fields resolved)
    on `objective`, tuned for `iters` steps (a stage schedule in `stages` stages, where the
    objective has one) with `dropout` (where the backbone takes one; None: the source's), then
    `overrides` (SECTION.FIELD=VALUE) applied as on resuming: the network, its schedule and
    the objective named are the tuned run's own."""
    if stages < 1:
        raise ConfigError(f"stages must be at least 1, got {stages}")
    data = config.to_dict()
    data["train"]["iters"] = iters
    data["objective"] = {"name": objective, "source": str(source)}
    if "stage_every" in get_objective(objective)[0].defaults():
        data["objective"]["stage_every"] = max(1, iters // stages)
    if dropout is not None and "dropout" in get_backbone(config.model.backbone)[0].defaults():
        data["model"]["dropout"] = dropout
    start = resolve_model_options(Config.from_dict(data))
    return build_config(overrides=list(overrides), saved=start, continuing="tuning")


def tune(source: Path, target: Path, *, iters: int = 1200, overrides: Sequence[str] = (),
         stages: int = STAGES, dropout: float | None = DROPOUT, progress=None,
         tensorboard: bool = True, on_start=None,
         warn: Callable[[str], None] | None = None,
         notify: Callable[[str], None] | None = None) -> TrainResult:
    """Tune the run in `source` (its newest good checkpoint's EMA weights) into a new run in
    `target` for `iters` steps, its schedule in `stages` stages, with `dropout` (see
    tuning_config). progress, on_start, warn and notify are train()'s."""
    source, target = Path(source), Path(target)
    _check_target(source, target)
    state, path = load_resume_state(RunDir(source), warn, verb="tune")
    trained = trained_from_state(state, path, resolve_device("cpu"), RunDir(source))
    if trained.model.learns != "score":
        raise RunError(f"{source} is consistency-tuned already (objective "
                       f"{trained.config.objective.name}); tune its source run "
                       f"({trained.config.objective.source}) instead, or train it on")
    config = tuning_config(trained.config, source, iters=iters, overrides=overrides,
                           stages=stages, dropout=dropout)
    classifiers = _carried(source, target)
    for kind in classifiers:  # a damaged or foreign file is refused before any work
        _check_classifier(source, kind, config)
    init = {name: tensor.detach().clone() for name, tensor in trained.model.state_dict().items()}
    main = False  # whether this process is the one that writes (on_start runs there alone)

    def start(*args) -> None:
        nonlocal main
        main = True
        _carry(source, target, classifiers)
        if on_start is not None:
            on_start(*args)

    result = train(config, target, progress=progress, tensorboard=tensorboard, on_start=start,
                   warn=warn, notify=notify, init=init)
    for kind in _carried(source, target) if main else ():
        try:
            _check_classifier(source, kind, config)
        except UserError as e:  # the tuning is done and kept; only this file is not
            if warn is not None:
                warn(f"{e}; not copied into {target}")
            continue
        _carry(source, target, [kind])
    return result


def _carried(source: Path, target: Path) -> list[str]:
    """The classifiers of `source` that `target` lacks."""
    return [kind for kind in CLASSIFIER_FILES if RunDir(source).classifier(kind).is_file()
            and not RunDir(target).classifier(kind).is_file()]


def _check_classifier(source: Path, kind: str, config: Config) -> None:
    """Refuse a damaged or foreign classifier file, or one of other classes."""
    load_classifier(source, kind, "cpu", classes=config.data.classes)


def _carry(source: Path, target: Path, kinds: list[str]) -> None:
    for kind in kinds:
        with RunDir(source).classifier(kind).open("rb") as read:
            atomic_write(RunDir(target).classifier(kind),
                         lambda out, read=read: shutil.copyfileobj(read, out))


def _check_target(source: Path, target: Path) -> None:
    """The tuned run needs a new folder of its own, outside the run it reads (a link into the
    source counts as inside it); torchrun's restart of this very job resumes it, as train's
    does."""
    here, there = RunDir(source).path.resolve(), RunDir(target).path.resolve()
    if there == here:
        raise RunError(f"the tuned run needs a folder of its own; {target} is the run it tunes")
    if there.is_relative_to(here):
        raise RunError(f"{target} lies inside the run it tunes ({source}), which tuning only "
                       f"reads; give a folder outside it")
    if RunDir(target).latest_checkpoint() is not None and not restarted_job(RunDir(target)):
        raise RunError(f"{target} already holds a run; tune on with `pegasus train --run "
                       f"{target} --resume --iters N`, or give a new folder")
