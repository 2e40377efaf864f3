"""The training loop: DSM on a fixed noise schedule with Adam, EMA weights, TensorBoard logs,
sample grids, atomic checkpoints, exact resume, a clean stop on Ctrl-C or SIGTERM, and a stop
with the good checkpoints intact when the loss or the weights stop being finite.

Fast path (NCSNv2 runs are 300k steps): bf16 autocast for the network with the loss and the
1/sigma scaling in float32, channels_last, fused Adam, a foreach EMA update, data and batch
indices resident on the device, optional torch.compile, and no host synchronisation inside a
step: losses are accumulated on the device and read back every `log_every` steps. Under torchrun
each rank trains on its own shard with DDP; rank 0 alone logs, samples and checkpoints.

Every check that can fail on the user's input (run folder, resume, classes, backbone,
resolution, device) runs in `_check` before any data is loaded or anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus import __version__, distributed
from pegasus.atomic import remove_stale_temporaries
from pegasus.config import Config
from pegasus.data import check_data_config, load_images
from pegasus.errors import CheckpointError, RunError, UserError, first_line
from pegasus.fastpath import probe as probing
from pegasus.fastpath.compile import (
    FastPath,
    cache_file,
    compile_notice,
    conv_autotuning,
    load_artifacts,
    save_artifacts,
    warn_uncompiled,
)
from pegasus.fastpath.memory import check_training_batch
from pegasus.images import save_grid
from pegasus.model.ema import EMA
from pegasus.model.loss import DSMLoss, dsm_loss
from pegasus.noise.schedule import Schedule
from pegasus.noise.techniques import plan_for_images
from pegasus.registry import get_backbone
from pegasus.run.checkpoint import save_checkpoint, step_of
from pegasus.run.job import sample_images
from pegasus.run.lock import RunLock
from pegasus.run.trained import RunDir, build_score_model, load_resume_state
from pegasus.signatures import ProgressFn


class DivergedError(UserError):
    """The loss or the weights stopped being finite; the good checkpoints are kept."""


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss) per log
    interrupted: int | None = None  # the signal number that stopped training early
    checkpoint: Path | None = None


class EpochSampler:
    """Batch indices as a function of the step alone: epochs of seeded permutations laid end to
    end, so resuming at step s draws exactly the batches an uninterrupted run would have. With
    several ranks, each step takes world * batch_size consecutive indices and rank r its own
    slice of them: every rank sees its own shard. The current permutation lives on `device`."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        start = (step * self.world + self.rank) * self.batch_size
        parts, need = [], self.batch_size
        while need:
            epoch, offset = divmod(start, self.n)
            take = min(need, self.n - offset)
            parts.append(self._order(epoch)[offset : offset + take])
            start, need = start + take, need - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class _StopOnSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can save and stop cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> _StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)


def training_step(net, optimizer, ema: EMA, x: torch.Tensor, sigmas: torch.Tensor,
                  generator: torch.Generator, autocast) -> DSMLoss:
    """One DSM step: loss under `autocast` (the loss itself is float32), backward, Adam, EMA.
    Nothing in it reads a value back to the host."""
    with autocast:
        out = dsm_loss(net, x, sigmas, generator=generator)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    ema.update()
    return out


class LossLog:
    """Losses summed on the device between log steps (no host read per step), then read back
    once: the mean, and the mean per range of noise levels for TensorBoard."""

    def __init__(self, sigmas: torch.Tensor, groups: int = 8) -> None:
        levels, device = len(sigmas), sigmas.device
        bounds = torch.linspace(0, levels, min(groups, levels) + 1).round().long().tolist()
        self.groups = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.names = [f"loss_by_sigma/{float(sigmas[lo]):.3g}-{float(sigmas[hi - 1]):.3g}"
                      for lo, hi in self.groups]
        self.total = torch.zeros((), device=device)
        self.sums = torch.zeros(levels, device=device)
        self.counts = torch.zeros(levels, device=device)
        self.one = torch.ones((), device=device)  # each sample counts once for its level
        self.steps = 0

    def add(self, out: DSMLoss) -> None:
        self.total += out.loss.detach()
        self.sums.index_add_(0, out.levels, out.per_sample.detach())
        self.counts.index_add_(0, out.levels, self.one.expand(len(out.levels)))
        self.steps += 1

    def read(self, ctx) -> tuple[float, dict[str, float]]:
        """The mean loss over the ranks and, per level range, this rank's mean; then reset."""
        mean = distributed.mean(ctx, self.total).item() / self.steps
        sums, counts = self.sums.tolist(), self.counts.tolist()
        by_range = {name: sum(sums[lo:hi]) / n for name, (lo, hi) in zip(self.names, self.groups,
                                                                            strict=True)
                    if (n := sum(counts[lo:hi]))}
        self.total.zero_(), self.sums.zero_(), self.counts.zero_()
        self.steps = 0
        return mean, by_range


