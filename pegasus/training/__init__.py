"""Training a score network: `train` checks the input, takes the run's lock and runs the
Trainer (trainer.py). The guide and judge classifiers train in guide.py.

Every check that can fail on the user's input (run folder, classes, backbone, resolution,
device) runs before any data is loaded or anything is written; whether the folder already holds
a trained run, and the checkpoint a resumed run continues, are read while holding the run's
lock, so that two trainers cannot both start one run.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import torch

from pegasus import distributed
from pegasus.allocator import keep_freed_memory
from pegasus.atomic import atomic_write, remove_stale_temporaries
from pegasus.config import Config
from pegasus.data import check_data_config
from pegasus.devices import resolve_device
from pegasus.errors import ConfigError, RunError
from pegasus.fastpath import FastPath
from pegasus.fastpath.memory import check_estimated_training_batch, check_weights_fit
from pegasus.model.build import build_score_model
from pegasus.registry import get_objective
from pegasus.run.checkpoint import step_of
from pegasus.run.layout import RunDir
from pegasus.run.lock import RunLock
from pegasus.run.resume import Resumed, resumed_state
from pegasus.signatures import ProgressFn
from pegasus.training.stops import StopOnSignal
from pegasus.training.trainer import StartingPoint, Trainer, TrainResult

__all__ = ["TrainResult", "train"]

# How long a rank of several may take to stop after SIGINT/SIGTERM (the loop stops at its next
# log step and saves a checkpoint) before the watchdog ends it (stops.py).
STOP_GRACE = 120.0


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    tensorboard: bool = True,
    stop_after: int | None = None,
    on_start: Callable[[Config, int, FastPath], None] | None = None,
    warn: Callable[[str], None] | None = None,
    notify: Callable[[str], None] | None = None,
    init: dict | None = None,
    resumed: Resumed | None = None,
) -> TrainResult:
    """Train `config` in `run_dir` (created if needed). With `resume`, continue from the newest
    good checkpoint there. `on_start` receives the config as the run records it (its "auto"
    noise fields chosen from the data), the model's parameter count and the fast path it trains
    on once start-up is done; `warn` hears about damaged checkpoints skipped and files cleaned
    up, `notify` about the waits of start-up: the fast path's timings on a GPU and whether the
    first step compiles or loads the compile cached for the user. `stop_after` ends the
    call after that many steps as an interruption would (saving a checkpoint); tests use it to
    compare a resumed run with an uninterrupted one. A new run starts from the weights `init`
    when given (consistency tuning starts from another run's EMA weights: training/tune.py).
    `resumed` is the checkpoint run/resume.training_start read for `config`: it is not read
    again unless the run has moved on since (a newer checkpoint).

    Under torchrun, a job that torchrun restarts after a worker failed (--max-restarts) resumes
    the checkpoints it wrote itself before the failure, with or without `resume`."""
    warn = warn or (lambda message: None)
    keep_freed_memory()
    run_dir = RunDir(run_dir)
    run_dir.check_usable()
    check_data_config(config.data)
    _check_objective(config, resume, init)
    # An unknown backbone, a bad resolution or option, or weights that cannot fit: no allocation.
    shapes = build_score_model(config, device="meta")[0]
    device = resolve_device(config.train.device)
    check_weights_fit(shapes, device)
    network = _network(config, device)
    # The handler goes in before start-up (data, model, TensorBoard), so a Ctrl-C at any point
    # ends the call cleanly rather than with a KeyboardInterrupt.
    request = {"run folder": str(run_dir.path), "resume": resume, **config.to_dict()}
    grace = STOP_GRACE if distributed.launched() else None
    with StopOnSignal(grace) as stop, distributed.group(config.train.device, request) as ctx:
        resume = resume or restarted_job(run_dir)
        distributed.first_error(ctx, _prepare(run_dir, resume) if ctx.main else None)
        if not ctx.main:  # rank 0 holds the run's lock for the whole job
            start = _starting_point(run_dir, resume, warn, config.train.iters, init, resumed)
            return _train(ctx, config, start, network, progress, tensorboard, stop_after, stop,
                          on_start, None)
        with RunLock(run_dir.lock, f"run {run_dir.path}"):
            start = _starting_point(run_dir, resume, warn, config.train.iters, init, resumed)
            _record_job(run_dir)
            for path in remove_stale_temporaries(run_dir.checkpoints):
                warn(f"removed {path.name}, left by an interrupted write")
            return _train(ctx, config, start, network, progress, tensorboard, stop_after, stop,
                          on_start, notify)


def _check_objective(config: Config, resume: bool, init: dict | None) -> None:
    """A new run from fresh weights trains on an objective that starts from them, and names no
    source run: that is `pegasus tune`'s to write, for the runs it starts from another's."""
    objective = config.objective
    if resume or init is not None:
        return
    if get_objective(objective.name)[0].tunes:
        raise ConfigError(f"objective.name: {objective.name} tunes a trained run and does not "
                          f"train from fresh weights; train a run first, then pegasus tune it")
    if objective.source:
        raise ConfigError("objective.source: pegasus tune writes it for the runs it makes; a "
                          "run trained from scratch has none")


def _network(config: Config, device) -> tuple:
    """The network's one build, (ScoreModel, Plugin), its weights drawn from the run's seed
    (the global generator is left as it was), and on a CPU the training batch checked against
    the memory available (a GPU measures it once the network is on it: fastpath.for_training)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.seed)
        network = build_score_model(config)
        check_estimated_training_batch(network[0], config, device)
    return network


