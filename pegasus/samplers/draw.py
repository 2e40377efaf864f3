"""Drawing images by a plan: batches of chains, each image from its own seeded stream, so that
image i is the same whatever the number of images drawn with it and however they are batched
(a stopped job continues from its first missing image)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from pegasus.noise.streams import ImageStreams
from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, Capture, ScoreFn


def equal_batches(num: int, batch_size: int) -> tuple[int, int]:
    """(batches, images per batch): `num` images in the fewest batches of at most `batch_size`,
    all of one size, which wastes fewer than `batches` images of padding."""
    batches = -(-num // batch_size)
    return batches, -(-num // batches)


def draw_batches(score_fn: ScoreFn, plan: SamplerPlan, *, num: int, shape: tuple[int, ...],
                 seed: int, device: torch.device | str = "cpu", batch_size: int | None = None,
                 start: int = 0, centre: float | torch.Tensor = 0.5,
                 callback: Callback | None = None,
                 capture: Capture | None = None) -> Iterator[torch.Tensor]:
    """Images `start` .. `num` - 1 of `seed` in [0, 1], shaped `shape` each, yielded batch by
    batch so that tens of thousands of images (for FID) never sit in memory at once. Every
    batch has one size (the last one padded with the images after `num`, from their own
    streams, dropped): one shape for the whole job, so a compiled network compiles once and a
    CUDA graph is captured once. `batch_size` None draws them all at once. `centre` is where a
    plan that starts at the noisiest level is centred (SamplerPlan.start_point); `capture`
    reaches a sampler that captures its own step (fastpath/graphs.py)."""
    for first, size in blocks(start, num, batch_size):
        out = draw_block(score_fn, plan, first=first, size=size, shape=shape, seed=seed,
                         device=device, centre=centre, callback=callback, capture=capture)
        yield out[: num - first]


def blocks(start: int, stop: int, batch_size: int | None) -> list[tuple[int, int]]:
    """The batches (first image, size) that draw images `start` .. `stop` - 1: equal ones, the
    last reaching past `stop` by its padding. Ranks that share a job out draw these very
    blocks, so that each image comes from the same float operations as in one process."""
    if stop <= start:
        return []
    batches, size = equal_batches(stop - start, batch_size or stop - start)
    return [(first, size) for first in range(start, start + batches * size, size)]


def draw_block(score_fn: ScoreFn, plan: SamplerPlan, *, first: int, size: int,
               shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
               centre: float | torch.Tensor = 0.5, callback: Callback | None = None,
               capture: Capture | None = None) -> torch.Tensor:
    """Images `first` .. `first` + `size` - 1 of `seed`, as one batch, in [0, 1]."""
    device = torch.device(device)
    streams = ImageStreams(seed, first, size, device)
    x = plan.start_point(*streams.starting_draws(shape), centre)
    return plan.run(score_fn, x, noise_sampler=streams.noise_sampler(shape), callback=callback,
                    capture=capture).clamp_(0, 1)


def draw(score_fn: ScoreFn, plan: SamplerPlan, **kwargs) -> torch.Tensor:
    """All the batches of `draw_batches` as one tensor (N, C, H, W)."""
    return torch.cat(list(draw_batches(score_fn, plan, **kwargs)))
