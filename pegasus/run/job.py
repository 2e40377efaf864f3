"""A sampling job: the one way pegasus draws images. A job is one plan drawn from a trained run
(trained.py) and owns what the drawing needs: the batch size (all images at once on a CPU, as
many as fit on a GPU), the fast path chosen for the whole job's evaluations, the network under
it (made once per fast path and run, so a compiled network serves every chain of the process),
the CUDA graphs its chains replay, and the per-image seeded streams. Its `images`,
`write_grid`, `write_folder` and `write_npz` are what `pegasus sample`, `eval`, `blend`,
`inpaint`, the Python API (`Model.job`) and training's sample grids call.

Image i comes from its own seeded stream (noise/streams.py), so it is the same whatever the
number of images drawn with it and however they are batched: a stopped folder continues from
its first missing image (folder.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus import distributed, fastpath
from pegasus.config import MAX_GRID
from pegasus.errors import FieldError, UserError
from pegasus.images import check_npz, image_format, save_grid, save_npz
from pegasus.noise.streams import ImageStreams
from pegasus.run.folder import SampleFolder, SampleSet
from pegasus.run.trained import TrainedRun
from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, Capture, ScoreFn

# The most images one job draws: 200 times the 50,000 an FID measurement takes.
MAX_IMAGES = 10_000_000

Progress = Callable[[int, int], None]  # (images written so far, images in all)


@dataclass
class Written:
    path: Path
    first: int  # the first image index this call wrote (a continued folder starts later)
    count: int  # images this call wrote
    evaluations: int  # network evaluations per image


def equal_batches(num: int, batch_size: int) -> tuple[int, int]:
    """(batches, images per batch): `num` images in the fewest batches of at most `batch_size`,
    all of one size, which wastes fewer than `batches` images of padding. One shape for the
    whole job: a compiled network compiles once and a CUDA graph is captured once."""
    batches = -(-num // batch_size)
    return batches, -(-num // batches)


def blocks(start: int, stop: int, batch_size: int | None) -> list[tuple[int, int]]:
    """The batches (first image, size) that draw images `start` .. `stop` - 1: equal ones, the
    last reaching past `stop` by its padding (images from their own streams, dropped). Ranks
    that share a job out draw these very blocks, so that each image comes from the same float
    operations as in one process."""
    if stop <= start:
        return []
    batches, size = equal_batches(stop - start, batch_size or stop - start)
    return [(first, size) for first in range(start, start + batches * size, size)]


def draw_block(score_fn: ScoreFn, plan: SamplerPlan, *, first: int, size: int,
               shape: tuple[int, ...], seed: int, device: torch.device | str = "cpu",
               centre: float | torch.Tensor = 0.5, callback: Callback | None = None,
               capture: Capture | None = None) -> torch.Tensor:
    """Images `first` .. `first` + `size` - 1 of `seed`, as one batch, in [0, 1]: each chain
    started and run by `plan` from its image's own stream. `centre` is where a plan that starts
    at the noisiest level is centred (SamplerPlan.start_point); `capture` reaches a sampler
    that captures its own step (fastpath/graphs.py)."""
    device = torch.device(device)
    streams = ImageStreams(seed, first, size, device)
    x = plan.start_point(*streams.starting_draws(shape), centre)
    return plan.run(score_fn, x, noise_sampler=streams.noise_sampler(shape), callback=callback,
                    capture=capture).clamp_(0, 1)


def fitting_batch(trained: TrainedRun, num: int, batch_size: int | None,
                  field: str = "batch_size") -> int:
    """The images per batch: `batch_size` if given and it fits the device's free memory (else
    one line naming the largest that fits), or as many as fit, at most `num`. A GPU is measured
    on the eager model (measuring a compiled score would compile it for the probe's batch as
    well); a CPU is estimated from the network's shapes (fastpath/memory.py)."""
    device = trained.device
    if device.type == "cuda":
        fits = fastpath.sampling_batch_size(trained.model, trained.image_shape, device)
        most = max(1, int(fits / 0.8 * 0.95))  # measured at 80% of the free memory
    else:
        fits = most = fastpath.estimated_batch(trained.model, trained.image_shape, device,
                                               training=False)
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
    trained: TrainedRun
    plan: SamplerPlan
    num: int
    batch_size: int
    path: fastpath.FastPath
    score: ScoreFn  # the network under `path`
    execution: fastpath.Execution = fastpath.Execution()  # its progress bar, among others

    @classmethod
    def make(cls, trained: TrainedRun, plan: SamplerPlan, *, num: int,
             batch_size: int | None = None, execution: fastpath.Execution = fastpath.Execution(),
             chains: int = 1) -> SamplingJob:
        """The job of `num` images of `trained` by `plan` (made through the run's one door,
        TrainedRun.plan), its network on the fast path `execution` asks for the work: `chains`
        times its evaluations run in this process (what the fast path's "auto" rule weighs)."""
        if not 1 <= num <= MAX_IMAGES:
            raise FieldError("num", f"must be between 1 and {MAX_IMAGES:,} images, got {num:,}")
        if batch_size is not None and batch_size < 1:
            raise FieldError("batch_size", f"must be at least 1, got {batch_size}")
        batch_size = fitting_batch(trained, num, batch_size)
        device, folder = trained.device, trained.run_dir
        evaluations = plan.evaluations * equal_batches(num, batch_size)[0] * chains
        path = fastpath.for_sampling(trained.model, device, trained.config,
                                     evaluations=evaluations, batch=batch_size,
                                     execution=execution,
                                     record=folder.probes if folder else None,
                                     notify=trained.notify)
        if path not in trained.scores:
            trained.scores[path] = fastpath.sampling_score(
                trained.model, device, path, trained.config, notify=trained.notify)
        return cls(trained, plan, num, batch_size, path, trained.scores[path], execution)

    @property
    def evaluations(self) -> int:
        """Network evaluations of the whole job, one per chain step of each batch (what a
        progress bar over the job counts)."""
        return self.plan.evaluations * equal_batches(self.num, self.batch_size)[0]

    def graphs(self, score_fn: ScoreFn | None = None) -> tuple[ScoreFn, Capture | None]:
        """The score function (`score_fn`, by default the job's network) and the capture its
        chains run with: CUDA graphs on a GPU (fastpath/graphs.py), nothing elsewhere."""
        return fastpath.chain_graphs(self.plan, score_fn or self.score, self.trained.device)

    def blocks(self, start: int, stop: int) -> list[tuple[int, int]]:
        """The batches (first image, size) of this job's batch size that draw start .. stop - 1."""
        return blocks(start, stop, self.batch_size)

    def draw_blocks(self, seed: int, todo: list[tuple[int, int]],
                    callback: Callback | None = None, *,
                    stop: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first image, images) of each block in turn, its padding past `stop` (default num)
        dropped, by one set of chain graphs: batch by batch, so tens of thousands of images
        (for FID) never sit in memory at once."""
        stop = self.num if stop is None else stop
        score, capture = self.graphs()
        trained = self.trained
        for first, size in todo:
            images = draw_block(score, self.plan, first=first, size=size,
                                shape=trained.image_shape, seed=seed, device=trained.device,
                                centre=trained.centre, callback=callback, capture=capture)
            yield first, images[: stop - first]

    def batches(self, seed: int, callback: Callback | None = None) -> Iterator[torch.Tensor]:
        """All `num` images of `seed`, batch by batch (bounded memory)."""
        for _, images in self.draw_blocks(seed, self.blocks(0, self.num), callback):
            yield images

    def images(self, seed: int, callback: Callback | None = None) -> torch.Tensor:
        """All `num` images of `seed`, (num, C, H, W) in [0, 1]."""
        # The blocks drawn here rather than through draw_blocks' generator: the few frames
        # from a verb to its sampler are what a reader steps through (tests/test_layout.py).
        score, capture = self.graphs()
        trained, drawn = self.trained, []
        for first, size in self.blocks(0, self.num):
            drawn.append(draw_block(score, self.plan, first=first, size=size,
                                    shape=trained.image_shape, seed=seed, device=trained.device,
                                    centre=trained.centre, callback=callback,
                                    capture=capture)[: self.num - first])
        return torch.cat(drawn)

    def write_grid(self, out: str | Path, seed: int) -> Written:
        """All `num` images of `seed` as one grid picture (.png, .jpg or .webp), each enlarged
        by nearest neighbour to at least 64 px so that a 16 px sprite can be seen; the job's
        progress bar counts the evaluations."""
        out = Path(out)
        image_format(out)
        if self.num > MAX_GRID:
            raise FieldError("num", f"{self.num:,} images are too many for one picture (at most "
                                    f"{MAX_GRID:,}); write them to a folder or an .npz instead")
        callback = self.execution.bar(f"sample ({self.plan.name})", self.evaluations)
        save_grid(self.images(seed, callback=callback), out, upscale=True)
        return Written(out, 0, self.num, self.plan.evaluations)

    def write_npz(self, out: str | Path, seed: int, progress: Progress | None = None) -> Written:
        """All `num` images of `seed` as one uint8 array (N, H, W, C) in an .npz file, streamed,
        for FID tools."""
        out = Path(out)
        check_npz(out)
        report = (lambda done: progress(done, self.num)) if progress is not None else None
        if progress is not None:
            progress(0, self.num)
        save_npz(self.batches(seed), out, self.num, report)
        return Written(out, 0, self.num, self.plan.evaluations)

    def write_folder(self, folder: str | Path, seed: int, progress: Progress | None = None,
                     ctx: distributed.Context | None = None) -> Written:
        """Images 0 .. num - 1 of `seed` as <folder>/NNNNNN.png, drawing those missing there when
        the folder holds this very job's earlier images (and refusing any other job's). Under
        torchrun (`ctx` of several ranks, distributed.group) rank 0 writes the manifest, every
        rank draws its share of the missing images' batches, no two the same file, and rank 0's
        `progress` counts every rank's images (the files in the folder)."""
        folder = SampleFolder(Path(folder))
        ctx = ctx or distributed.alone(self.trained.device)
        wanted = SampleSet.of(self, seed=seed)
        with contextlib.ExitStack() as held:
            error = None
            if ctx.main:  # rank 0 alone: another rank could see its half-written manifest
                try:
                    held.enter_context(folder.lock())  # one job draws into a folder at a time
                    folder.begin(wanted, self.trained.source, self.trained.step)
                except UserError as e:
                    error = e
            distributed.first_error(ctx, error)
            return self._fill(folder, wanted, seed, progress, ctx)

    def _fill(self, folder: SampleFolder, wanted: SampleSet, seed: int,
              progress: Progress | None, ctx: distributed.Context) -> Written:
        """write_folder's drawing, once rank 0 has begun the folder."""
        # Rank 0 lists what is missing before anyone draws, and every rank takes its list: a
        # rank listing the folder itself could see rank 0's first new files and share out other
        # blocks.
        said = distributed.gather(ctx, (wanted, folder.missing(self.num) if ctx.main else None))
        differing = [s for s, _ in said if s != wanted]
        if differing:  # every rank sees the same sets, so every rank refuses
            raise UserError("the ranks would draw different images ("
                            + "; ".join(wanted.differences(differing[0]))
                            + "); give every rank the same kind of device and --amp")
        missing = said[0][1]
        # The blocks of one uninterrupted job that hold a missing image, each drawn whole: every
        # image comes from the same batch, so the same float operations, as in that job (a
        # continued folder equals it bit for bit on CPU). The images of a block that are there
        # already are kept (folder.write).
        todo = [(first, size) for first, size in self.blocks(0, self.num)
                if any(a < first + size and first < b for a, b in missing)]
        start, stop = distributed.share(ctx, len(todo))
        with _Counter(folder, self.num, progress if ctx.main else None,
                      ctx.distributed) as counter:
            folder.write(self.draw_blocks(seed, todo[start:stop]), counter.written)
            distributed.barrier(ctx)
        return Written(folder.path, missing[0][0] if missing else self.num,
                       sum(b - a for a, b in missing), self.plan.evaluations)


class _Counter:
    """Reports the images the folder holds to `progress`: after each batch in one process, or
    from a thread every half second on rank 0 of several (it cannot hear the other ranks'
    batches, only see their files)."""

    def __init__(self, folder: SampleFolder, num: int, progress: Progress | None,
                 threaded: bool) -> None:
        self.folder, self.num, self.progress, self.threaded = folder, num, progress, threaded
        self.done = threading.Event()

    def written(self, _count: int) -> None:
        if not self.threaded:
            self.report()

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.folder.present(self.num), self.num)

    def _poll(self) -> None:
        while not self.done.wait(0.5):
            self.report()

    def __enter__(self) -> _Counter:
        self.report()
        if self.progress is not None and self.threaded:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        if self.progress is not None and self.threaded:
            self.thread.join()
        if exc[0] is None:
            self.report()