def _finite(tensors) -> bool:
    """Whether every tensor is finite: one host read for all of them."""
    flags = [t.isfinite().all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


@dataclass
class _Start:
    """What the checks found: the run folder and, when resuming, the state to continue."""

    run: RunDir
    resume_state: dict | None
    resume_path: Path | None


def _check(config: Config, run_dir: Path, resume: bool, warn) -> _Start:
    """Every check on the user's input, before data, planning or any output."""
    run = RunDir(run_dir)
    run.check_usable()
    check_data_config(config.data)
    build_score_model(config)  # an unknown backbone, an unsupported resolution, bad options
    if not resume:
        if run.latest_checkpoint() is not None:
            raise RunError(f"{run.path} already holds a trained run; resume it or choose another "
                           f"run folder")
        return _Start(run, None, None)
    state, path = load_resume_state(run, warn)
    return _Start(run, state, path)


def _restore(state, model, ema: EMA, optimizer, g: torch.Generator, ctx, config: Config,
             path: Path) -> int:
    """Load a checkpoint's weights, EMA, optimizer and random streams; return its step."""
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
    generators = state["rng"]["generators"]
    if len(generators) == ctx.world:  # same world size: continue each rank's stream exactly
        g.set_state(generators[ctx.rank].cpu())
    torch.set_rng_state(state["rng"]["torch"].cpu())
    return int(state["step"])


def _wrap(model, ctx, fast: FastPath, cache: Path | None):
    """The network the loop calls: DDP across ranks, then torch.compile when the fast path
    compiles (from the cached artifacts when there are some)."""
    net = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda"
                                      else None)
    if not fast.compile:
        return net
    load_artifacts(cache)
    return torch.compile(net, backend=fast.backend)


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
) -> TrainResult:
    """Train `config` in `run_dir` (created if needed). With `resume`, continue from the newest
    good checkpoint there. `on_start` receives the config as the run records it (its "auto"
    noise fields planned from the data), the model's parameter count and the fast path it trains
    on (compiling.FastPath) once start-up is done;
    `warn` hears about damaged checkpoints skipped and files cleaned up, `notify` about the
    waits of start-up: the fast path's timings on a GPU (probing.py) and whether the first step
    compiles or loads the compile cached in the run folder. `stop_after` ends the
    call after that many steps as an interruption would (saving a checkpoint); tests use it to
    compare a resumed run with an uninterrupted one."""
    warn = warn or (lambda message: None)
    ctx = distributed.setup(config.train.device)
    # The handler goes in before start-up (data, model, TensorBoard), so a Ctrl-C at any point
    # ends the call cleanly rather than with a KeyboardInterrupt.
    with _StopOnSignal() as stop:
        try:
            start = _check(config, Path(run_dir), resume, warn)
            if not ctx.main:
                return _train(ctx, config, start, progress, tensorboard, stop_after, stop, on_start,
                              notify)
            start.run.create()
            with RunLock(start.run.lock, f"run {start.run.path}"):
                for path in remove_stale_temporaries(start.run.checkpoints):
                    warn(f"removed {path.name}, left by an interrupted write")
                return _train(ctx, config, start, progress, tensorboard, stop_after, stop, on_start,
                              notify)
        finally:
            distributed.teardown(ctx)


def _train(ctx, config: Config, start: _Start, progress, tensorboard, stop_after, stop,
           on_start, notify) -> TrainResult:
    trainer = _Trainer(ctx, config, start, notify if ctx.main else None)
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


def _diverged(step: int, what: str, last_good: Path | None, lr: float) -> str:
    kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
    return (f"training diverged at step {step}: {what} are no longer finite (nan or inf); {kept}; "
            f"lower train.lr (now {lr:g}) and train again")


