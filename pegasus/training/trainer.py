"""The training loop: the run's objective (pegasus/objectives/, whichever the config names) with
Adam, EMA weights, TensorBoard logs, sample grids, atomic checkpoints, exact resume, a clean
stop on Ctrl-C or SIGTERM, and a stop with the good checkpoints intact when the loss or the
weights stop being finite (stops.py).

Fast path (NCSNv2 runs are 300k steps): bf16 autocast for the network with the loss and the
1/sigma scaling in float32, channels_last, fused Adam, a foreach EMA update, data and batch
indices resident on the device, optional torch.compile, and no host synchronisation inside a
step: losses are accumulated on the device and read back every `log_every` steps (LossLog).
Under torchrun each rank trains on its own shard with DDP; rank 0 alone logs, samples and
checkpoints.

How a training call starts (its checks, the run's lock) is in training/__init__.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import math
import signal
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus import distributed, fastpath
from pegasus.colour import ColourStats, Drift, mean_noise
from pegasus.config import Config
from pegasus.data import load_images
from pegasus.errors import SamplingError
from pegasus.fastpath.cache import load_artifacts, save_artifacts, signed
from pegasus.fastpath.compile import compile_notice, warn_uncompiled
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.rules import FastPath, conv_autotuning
from pegasus.hookspecs import Loss
from pegasus.images import save_grid, tile
from pegasus.model.ema import EMA
from pegasus.noise.schedule import Schedule
from pegasus.noise.techniques import choose_for_images
from pegasus.registry import get_objective
from pegasus.run.checkpoint import save_checkpoint
from pegasus.run.job import SamplingJob
from pegasus.run.layout import RunDir
from pegasus.run.trained import TrainedRun
from pegasus.training.batches import EpochSampler, batch_of
from pegasus.training.heldout import HeldOut
from pegasus.training.state import checkpoint_state, restore
from pegasus.training.stops import all_finite, diverged


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss) per log
    interrupted: int | None = None  # the signal number that stopped training early
    checkpoint: Path | None = None
    held_out: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    stopped_early: int | None = None  # the step the held-out loss's patience ran out at
    colour: list[tuple[int, float]] = field(default_factory=list)  # (step, largest mean gap)


@dataclass
class StartingPoint:
    """Where a training call starts: the run folder and, when resuming, the checkpoint it
    continues (its state and step); a new run may start from given weights (`init`: another
    run's EMA weights, which `pegasus tune` starts from) instead of fresh ones."""

    run: RunDir
    state: dict | None = None
    path: Path | None = None
    init: dict | None = None

    @property
    def step(self) -> int:
        return int(self.state["step"]) if self.state is not None else 0


class LossLog:
    """The training loss, summed on the device between log steps (no host read per step) and
    read back once: the mean over the ranks, and this rank's mean per range of noise levels for
    TensorBoard."""

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

    def add(self, out: Loss) -> None:
        self.total += out.loss.detach()
        self.sums.index_add_(0, out.nearest, out.per_sample.detach())
        self.counts.index_add_(0, out.nearest, self.one.expand(len(out.nearest)))
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


def training_step(net, optimizer, ema: EMA, x: torch.Tensor, loss, autocast) -> Loss:
    """One step: `loss(net, x)` under `autocast` (the loss itself is float32: the objective's),
    backward, Adam, EMA. Nothing in it reads a value back to the host."""
    with autocast:
        out = loss(net, x)
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    optimizer.step()
    ema.update()
    return out


def has_dropout(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def step_randomness(drops: bool, seed: int, rank: int, step: int, device: torch.device):
    """The random numbers a step draws outside the run's own generator, dropout's masks, seeded
    by the step (and restored after it), so that a resumed run draws the masks it would have
    drawn in one go. A network without dropout (`drops` false) draws none, and trains as it
    always did."""
    if not drops:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(
        devices=[device] if device.type == "cuda" else [], device_type=device.type))
    # A digest of the three, 32 bits: the CPU's Mersenne Twister keeps only a seed's low 32.
    key = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=4).digest()
    torch.manual_seed(int.from_bytes(key, "little"))
    return stack


