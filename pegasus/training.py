"""The training loop: DSM on a fixed noise schedule with Adam, EMA weights, TensorBoard logs,
sample grids, atomic checkpoints, exact resume, and a clean stop on Ctrl-C or SIGTERM."""

from __future__ import annotations

import dataclasses
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from pegasus import __version__, toml_writer
from pegasus.build import build_score_model, resolve_device, schedule_from_config
from pegasus.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pegasus.config import Config
from pegasus.data import load_images
from pegasus.errors import UserError
from pegasus.generate import sample_images
from pegasus.images import save_grid
from pegasus.loss import dsm_loss
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
    end. Resuming at step s draws exactly the batches an uninterrupted run would have."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        start, parts, need = step * self.batch_size, [], self.batch_size
        while need:
            epoch, offset = divmod(start, self.n)
            take = min(need, self.n - offset)
            parts.append(self._order(epoch)[offset : offset + take])
            start, need = start + take, need - take
        return torch.cat(parts)


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
) -> TrainResult:
    """Train `config` in `run_dir` (created if needed). With `resume`, continue from the latest
    checkpoint there. `stop_after` ends the call after that many steps as an interruption would
    (saving a checkpoint); tests use it to compare a resumed run with an uninterrupted one."""
    run_dir = Path(run_dir)
    ckpt_dir, sample_dir = run_dir / "checkpoints", run_dir / "samples"
    tc = config.train
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)

    data = load_images(config.data)
    images = data.images.to(device)
    if not config.noise.planned:  # Techniques 1, 2, 4 on this very data; the run records the result
        config = dataclasses.replace(config, noise=plan_for_images(config.noise, images))
    schedule = schedule_from_config(config.noise)
    sigmas = schedule.sigmas(device)
    model, plugin = build_score_model(config, channels=images.shape[1])
    model.to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
    g = torch.Generator(device=device).manual_seed(tc.seed)
    sampler = EpochSampler(len(images), tc.batch_size, tc.seed)

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
        ema.module.load_state_dict(state["ema"])
        ema.n_averaged.copy_(state["ema_updates"])
        optimizer.load_state_dict(state["optimizer"])
        g.set_state(state["rng"]["generator"].cpu())
        torch.set_rng_state(state["rng"]["torch"].cpu())
        step = int(state["step"])

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(toml_writer.dumps(config.to_dict()))

    def checkpoint() -> Path:
        return save_checkpoint(ckpt_dir, {
            "config": config.to_dict(),
            "sigmas": sigmas.cpu(),
            "backbone": {"name": config.model.backbone, "plugin": plugin.name,
                         "distribution": plugin.distribution, "version": plugin.version},
            "pegasus_version": __version__,
            "model": model.state_dict(),
            "ema": ema.module.state_dict(),
            "ema_updates": ema.n_averaged.cpu(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "rng": {"generator": g.get_state(), "torch": torch.get_rng_state()},
        }, keep=tc.keep)

    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "logs"), purge_step=step)
    groups = _loss_by_sigma_groups(len(sigmas))
    loss_sum = torch.zeros((), device=device)
    level_sum = torch.zeros(len(sigmas), device=device)
    level_count = torch.zeros(len(sigmas), device=device)
    result = TrainResult(step=step)
    first, since_log = step, 0

    def grid() -> Path:
        x = sample_images(ema.module.eval(), schedule, sigmas, num=tc.grid, res=config.data.res,
                          seed=tc.seed, denoise=config.noise.denoise, channels=images.shape[1])
        path = save_grid(x, sample_dir / f"step-{step:08d}.png")
        if writer is not None:
            from torchvision.utils import make_grid

            writer.add_image("samples", make_grid(x.cpu()), step)
        ema.module.train()
        return path

    with _StopOnSignal() as stop:
        model.train()
        while step < tc.iters:
            idx = sampler.indices(step).to(device, non_blocking=True)
            x = images[idx].float() / 255
            if config.data.flip:
                flip = torch.rand(len(x), device=device, generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            out = dsm_loss(model, x, sigmas, generator=g)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            ema.update_parameters(model)
            step += 1
            since_log += 1

            # Accumulate on the device; the host reads the numbers back only at log time.
            loss_sum += out.loss.detach()
            level_sum.index_add_(0, out.levels, out.per_sample.detach())
            level_count.index_add_(0, out.levels, torch.ones_like(out.per_sample))
            if step % tc.log_every == 0 or step == tc.iters:
                mean = loss_sum.item() / since_log
                result.losses.append((step, mean))
                if writer is not None:
                    writer.add_scalar("loss", mean, step)
                    sums, counts = level_sum.tolist(), level_count.tolist()
                    for lo, hi in groups:
                        n = sum(counts[lo:hi])
                        if n:
                            tag = f"loss_by_sigma/{float(sigmas[lo]):.3g}-{float(sigmas[hi - 1]):.3g}"
                            writer.add_scalar(tag, sum(sums[lo:hi]) / n, step)
                loss_sum.zero_(), level_sum.zero_(), level_count.zero_()
                since_log = 0
                if progress is not None:
                    progress(step, tc.iters, mean)
            elif progress is not None:
                progress(step, tc.iters, None)
            if tc.sample_every and step % tc.sample_every == 0:
                grid()
            if step % tc.checkpoint_every == 0 and step < tc.iters:
                result.checkpoint = checkpoint()
            if stop.signum is not None:
                result.interrupted = stop.signum
                break
            if stop_after is not None and step - first >= stop_after:
                break

    result.step = step
    if result.checkpoint is None or int(result.checkpoint.stem.split("-")[1]) != step:
        result.checkpoint = checkpoint()
    if writer is not None:
        writer.close()
    return result