class _Trainer:
    """One run's training state: data on the device, the schedule (planned from the data when
    asked), the model, EMA, optimizer and random streams, restored when resuming."""

    def __init__(self, ctx, config: Config, start: _Start, notify=None) -> None:
        self.ctx, self.run, self.notify = ctx, start.run, notify  # notify: rank 0's, else None
        tc, device = config.train, ctx.device
        cuda = device.type == "cuda"
        torch.manual_seed(tc.seed)

        self.images = load_images(config.data).images.to(device)
        # The per-channel mean of the training images, kept with every checkpoint: the centre of
        # the noisiest marginal, where the samplers that start there begin (SamplerPlan.start_point).
        self.data_mean = self.images.mean(dim=(0, 2, 3), dtype=torch.float64).div(255).float().cpu()
        if not config.noise.planned:  # Techniques 1, 2, 4 on this very data; the run records them
            config = dataclasses.replace(config, noise=plan_for_images(config.noise, self.images))
        self.config = config
        self.schedule = Schedule.from_noise(config.noise)
        self.sigmas = self.schedule.sigmas(device)
        self.model, self.plugin = build_score_model(config, channels=self.images.shape[1])
        self.model.to(device)
        resumed = int(start.resume_state["step"]) if start.resume_state is not None else 0
        self.fast = FastPath.for_training(
            device, get_backbone(config.model.backbone)[0].channels_last, tc,
            steps=tc.iters - resumed, cached=lambda path: self._compile_cache(path).is_file())
        shape = tuple(self.images.shape[1:])
        check_training_batch(self.model, tc.batch_size, shape, self.sigmas,
                             self.fast.autocast(device))
        # Uncompiled on a GPU, the switches left at auto are timed there (probing.py). Under DDP
        # rank 0 times them and every rank takes its choice: all ranks must train one path.
        if probing.probes(device, self.fast, tc.probe):
            paths = probing.candidates(self.fast, device, amp=tc.amp,
                                       channels_last=tc.channels_last)
            probed = None
            if ctx.main:
                probed = probing.probe(
                    paths, probing.training(self.model, tc.batch_size, shape, self.sigmas),
                    self.model, device, record=self.run.probes, notify=notify,
                    key=f"train|{config.model.backbone}|{config.model.options}|{shape}|"
                        f"{tc.batch_size}")
            probed = paths[distributed.gather(ctx, paths.index(probed) if ctx.main else None)[0]]
            if probed.amp != self.fast.amp:  # float32 takes more memory than bf16
                check_training_batch(self.model, tc.batch_size, shape, self.sigmas,
                                     probed.autocast(device))
            self.fast = probed
        if self.fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, tc.ema)
        self.autocast = self.fast.autocast(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, eps=tc.adam_eps,
                                          fused=cuda)
        self.g = torch.Generator(device=device).manual_seed(tc.seed + 7919 * ctx.rank)
        self.sampler = EpochSampler(len(self.images), tc.batch_size, tc.seed, ctx.rank, ctx.world,
                                    device)
        self.step = 0
        if start.resume_state is not None:
            self.step = _restore(start.resume_state, self.model, self.ema, self.optimizer, self.g,
                                 ctx, config, start.resume_path)
            start.resume_state = None  # the loop does not need the old tensors
        self.compile_cache = self._compile_cache(self.fast) if self.fast.compile else None
        self.net = _wrap(self.model, ctx, self.fast, self.compile_cache)
        self.writer = None
        self.result = TrainResult(step=self.step, checkpoint=start.resume_path)
        if ctx.main:
            self.run.write_config(config)

    def _compile_cache(self, path: FastPath) -> Path:
        """Where the run folder keeps the training compile of `path`."""
        config = self.config
        key = (f"train|{config.model.backbone}|{config.model.options}|{config.data.res}|"
               f"{config.train.batch_size}|{self.ctx.world}|{path}")
        return cache_file(self.run.compile_cache, self.model, self.ctx.device, key)

    def open_tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run.logs), purge_step=self.step)

    def checkpoint(self) -> Path | None:
        """Save (rank 0), after checking the weights are finite: a diverged model never
        replaces or rotates out a good checkpoint."""
        generators = distributed.gather(self.ctx, self.g.get_state())  # every rank takes part
        if not _finite(self.ema.state_dict().values()) or not _finite(self.model.parameters()):
            raise DivergedError(_diverged(self.step, "the weights", self.result.checkpoint,
                                          self.config.train.lr))
        if not self.ctx.main:
            return None
        config = self.config
        return save_checkpoint(self.run.checkpoints, {
            "config": config.to_dict(),
            "sigmas": self.sigmas.cpu(),
            "data_mean": self.data_mean,
            "backbone": self.plugin.record(config.model.backbone),
            "pegasus_version": __version__,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "ema_updates": self.ema.updates,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "world_size": self.ctx.world,
            "rng": {"generators": [s.cpu() for s in generators], "torch": torch.get_rng_state()},
        }, keep=config.train.keep)

    def grid(self) -> None:
        """A grid of EMA samples (the same seed every time, so grids show progress, not luck)."""
        x = sample_images(self.ema.module.eval(), self.schedule, num=self.config.train.grid,
                          res=self.config.data.res, seed=self.config.train.seed,
                          device=self.ctx.device, channels=self.images.shape[1])
        save_grid(x, self.run.sample_grid(self.step))
        if self.writer is not None:
            from torchvision.utils import make_grid

            self.writer.add_image("samples", make_grid(x.cpu()), self.step)

    def loop(self, progress, stop, stop_after) -> None:
        ctx, tc, device = self.ctx, self.config.train, self.ctx.device
        log = LossLog(self.sigmas)
        first = self.step
        if progress is not None and ctx.main:
            progress(self.step, tc.iters, None)  # a resumed run starts where it left off
        if self.notify is not None and self.fast.compile:
            self.notify(compile_notice(tc.batch_size, self.compile_cache))
        self.net.train()
        with conv_autotuning(device):
            self._run_steps(log, first, progress, stop, stop_after)

    def _step(self, x: torch.Tensor, first: bool) -> DSMLoss:
        """One training step. The process's `first` step under torch.compile is the one that
        compiles: its noise is kept (host-side seed and offset, no device sync) so that, if the
        compile fails, the step is drawn again with the same noise on the uncompiled network."""
        noise = self.g.get_state() if first and self.fast.compile else None
        try:
            return training_step(self.net, self.optimizer, self.ema, x, self.sigmas, self.g,
                                 self.autocast)
        except torch._dynamo.exc.TorchDynamoException as e:
            if not self.fast.compile:
                raise
            # The compile failed before Adam stepped (in the forward or the backward); the run
            # goes on uncompiled. A later recompile that fails draws its step with fresh noise.
            warn_uncompiled(e, "train.compile = false")
            self.fast = dataclasses.replace(self.fast, compile=False)
            self.compile_cache = None
            self.net = _wrap(self.model, self.ctx, self.fast, None)
            self.net.train()
            if noise is not None:
                self.g.set_state(noise)
            return self._step(x, first=False)

    def _run_steps(self, log, first: int, progress, stop, stop_after) -> None:
        """Steps until the run's end, an interruption or `stop_after` steps of this call."""
        ctx, tc, device, result = self.ctx, self.config.train, self.ctx.device, self.result
        while self.step < tc.iters:
            x = self.images[self.sampler.indices(self.step)].float() / 255
            if self.config.data.flip:
                flip = torch.rand(len(x), device=device, generator=self.g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            if self.fast.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            log.add(self._step(x, first=self.step == first))
            self.step += 1
            step = self.step
            if step == first + 1 and self.compile_cache is not None and ctx.main:
                if not self.compile_cache.is_file():  # forward and backward are compiled by now
                    save_artifacts(self.compile_cache)

            logging = step % tc.log_every == 0 or step == tc.iters
            mean = None
            if logging:  # the one host read: every log_every steps
                mean, by_range = log.read(ctx)
                if not math.isfinite(mean):
                    raise DivergedError(_diverged(step, "the losses", result.checkpoint, tc.lr))
                result.losses.append((step, mean))
                if self.writer is not None:
                    self.writer.add_scalar("loss", mean, step)
                    for name, value in by_range.items():
                        self.writer.add_scalar(name, value, step)
            if progress is not None and ctx.main:
                progress(step, tc.iters, mean)
            if tc.sample_every and step % tc.sample_every == 0 and ctx.main:
                self.grid()
                self.net.train()
            if step % tc.checkpoint_every == 0 and step < tc.iters:
                result.checkpoint = self.checkpoint()
            # Under DDP the ranks agree on stopping at log steps only, to keep steps sync-free.
            if not ctx.distributed or logging:
                if distributed.any_rank(ctx, stop.signum is not None):
                    result.interrupted = stop.signum or signal.SIGTERM
                    break
            if stop_after is not None and step - first >= stop_after:
                break
