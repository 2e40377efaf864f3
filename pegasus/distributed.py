"""Data-parallel training under torchrun (torch.distributed, DDP): gloo on CPU, nccl on GPU.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK; without them everything here is a no-op and
training runs as one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pegasus.devices import resolve_device


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
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device, owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and dist.is_initialized():
        # All ranks leave together: a rank that tears gloo down while rank 0 is still writing
        # the last checkpoint can abort in gloo's background thread.
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
