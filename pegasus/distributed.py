"""Several processes under torchrun (torch.distributed): gloo on CPU, nccl on GPU. Training
runs data-parallel (DDP); sampling, evaluation and the classifiers share their images out by
rank (docs/distributed.md).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them everything here is a no-op and the
work runs as one process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pegasus.devices import resolve_device
from pegasus.errors import UserError, first_line


@dataclass(frozen=True)
class Context:
    rank: int
    world: int
    device: torch.device
    owns_group: bool  # whether we created the process group (and so must destroy it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(device_name: str) -> Context:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(0, 1, resolve_device(device_name), False)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    owns = not dist.is_initialized()
    if owns:
        # torchrun keeps one store across the restarts of a job (--max-restarts): each
        # attempt's group takes keys of its own there, or a restarted group would read the dead
        # attempt's addresses and connect to them.
        from torch.distributed.rendezvous import rendezvous

        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        try:
            store, rank, world = next(rendezvous("env://"))
            dist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                    store=dist.PrefixStore(f"attempt-{attempt}", store))
        except (RuntimeError, ValueError) as e:  # torch's DistError is a RuntimeError
            where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
            raise UserError(f"cannot join the group of {world} processes at {where}: "
                            f"{first_line(e)}; start every process with torchrun, each node "
                            "with the same --rdzv-endpoint and --nnodes "
                            "(docs/distributed.md)") from None
    return Context(dist.get_rank(), dist.get_world_size(), device, owns)


def alone(device: torch.device) -> Context:
    """The context of one process on `device`, no group."""
    return Context(0, 1, device, False)


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def quiet_rank() -> bool:
    """Whether this process is a rank other than 0 of several, which leaves what is said (the
    progress bars, the results, the errors) to rank 0."""
    return os.environ.get("RANK", "0") != "0"


def restarted() -> bool:
    """Whether torchrun restarted this group after a worker failed (--max-restarts)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def job_id() -> str | None:
    """The torchrun job's rendezvous id (--rdzv-id; a fresh one per --standalone launch), the
    same in every restart of the job; None without torchrun."""
    return os.environ.get("TORCHELASTIC_RUN_ID")


@contextmanager
def group(device_name: str) -> Iterator[Context]:
    """The process group of a job for its whole length (one process without torchrun)."""
    ctx = setup(device_name)
    try:
        yield ctx
    except BaseException:
        teardown(ctx, failed=True)
        raise
    teardown(ctx)


def teardown(ctx: Context, failed: bool = False) -> None:
    if ctx.owns_group and dist.is_initialized():
        # All ranks leave together: a rank that tears gloo down while rank 0 is still writing
        # the last checkpoint can abort in gloo's background thread. A rank that failed leaves
        # at once: the others may wait at another collective that it never reaches, and its
        # exit is what makes torchrun stop them (waiting at a barrier, it would hang the job).
        if not failed:
            dist.barrier()
        dist.destroy_process_group()


def mean(ctx: Context, value: torch.Tensor) -> torch.Tensor:
    if ctx.distributed:
        value = value.clone()
        dist.all_reduce(value)
        value /= ctx.world
    return value


def any_rank(ctx: Context, flag: bool) -> bool:
    """True on every rank when `flag` is true on one (a stop request, say)."""
    if not ctx.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather(ctx: Context, obj):
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def share(ctx: Context, n: int, block: int = 1) -> tuple[int, int]:
    """This rank's contiguous share [start, stop) of n items, the ranks' shares in rank order
    making up 0 .. n - 1 (so that what they gather is in one process's order). A share is made
    of whole blocks of `block` items (the last block may be short): work done in batches
    starting at the share's start (features, batch by batch) then meets the same batches as
    one process, so the same float operations."""
    blocks = -(-n // block)
    return (min(n, ctx.rank * blocks // ctx.world * block),
            min(n, (ctx.rank + 1) * blocks // ctx.world * block))


def gather_rows(ctx: Context, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's `rows` (N_r, ...) concatenated in rank order, on every rank, on the CPU.
    The shares may differ in length (each is padded to the longest for the collective), not in
    dtype or trailing shape."""
    if not ctx.distributed:
        return rows.cpu()
    local = rows.to(ctx.device).contiguous()
    lengths = [torch.zeros(1, dtype=torch.long, device=ctx.device) for _ in range(ctx.world)]
    dist.all_gather(lengths, torch.tensor([len(local)], device=ctx.device))
    longest = max(int(n) for n in lengths)
    padded = torch.zeros((longest, *local.shape[1:]), dtype=local.dtype, device=ctx.device)
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(ctx.world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:int(n)] for p, n in zip(parts, lengths, strict=True)]).cpu()


def first_error(ctx: Context, error: Exception | None) -> None:
    """Raise, on every rank, an error of a check every rank made: one rank refusing alone would
    leave the others waiting at their next collective. A rank raises its own error; a rank
    without one raises the first rank's, in words (UserError)."""
    if ctx.distributed:
        said = gather(ctx, None if error is None else str(error))
        if error is None and any(said):
            rank, words = next((r, w) for r, w in enumerate(said) if w)
            raise UserError(f"rank {rank}: {words}")
    if error is not None:
        raise error