def _prepare(run_dir: RunDir, resume: bool) -> RunError | None:
    """The run folder made ready by rank 0 alone, before it writes (the other ranks would see
    its writes): new runs in new or empty folders, and only the run's own files. What is
    wrong, to be raised on every rank (distributed.first_error)."""
    try:
        if not resume:
            run_dir.check_new()
        run_dir.check_own()
        run_dir.create()
    except RunError as e:
        return e
    return None


def restarted_job(run_dir: RunDir) -> bool:
    """Whether this is torchrun's restart of the job that wrote the run's checkpoints. Every
    rank decides alike: the job file was written in the job's first attempt, before any
    failure could restart it."""
    if not distributed.restarted() or run_dir.latest_checkpoint() is None:
        return False
    try:
        return run_dir.job.read_text() == distributed.job_id()
    except OSError:
        return False


def _record_job(run_dir: RunDir) -> None:
    job = distributed.job_id()
    if job is not None and not distributed.restarted():
        atomic_write(run_dir.job, lambda f: f.write(job.encode()))


def _starting_point(run_dir: RunDir, resume: bool, warn, iters: int, init: dict | None = None,
                    resumed: Resumed | None = None) -> StartingPoint:
    """A new run needs a folder without checkpoints (it starts from `init`, if given); a resumed
    one its newest good checkpoint (`resumed`, read before the lock was taken, while it is still
    the newest), at a step no later than the `iters` it is to train to."""
    if not resume:
        if run_dir.latest_checkpoint() is not None:
            raise RunError(f"{run_dir.path} already holds a trained run; resume it or choose another "
                           f"run folder")
        return StartingPoint(run_dir, init=init)
    if resumed is None or run_dir.latest_checkpoint() != resumed.path:
        resumed = resumed_state(run_dir, iters, warn)
    return StartingPoint(run_dir, resumed.state, resumed.path)


def _train(ctx, config: Config, start: StartingPoint, network, progress, tensorboard, stop_after,
           stop, on_start, notify) -> TrainResult:
    trainer = Trainer(ctx, config, start, network, notify)
    if ctx.main and tensorboard:
        trainer.open_tensorboard()
    try:
        if distributed.any_rank(ctx, stop.signum is not None):  # stopped during start-up
            trainer.result.interrupted = stop.signum or signal.SIGTERM
            return trainer.result
        if on_start is not None and ctx.main:
            on_start(trainer.config, sum(p.numel() for p in trainer.model.parameters()),
                     trainer.fast)
        trainer.loop(progress, stop, stop_after)
    finally:
        if trainer.writer is not None:
            trainer.writer.close()
    result = trainer.result
    result.step = trainer.step
    if result.checkpoint is None or step_of(result.checkpoint) != trainer.step:
        result.checkpoint = trainer.checkpoint()
    return result