class Trainer:
    """One run's training, set up in stages: the data (and the schedule chosen from it), the
    model, the fast path, the optimiser (with EMA and random streams), the restored state when
    resuming, then the loop."""

    def __init__(self, ctx, config: Config, start: StartingPoint, network: tuple,
                 notify=None) -> None:
        self.ctx, self.run, self.notify = ctx, start.run, notify  # notify: rank 0's, else None
        torch.manual_seed(config.train.seed)
        self.config = self._data(config)
        self._model(network)
        self._objective()
        if start.init is not None:  # before the EMA copies the network (_optimiser)
            self.model.load_state_dict(start.init)
            start.init = None
        self._fast_path(steps_left=config.train.iters - start.step)
        self._optimiser()
        self.step = start.step
        if start.state is not None:
            restore(start.state, self.model, self.ema, self.optimizer, self.g, ctx, self.config,
                    start.path)
            start.state = None  # the loop does not need the old tensors
        self.compile_cache = self._compile_cache(self.fast) if self.fast.compile else None
        self.net = self._wrap(self.compile_cache)
        self.writer = None
        self.warned_colour = False  # colour drift is warned of once a call
        self.result = TrainResult(step=self.step, checkpoint=start.path)
        if ctx.main:
            self.run.write_config(self.config)

    def _data(self, config: Config) -> Config:
        """The training images on the device, their per-channel mean, and the schedule: the
        config's, or Techniques 1, 2 and 4 on this very data (the run records what it chose)."""
        device = self.ctx.device
        self.images = load_images(config.data).images.to(device)
        # The centre of the noisiest marginal, kept with every checkpoint: where the samplers
        # that start at the noisiest level begin (SamplerPlan.start_point).
        self.data_mean = self.images.mean(dim=(0, 2, 3), dtype=torch.float64).div(255).float().cpu()
        self.data_colour = ColourStats.of(self.images)  # what each grid's colours are held to
        if not config.noise.planned:
            config = dataclasses.replace(config, noise=choose_for_images(config.noise, self.images))
        self.schedule = Schedule.from_noise(config.noise)
        self.sigmas = self.schedule.sigmas(device)
        return config

    def _model(self, network: tuple) -> None:
        """The network `train` built, (ScoreModel, Plugin), its weights drawn from the run's
        seed, moved to its device; EDM's preconditioning is then taken about this data's mean,
        and the model told the sigmas it trains on."""
        self.model, self.plugin = network
        if self.model.edm is not None:
            self.model.edm.centre.copy_(self.data_mean.view(-1, 1, 1))
        self.model.know(self.sigmas)
        self.model.to(self.ctx.device)

    def _objective(self) -> None:
        """The run's loss, whichever objective the config names, and the held-out loss where
        the objective's means something (hookspecs.Objective.held_out)."""
        objective = self.config.objective
        spec, _ = get_objective(objective.name)
        self.loss = spec.build(objective.options, config=self.config, sigmas=self.sigmas,
                               model=self.model)
        self.held_out = (HeldOut(self.config, self.ctx.device)
                         if self.ctx.main and spec.held_out else None)

    def objective(self, net, x: torch.Tensor) -> Loss:
        """One batch's loss at the step training is at (the objective's stage follows it)."""
        return self.loss(net, x, step=self.step, generator=self.g)

    def _fast_path(self, steps_left: int) -> None:
        self.fast = fastpath.for_training(
            self.model, self.ctx, self.config, steps=steps_left,
            shape=tuple(self.images.shape[1:]), sigmas=self.sigmas, record=self.run.probes,
            cached=lambda path: signed(self._compile_cache(path)), notify=self.notify)
        if self.fast.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.autocast = self.fast.autocast(self.ctx.device)

    def _optimiser(self) -> None:
        """EMA, Adam (fused), the noise generator (one stream per rank) and the batches."""
        tc, ctx = self.config.train, self.ctx
        self.ema = EMA(self.model, tc.ema)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=tc.lr, eps=tc.adam_eps,
                                          fused=True)
        self.g = torch.Generator(device=ctx.device).manual_seed(tc.seed + 7919 * ctx.rank)
        self.batches = EpochSampler(len(self.images), tc.batch_size, tc.seed, ctx.rank, ctx.world,
                                    ctx.device)

    def _compile_cache(self, path: fastpath.FastPath) -> Path:
        """Where the user's compile cache keeps the training compile of `path`."""
        key = WorkKey.of("train", self.config, self.config.train.batch_size, self.ctx.world)
        return key.compile_file(self.ctx.device, path)

    def _wrap(self, cache: Path | None):
        """The network the loop calls: DDP across ranks, then torch.compile when the fast path
        compiles (from the cached artifacts when there are some)."""
        net = self.model
        if self.ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.ctx.device.type == "cuda"
            net = DistributedDataParallel(net, device_ids=[self.ctx.device.index] if cuda else None)
        if not self.fast.compile:
            return net
        load_artifacts(cache)
        return torch.compile(net, backend=self.fast.backend)

    def open_tensorboard(self) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.run.logs), purge_step=self.step)

    def checkpoint(self) -> Path | None:
        """Save (rank 0), after checking the weights are finite: a diverged model never
        replaces or rotates out a good checkpoint."""
        generators = distributed.gather(self.ctx, self.g.get_state())  # every rank takes part
        if not all_finite(self.ema.state_dict().values()) or not all_finite(self.model.parameters()):
            raise diverged(self.step, "the weights", self.result.checkpoint, self.config.train.lr)
        if not self.ctx.main:
            return None
        return save_checkpoint(self.run.checkpoints, checkpoint_state(
            config=self.config, sigmas=self.sigmas, data_mean=self.data_mean,
            backbone=self.plugin.record(self.config.model.backbone), model=self.model,
            ema=self.ema, optimizer=self.optimizer, step=self.step, world=self.ctx.world,
            generators=generators), keep=self.config.train.keep)

    def grid(self) -> None:
        """A grid of EMA samples by the run's default sampler (TrainedRun.plan: the same seed
        every time, so grids show progress, not luck), and its colours against the data's."""
        model, device, num = self.ema.module.eval(), self.ctx.device, self.config.train.grid
        # The job of the EMA network as it stands, eager and in float32: no probe, no compile
        # and no change to the module's layout in the middle of training.
        trained = TrainedRun(self.config, model, self.schedule, self.step, self.run.path, device,
                             centre=self.data_mean.view(-1, 1, 1).to(device),
                             centre_recorded=True)
        job = SamplingJob(trained, trained.plan(), num, num,
                          FastPath(amp=False, channels_last=False, compile=False), model)
        try:
            x = job.images(self.config.train.seed)
        except SamplingError:  # a network that diverges stops at its next log (stops.py)
            if self.notify is not None:
                self.notify(f"warning: no sample grid at step {self.step}: its images are not "
                            f"finite numbers")
            return
        save_grid(x, self.run.sample_grid(self.step))
        drift = Drift(ColourStats.of(x), self.data_colour, mean_noise(x))
        self.result.colour.append((self.step, drift.mean_gap))
        if drift.drifting and self.notify is not None and not self.warned_colour:
            self.warned_colour = True
            self.notify(f"warning: the samples' colours drift from the data's at step "
                        f"{self.step}: {drift.describe()}")
        if self.writer is not None:
            self.writer.add_image("samples", tile(x.cpu()), self.step)
            for name, value in drift.scalars().items():
                self.writer.add_scalar(name, value, self.step)

    def loop(self, progress, stop, stop_after) -> None:
        """Steps until the run's end, an interruption or `stop_after` steps of this call."""
        tc, first, log = self.config.train, self.step, LossLog(self.sigmas)
        if progress is not None and self.ctx.main:
            progress(self.step, tc.iters, None)  # a resumed run starts where it left off
        if self.notify is not None and self.fast.compile:
            self.notify(compile_notice(tc.batch_size, self.compile_cache))
        self.net.train()
        drops = has_dropout(self.model)  # once a call: the network's layers do not change
        with conv_autotuning(self.ctx.device):
            while self.step < tc.iters:
                x = batch_of(self.images, self.batches.indices(self.step), flip=self.config.data.flip,
                             channels_last=self.fast.channels_last, generator=self.g,
                             shift=self.config.data.shift)
                with step_randomness(drops, tc.seed, self.ctx.rank, self.step,
                                     self.ctx.device):
                    log.add(self._step(x, first=self.step == first))
                self.step += 1
                if self.step == first + 1:
                    self._keep_compile()
                mean = self._log(log) if self._logs(self.step) else None
                if progress is not None and self.ctx.main:
                    progress(self.step, tc.iters, mean)
                self._keep()
                if self._stopping(stop, logged=mean is not None):
                    if stop.signum is not None or not self.result.stopped_early:
                        self.result.interrupted = stop.signum or signal.SIGTERM
                    break
                if stop_after is not None and self.step - first >= stop_after:
                    break

    def _logs(self, step: int) -> bool:
        return step % self.config.train.log_every == 0 or step == self.config.train.iters

    def _log(self, log: LossLog) -> float:
        """The one host read: the mean loss since the last log, to the result and TensorBoard."""
        mean, by_range = log.read(self.ctx)
        if not math.isfinite(mean):
            raise diverged(self.step, "the losses", self.result.checkpoint, self.config.train.lr)
        self.result.losses.append((self.step, mean))
        held = self.held_out.loss(self.ema.module, self.loss) if self.held_out else None
        if held is not None:
            self.result.held_out.append((self.step, held))
            patience = self.config.train.early_stop
            if patience and self.held_out.since_best >= patience:
                self.result.stopped_early = self.step
        if self.writer is not None:
            self.writer.add_scalar("loss", mean, self.step)
            if held is not None:
                self.writer.add_scalar("held_out_loss", held, self.step)
            for name, value in by_range.items():
                self.writer.add_scalar(name, value, self.step)
        return mean

    def _keep(self) -> None:
        """A sample grid and a checkpoint when their intervals come round."""
        tc = self.config.train
        if tc.sample_every and self.step % tc.sample_every == 0 and self.ctx.main:
            self.grid()
            self.net.train()
        if self.step % tc.checkpoint_every == 0 and self.step < tc.iters:
            self.result.checkpoint = self.checkpoint()

    def _stopping(self, stop, logged: bool) -> bool:
        """Whether a signal asked to stop, or the held-out loss stopped falling (early_stop);
        under DDP the ranks agree on it at log steps only, to keep steps free of
        synchronisation."""
        if self.ctx.distributed and not logged:
            return False
        wants = stop.signum is not None or self.result.stopped_early is not None
        return distributed.any_rank(self.ctx, wants)

    def _keep_compile(self) -> None:
        """After the process's first step, forward and backward are compiled: kept for next time."""
        if self.compile_cache is not None and self.ctx.main and not signed(self.compile_cache):
            save_artifacts(self.compile_cache)

    def _step(self, x: torch.Tensor, first: bool) -> Loss:
        """One training step. The process's `first` step under torch.compile is the one that
        compiles: its noise is kept (host-side seed and offset, no device sync) so that, if the
        compile fails, the step is drawn again with the same noise on the uncompiled network."""
        noise = self.g.get_state() if first and self.fast.compile else None
        try:
            return training_step(self.net, self.optimizer, self.ema, x, self.objective,
                                 self.autocast)
        except torch._dynamo.exc.TorchDynamoException as e:
            if not self.fast.compile:
                raise
            # The compile failed before Adam stepped (in the forward or the backward); the run
            # goes on uncompiled. A later recompile that fails draws its step with fresh noise.
            warn_uncompiled(e, "train.compile = false")
            self.fast = dataclasses.replace(self.fast, compile=False)
            self.compile_cache = None
            self.net = self._wrap(None)
            self.net.train()
            if noise is not None:
                self.g.set_state(noise)
            return self._step(x, first=False)
