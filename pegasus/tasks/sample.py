"""Writing a sampling job's images: one grid (small images enlarged so they can be seen), a folder
of PNGs that a stopped job continues (run/folder.py), or an .npz of uint8 pixels for FID tools
(images.save_npz)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pegasus import distributed
from pegasus.errors import UserError
from pegasus.images import save_grid, save_npz
from pegasus.run.folder import SampleFolder, SampleSet
from pegasus.signatures import ProgressBar

Progress = Callable[[int, int], None]  # (images written so far, images in all)


@dataclass
class Written:
    path: Path
    first: int  # the first image index this call wrote (a continued folder starts later)
    count: int  # images this call wrote
    evaluations: int  # network evaluations per image


def write_folder(job, folder: SampleFolder, seed: int, progress: Progress | None = None,
                 ctx: distributed.Context | None = None) -> Written:
    """Images 0 .. num - 1 of `seed` in `folder`, drawing those missing there when the folder
    holds this very job's earlier images (and refusing any other job's). Under torchrun (`ctx`
    of several ranks) rank 0 writes the manifest, every rank draws its share of the missing
    images' batches, no two the same file, and rank 0's `progress` counts every rank's images
    (the files in the folder)."""
    ctx = ctx or distributed.alone(job.run.device)
    wanted = SampleSet.of(job, seed=seed)
    error = None
    if ctx.main:
        try:
            folder.begin(wanted, source=f"{job.run.source} (step {job.run.step})")
        except UserError as e:
            error = e
    distributed.first_error(ctx, error)
    # Rank 0 lists what is missing before anyone draws, and every rank takes its list: a rank
    # listing the folder itself could see rank 0's first new files and share out other blocks.
    said = distributed.gather(ctx, (wanted, folder.missing(job.num) if ctx.main else None))
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
    todo = [(first, size) for first, size in job.blocks(0, job.num)
            if any(a < first + size and first < b for a, b in missing)]
    start, stop = distributed.share(ctx, len(todo))
    count = sum(b - a for a, b in missing)
    mine = todo[start:stop]
    with _Counter(folder, job.num, progress if ctx.main else None, ctx.distributed) as counter:
        folder.write(job.draw_blocks(seed, mine), counter.written)
        distributed.barrier(ctx)
    return Written(folder.path, missing[0][0] if missing else job.num, count,
                   job.plan.evaluations)


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


def write_npz(job, out: Path, seed: int, progress: Progress | None = None) -> Written:
    """All `num` images of `seed` as one uint8 array (N, H, W, C) in an .npz file, streamed."""
    report = (lambda done: progress(done, job.num)) if progress is not None else None
    if progress is not None:
        progress(0, job.num)
    save_npz(job.batches(seed), out, job.num, report)
    return Written(Path(out), 0, job.num, job.plan.evaluations)


def write_grid(job, out: Path, seed: int, progress: ProgressBar | None = None) -> Written:
    """All `num` images of `seed` as one grid picture, each enlarged by nearest neighbour to at
    least 64 px so that a 16 px sprite can be seen."""
    callback = progress(f"sample ({job.plan.name})", job.evaluations) if progress else None
    save_grid(job.images(seed, callback=callback), out, upscale=True)
    return Written(Path(out), 0, job.num, job.plan.evaluations)
