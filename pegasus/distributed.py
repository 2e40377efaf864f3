"""Several processes under torchrun (torch.distributed): gloo on CPU, nccl on GPU. Training
runs data-parallel (DDP); sampling, evaluation and the classifiers share their images out by
rank (docs/distributed.md).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them everything here is a no-op and the
work runs as one process.

Ranks that were started differently would train or draw different things and then wait forever
at mismatched collectives, so a group's ranks first agree on the resolved request (`agree`).
Every collective carries a timeout (PEGASUS_COLLECTIVE_TIMEOUT seconds, torch's default of 30
minutes otherwise); a collective that times out, or whose peer is gone, ends the rank with one
line instead of gloo's or NCCL's traceback.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pegasus.devices import resolve_device
from pegasus.errors import UserError, first_line

TIMEOUT_VARIABLE = "PEGASUS_COLLECTIVE_TIMEOUT"


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


def collective_timeout() -> datetime.timedelta:
    """How long a collective waits for the other ranks: PEGASUS_COLLECTIVE_TIMEOUT seconds."""
    raw = os.environ.get(TIMEOUT_VARIABLE, "1800")
    try:
        seconds = float(raw)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e7:
        raise UserError(f"{TIMEOUT_VARIABLE} must be a number of seconds above 0, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


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
                                    store=dist.PrefixStore(f"attempt-{attempt}", store),
                                    timeout=collective_timeout())
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
def group(device_name: str, request: dict | None = None) -> Iterator[Context]:
    """The process group of a job for its whole length (one process without torchrun), its
    ranks agreed on `request` (`agree`) before any work."""
    ctx = setup(device_name)
    try:
        agree(ctx, request or {})
        yield ctx
    except BaseException as e:
        teardown(ctx, failed=True)
        if ctx.distributed and _broken(e):
            raise UserError(f"rank {ctx.rank}: {_broke_off(e)}") from None
        raise
    teardown(ctx)


def agree(ctx: Context, request: dict) -> None:
    """Refuse, on every rank and before any work, ranks started with different requests (the
    resolved config, the sampling options, the folders): rank 0's is compared with each
    other's, and the first difference is named (a nested dict's fields by dotted names, as a
    config's: train.iters)."""
    if not ctx.distributed:
        return
    mine = dict(_flat(request))
    said = gather(ctx, mine)
    for rank, theirs in enumerate(said[1:], start=1):
        for name in sorted(said[0].keys() | theirs.keys()):
            a, b = said[0].get(name, "nothing"), theirs.get(name, "nothing")
            if a != b:
                raise UserError(f"the ranks were started differently: {name} is {a} on rank 0 "
                                f"but {b} on rank {rank}; start every rank with the same "
                                f"command", shared=True)


def _flat(request: dict, prefix: str = "") -> Iterator[tuple[str, str]]:
    for name, value in request.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", repr(value)


def _broken(error: BaseException) -> bool:
    """Whether `error` is the group's (a peer gone, a collective past its timeout)."""
    return isinstance(error, dist.DistError) or (
        type(error) is RuntimeError and re.search(r"gloo|nccl|NCCL|Connection", str(error)))


def _broke_off(error: BaseException) -> str:
    words = re.sub(r"^\[[^\]]*\]\s*", "", first_line(error)).split(". ")[0].rstrip(".")
    if "Timed out" in words or "timed out" in words:
        seconds = collective_timeout().total_seconds()
        return (f"the other ranks did not answer within {seconds:g} s ({words}); one "
                f"is stuck or gone: its own line says why ({TIMEOUT_VARIABLE} sets the wait in "
                f"seconds)")
    return f"the group broke off ({words}): another rank stopped; its own line says why"


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
            raise UserError(f"rank {rank}: {words}", shared=True)
        if error is not None:
            error.shared = True  # every rank raises, and rank 0 says it
    if error is not None:
        raise error

