"""Drawing images: `sample_images` runs any sampler (pegasus.samplers) over a run's schedule in
batches, each image from its own seeded noise stream, and `fill_gpu_batch_size` sizes batches
to fill a GPU."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from pegasus.fastpath.graphs import chain_graphs
from pegasus.noise.schedule import Schedule
from pegasus.noise.streams import ImageStreams
from pegasus.samplers.plan import SamplerPlan, plan_sampler
from pegasus.signatures import Callback, ScoreFn


def sample_batches(
    score_fn: ScoreFn,
    schedule: Schedule,
    *,
    num: int,
    res: int,
    seed: int,
    device: torch.device | str = "cpu",
    channels: int = 3,
    callback: Callback | None = None,
    batch_size: int | None = None,
    plan: SamplerPlan | None = None,
    start: int = 0,
    centre: float | torch.Tensor = 0.5,
) -> Iterator[torch.Tensor]:
    """Samples `start` .. `num` - 1 in [0, 1] by `plan` (default: annealed Langevin on the
    run's schedule), yielded batch by batch, so that tens of thousands of images (for FID) never
    sit in memory at once. Image i comes from its own seeded stream (`ImageStreams`), so it is
    the same whatever `num`, `start` and `batch_size` (a stopped job continues from `start`).
    `centre` is where samplers that start at the noisiest level are centred (the data's mean,
    broadcastable to one image: SamplerPlan.start_point).
    `batch_size` None means `default_batch_size` measured on `score_fn` (when `score_fn` is
    compiled, pass the eager model's instead, as TrainedRun does: measuring would compile it for
    the probe's batch too). On a GPU every chain replays a CUDA graph (samplers/graphs.py)."""
    device = torch.device(device)
    plan = plan or plan_sampler("als", schedule)
    shape = (channels, res, res)
    if num <= start:
        return
    if batch_size is None:
        batch_size = default_batch_size(score_fn, num - start, shape, device)
    batches, size = equal_batches(num - start, batch_size)
    # On a GPU, annealed Langevin replays its step, the other samplers the network (one graph
    # for the whole job: every batch has one shape).
    score_fn, capture = chain_graphs(plan, score_fn, device)
    for first in range(start, start + batches * size, size):
        # Every batch has `size` images, the last one padded with the images after `num` (their
        # own streams, dropped): one shape for the whole job, so a compiled network compiles once.
        streams = ImageStreams(seed, first, size, device)
        # The starting point is drawn first from each image's stream, then the sampler's noise.
        x = plan.start_point(streams.prior(shape), streams.normal(shape), centre)
        out = plan.run(score_fn, x, noise_sampler=streams.noise_sampler(shape),
                       callback=callback, capture=capture).clamp_(0, 1)
        yield out[: num - first]


def equal_batches(num: int, batch_size: int) -> tuple[int, int]:
    """(batches, images per batch): `num` images in the fewest batches of at most `batch_size`,
    all of one size, which wastes fewer than `batches` images of padding."""
    batches = -(-num // batch_size)
    return batches, -(-num // batches)


def sample_images(score_fn: ScoreFn, schedule: Schedule, **kwargs) -> torch.Tensor:
    """All the batches of `sample_batches` as one tensor (N, C, H, W)."""
    return torch.cat(list(sample_batches(score_fn, schedule, **kwargs)))


def default_batch_size(network, num: int, shape: tuple[int, ...], device: torch.device) -> int:
    """Images per sampling batch when none is asked for: all `num` at once on CPU; on a GPU as
    many as fit, measured by evaluating `network` (`fill_gpu_batch_size`)."""
    if device.type != "cuda":
        return num
    return min(num, fill_gpu_batch_size(network, shape, device))


@torch.no_grad()
def fill_gpu_batch_size(model, shape: tuple[int, ...], device: torch.device,
                        fraction: float = 0.8, probe: int = 8) -> int:
    """The largest batch whose evaluations fit in `fraction` of the free GPU memory. The peak
    memory of an evaluation is a fixed part (weights' workspaces, cuDNN's) plus a part per image;
    two probe evaluations, of `probe` and 2 x `probe` images, measure both, so that the fixed
    part is not counted once per image. The chain's own x, noise and score tensors are added."""
    def peak(batch: int) -> int:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        model(torch.rand(batch, *shape, device=device), torch.ones(batch, device=device))
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before

    small, large = peak(probe), peak(2 * probe)
    per_image = (large - small) / probe
    if per_image <= 0:  # allocator rounding swamped the difference: the plain average, larger
        per_image = large / (2 * probe)
    fixed = max(0.0, small - probe * per_image)
    per_image += 3 * 4 * math.prod(shape)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int((fraction * free - fixed) / per_image))
