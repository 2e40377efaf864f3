"""The training loop: DSM on a fixed noise schedule with Adam, EMA weights, TensorBoard logs,
sample grids, atomic checkpoints, exact resume, and a clean stop on Ctrl-C or SIGTERM.

Fast path (NCSNv2 runs are 300k steps): bf16 autocast for the network with the loss and the
1/sigma scaling in float32, channels_last, fused Adam, a foreach EMA update, data and batch
indices resident on the device, optional torch.compile, and no host synchronisation inside a
step: losses are accumulated on the device and read back every `log_every` steps. Under torchrun
each rank trains on its own shard with DDP; rank 0 alone logs, samples and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus import __version__, distributed, toml_writer
from pegasus.build import build_score_model, schedule_from_config
from pegasus.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pegasus.config import Config
from pegasus.data import load_images
from pegasus.ema import EMA
from pegasus.errors import UserError
from pegasus.generate import sample_images
from pegasus.images import save_grid
from pegasus.loss import DSMLoss, dsm_loss
from pegasus.planner import plan_for_images


@dataclass
class TrainResult:
    step: int
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss) per log
    interrupted: int | None = None  # the signal number that stopped training early
    checkpoint: Path | None = None


ProgressFn = Callable[[int, int, float | None], None]


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


def _loss_by_sigma_groups(levels: int, groups: int = 8) -> list[tuple[int, int]]:
    bounds = torch.linspace(0, levels, min(groups, levels) + 1).round().long().tolist()
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    progress: ProgressFn | None = None,
    tensorboard: bool = True,
    stop_after: int | None = None,
    on_start: Callable[[Config], None] | None = None,
) -> TrainResult:
    """Train `config` in `run_dir` (created if needed). With `resume`, continue from the latest
    checkpoint there. `on_start` receives the config as the run records it (its "auto" noise
    fields planned from the data) once start-up is done. `stop_after` ends the call after that
    many steps as an interruption would (saving a checkpoint); tests use it to compare a resumed
    run with an uninterrupted one."""
    ctx = distributed.setup(config.train.device)
    # The handler goes in before start-up (data, model, TensorBoard), so a Ctrl-C at any point
    # ends the call cleanly rather than with a KeyboardInterrupt.
    with _StopOnSignal() as stop:
        try:
            return _train(ctx, config, Path(run_dir), resume, progress, tensorboard, stop_after, stop,
                          on_start)
        finally:
            distributed.teardown(ctx)


def _train(ctx, config, run_dir, resume, progress, tensorboard, stop_after, stop,
           on_start) -> TrainResult:
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    tc, device = config.train, ctx.device
    cuda = device.type == "cuda"
    amp = tc.amp == "bf16" or (tc.amp == "auto" and cuda)
    channels_last = tc.channels_last is True or (tc.channels_last == "auto" and cuda)
    torch.manual_seed(tc.seed)

    data = load_images(config.data)
    images = data.images.to(device)
    if not config.noise.planned:  # Techniques 1, 2, 4 on this very data; the run records the result
        config = dataclasses.replace(config, noise=plan_for_images(config.noise, images))
    schedule = schedule_from_config(config.noise)
    sigmas = schedule.sigmas(device)
    model, plugin = build_score_model(config, channels=images.shape[1])
    model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    ema = EMA(model, tc.ema)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr, fused=cuda)
    g = torch.Generator(device=device).manual_seed(tc.seed + 7919 * ctx.rank)
    sampler = EpochSampler(len(images), tc.batch_size, tc.seed, ctx.rank, ctx.world, device)

    step = 0
    if not resume and latest_checkpoint(ckpt_dir) is not None:
        raise UserError(f"{run_dir} already holds a trained run; continue it with --resume or "
                        f"choose another --run")
    if resume:
        found = latest_checkpoint(ckpt_dir)
        if found is None:
            raise UserError(f"nothing to resume: {ckpt_dir} holds no checkpoint; drop --resume")
        state = load_checkpoint(found, map_location=device)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"], int(state["ema_updates"]))
        optimizer.load_state_dict(state["optimizer"])
        generators = state["rng"]["generators"]
        if len(generators) == ctx.world:  # same world size: continue each rank's stream exactly
            g.set_state(generators[ctx.rank].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        step = int(state["step"])

    net = model
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if tc.compile:
        net = torch.compile(net)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if amp
                else contextlib.nullcontext())

    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.toml").write_text(toml_writer.dumps(config.to_dict()))

    def checkpoint() -> Path | None:
        generators = distributed.gather(ctx, g.get_state())  # every rank takes part
        if not ctx.main:
            return None
        return save_checkpoint(ckpt_dir, {
            "config": config.to_dict(),
            "sigmas": sigmas.cpu(),
            "backbone": {"name": config.model.backbone, "plugin": plugin.name,
                         "distribution": plugin.distribution, "version": plugin.version},
            "pegasus_version": __version__,
            "model": model.state_dict(),
            "ema": ema.state_dict(),
            "ema_updates": ema.updates,
            "optimizer": optimizer.state_dict(),
            "step": step,
            "world_size": ctx.world,
            "rng": {"generators": [s.cpu() for s in generators], "torch": torch.get_rng_state()},
        }, keep=tc.keep)

    writer = None
    if tensorboard and ctx.main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "logs"), purge_step=step)
    groups = _loss_by_sigma_groups(len(sigmas))
    loss_sum = torch.zeros((), device=device)
    level_sum = torch.zeros(len(sigmas), device=device)
    level_count = torch.zeros(len(sigmas), device=device)
    ones = torch.ones(tc.batch_size, device=device)  # each sample counts once for its level
    result = TrainResult(step=step)
    first, since_log = step, 0

    def grid() -> Path:
        x = sample_images(ema.module.eval(), schedule, sigmas, num=tc.grid, res=config.data.res,
                          seed=tc.seed, denoise=config.noise.denoise, channels=images.shape[1])
        path = save_grid(x, sample_dir / f"step-{step:08d}.png")
        if writer is not None:
            from torchvision.utils import make_grid

            writer.add_image("samples", make_grid(x.cpu()), step)
        return path

    if distributed.any_rank(ctx, stop.signum is not None):  # stopped during start-up
        result.interrupted = stop.signum or signal.SIGTERM
        result.checkpoint = latest_checkpoint(ckpt_dir)
        if writer is not None:
            writer.close()
        return result
    if on_start is not None and ctx.main:
        on_start(config)
    net.train()
    while step < tc.iters:
        x = images[sampler.indices(step)].float() / 255
        if config.data.flip:
            flip = torch.rand(len(x), device=device, generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = training_step(net, optimizer, ema, x, sigmas, g, autocast)
        step += 1
        since_log += 1

        # Accumulate on the device; the host reads the numbers back only at log time.
        loss_sum += out.loss.detach()
        level_sum.index_add_(0, out.levels, out.per_sample.detach())
        level_count.index_add_(0, out.levels, ones)
        logging = step % tc.log_every == 0 or step == tc.iters
        if logging:
            mean = distributed.mean(ctx, loss_sum).item() / since_log
            result.losses.append((step, mean))
            if writer is not None:
                writer.add_scalar("loss", mean, step)
                sums, counts = level_sum.tolist(), level_count.tolist()
                for lo, hi in groups:
                    if n := sum(counts[lo:hi]):
                        tag = f"loss_by_sigma/{float(sigmas[lo]):.3g}-{float(sigmas[hi - 1]):.3g}"
                        writer.add_scalar(tag, sum(sums[lo:hi]) / n, step)
            loss_sum.zero_(), level_sum.zero_(), level_count.zero_()
            since_log = 0
        if progress is not None and ctx.main:
            progress(step, tc.iters, mean if logging else None)
        if tc.sample_every and step % tc.sample_every == 0 and ctx.main:
            grid()
            net.train()
        if step % tc.checkpoint_every == 0 and step < tc.iters:
            result.checkpoint = checkpoint()
        # Under DDP the ranks agree on stopping at log steps only, to keep steps sync-free.
        if not ctx.distributed or logging:
            if distributed.any_rank(ctx, stop.signum is not None):
                result.interrupted = stop.signum or signal.SIGTERM
                break
        if stop_after is not None and step - first >= stop_after:
            break

    result.step = step
    if result.checkpoint is None or int(result.checkpoint.stem.split("-")[1]) != step:
        result.checkpoint = checkpoint()
    if writer is not None:
        writer.close()
    return result
