"""A sampling job: one plan drawn from a trained run, owning what the drawing needs: the batch
size (all images at once on a CPU, as many as fit on a GPU), the fast path chosen for the whole
job's evaluations, the network under it (made once per fast path and run, so a compiled network
serves every chain of the process), the CUDA graphs its chains replay, and the per-image seeded
streams (samplers/draw.py). `pegasus sample`, `eval`, `blend` and `inpaint` all run one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from pegasus import fastpath
from pegasus.errors import FieldError
from pegasus.samplers.draw import blocks, draw_block, equal_batches
from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, Capture, ScoreFn

# The most images one job draws: 200 times the 50,000 an FID measurement takes.
MAX_IMAGES = 10_000_000


def fitting_batch(run, num: int, batch_size: int | None, field: str = "batch_size") -> int:
    """The images per batch: `batch_size` if given and it fits the device's free memory (else
    one line naming the largest that fits), or as many as fit, at most `num`. A GPU is measured
    on the eager model (measuring a compiled score would compile it for the probe's batch as
    well); a CPU is estimated from the network's shapes (fastpath/memory.py)."""
    device = run.device
    if device.type == "cuda":
        fits = fastpath.sampling_batch_size(run.model, run.image_shape, device)
        most = max(1, int(fits / 0.8 * 0.95))  # measured at 80% of the free memory
    else:
        fits = most = fastpath.estimated_batch(run.model, run.image_shape, device, training=False)
        if fits is None:  # a network the estimate cannot run: all at once, as asked
            return batch_size or num
    if batch_size is None:
        return max(1, min(num, fits))
    if batch_size > max(most, 1):
        where = "GPU" if device.type == "cuda" else "machine"
        raise FieldError(field, f"{batch_size:,} images at once do not fit in this {where}'s free "
                                f"memory; the most that fit are about {max(most, 1):,}")
    return batch_size


@dataclass
class SamplingJob:
    run: object  # the TrainedRun (trained.py) it draws from
    plan: SamplerPlan
    num: int
    batch_size: int
    path: fastpath.FastPath
    score: ScoreFn  # the network under `path`

    @classmethod
    def make(cls, run, plan: SamplerPlan, *, num: int, batch_size: int | None = None,
             compile_: str = "auto", amp: str = "auto", chains: int = 1) -> SamplingJob:
        """The job of `num` images of `run` by `plan`; `chains` times its evaluations run in
        this process (what the fast path's "auto" rule weighs)."""
        fastpath.check_switches(compile=compile_, amp=amp)
        if not 1 <= num <= MAX_IMAGES:
            raise FieldError("num", f"must be between 1 and {MAX_IMAGES:,} images, got {num:,}")
        if batch_size is not None and batch_size < 1:
            raise FieldError("batch_size", f"must be at least 1, got {batch_size}")
        batch_size = fitting_batch(run, num, batch_size)
        device = run.device
        evaluations = plan.evaluations * equal_batches(num, batch_size)[0] * chains
        folder = run.run_dir
        path = fastpath.for_sampling(run.model, device, run.config, evaluations=evaluations,
                                     batch=batch_size, compile_=compile_, amp=amp,
                                     record=folder.probes if folder else None, notify=run.notify)
        if path not in run.scores:
            run.scores[path] = fastpath.sampling_score(
                run.model, device, path, run.config, notify=run.notify,
                cache=folder.compile_cache if folder else None)
        return cls(run, plan, num, batch_size, path, run.scores[path])

    @property
    def evaluations(self) -> int:
        """Network evaluations of the whole job, one per chain step of each batch (what a
        progress bar over the job counts)."""
        return self.plan.evaluations * equal_batches(self.num, self.batch_size)[0]

    def graphs(self, score_fn: ScoreFn | None = None) -> tuple[ScoreFn, Capture | None]:
        """The score function (`score_fn`, by default the job's network) and the capture its
        chains run with: CUDA graphs on a GPU (fastpath/graphs.py), nothing elsewhere."""
        return fastpath.chain_graphs(self.plan, score_fn or self.score, self.run.device)

    def batches(self, seed: int, *, start: int = 0, stop: int | None = None,
                callback: Callback | None = None) -> Iterator[torch.Tensor]:
        """Images `start` .. `stop` - 1 (default num - 1) of `seed`, batch by batch (bounded
        memory); image i is the same whatever num, start and the batch size."""
        stop = self.num if stop is None else stop
        for _, images in self.draw_blocks(seed, self.blocks(start, stop), callback, stop=stop):
            yield images

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The batches (first image, size) of this job's batch size that draw start .. stop - 1."""
        return blocks(start, stop, self.batch_size)

    def draw_blocks(self, seed: int, todo: list[tuple[int, int]],
                    callback: Callback | None = None, *,
                    stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first image, images) of each block in turn, its padding past `stop` (default num)
        dropped, by one set of chain graphs."""
        stop = self.num if stop is None else stop
        score, capture = self.graphs()
        for first, size in todo:
            images = draw_block(score, self.plan, first=first, size=size,
                                shape=self.run.image_shape, seed=seed, device=self.run.device,
                                centre=self.run.centre, callback=callback, capture=capture)
            yield first, images[: stop - first]

    def images(self, seed: int, callback: Callback | None = None) -> torch.Tensor:
        """All `num` images of `seed`, (num, C, H, W) in [0, 1]."""
        return torch.cat(list(self.batches(seed, callback=callback)))
