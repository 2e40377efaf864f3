"""Consistency tuning of a trained run into a new run (ECT; model/consistency.py): the new run's
config is the source's with `consistency.tuned` set, and its network and EMA start from the
source's EMA weights. Everything else is an ordinary training run (the trainer with ECT's loss
in Trainer.objective): the lock, the NaN guard, checkpoints, resume (`train --resume` of the new
run), TensorBoard, exports and torchrun. The source run is only read. Its guide and judge
(classifiers of noisy and clean images, blind to the score network) serve the tuned run as they
are: they are copied into it when tuning starts, for guided blends and reports.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from pegasus.atomic import atomic_write
from pegasus.config import Config, apply_overrides
from pegasus.errors import ConfigError, RunError
from pegasus.run.layout import CLASSIFIER_FILES, RunDir
from pegasus.run.load import load_trained_run
from pegasus.training import restarted_job, train
from pegasus.training.trainer import TrainResult

STAGES = 4  # r's schedule in 4 stages over the tuning (stage_every = iters / 4) unless set


def tuning_config(config: Config, source: Path, *, iters: int,
                  overrides: Sequence[str] = ()) -> Config:
    """The tuned run's config: the source's `config` (as it trained: its noise fields resolved)
    tuned for `iters` steps, then `overrides` (SECTION.FIELD=VALUE) applied."""
    data = config.to_dict()
    data["train"]["iters"] = iters
    data["consistency"] = {"tuned": True, "source": str(source),
                           "stage_every": max(1, iters // STAGES)}
    tuned = Config.from_dict(apply_overrides(data, list(overrides)))
    if not tuned.consistency.tuned:
        raise ConfigError("consistency.tuned: a tuned run is tuned; train the source run on "
                          "instead to keep it a diffusion model")
    return tuned


def tune(source: Path, target: Path, *, iters: int = 1200, overrides: Sequence[str] = (),
         progress=None, tensorboard: bool = True, on_start=None,
         warn: Callable[[str], None] | None = None,
         notify: Callable[[str], None] | None = None) -> TrainResult:
    """Tune the run in `source` (its newest checkpoint's EMA weights) into a new consistency run
    in `target` for `iters` steps. progress, on_start, warn and notify are train()'s."""
    source, target = Path(source), Path(target)
    if RunDir(target).path.resolve() == RunDir(source).path.resolve():
        raise RunError(f"the tuned run needs a folder of its own; {target} is the run it tunes")
    # torchrun's restart of this very job (a worker failed) resumes it, as train's does.
    if RunDir(target).latest_checkpoint() is not None and not restarted_job(RunDir(target)):
        raise RunError(f"{target} already holds a run; tune on with `pegasus train --run "
                       f"{target} --resume --iters N`, or give a new folder")
    trained = load_trained_run(source, device="cpu", warn=warn)
    if trained.tuned:
        raise RunError(f"{source} is consistency-tuned already; tune its source run "
                       f"({trained.config.consistency.source}) instead, or train it on")
    config = tuning_config(trained.config, source, iters=iters, overrides=overrides)
    init = {name: tensor.detach().clone() for name, tensor in trained.model.state_dict().items()}

    def start(*args) -> None:
        for kind in CLASSIFIER_FILES:
            given = RunDir(source).classifier(kind)
            if given.is_file():
                with given.open("rb") as read:
                    atomic_write(RunDir(target).classifier(kind),
                                 lambda out, read=read: shutil.copyfileobj(read, out))
        if on_start is not None:
            on_start(*args)

    return train(config, target, progress=progress, tensorboard=tensorboard, on_start=start,
                 warn=warn, notify=notify, init=init)
