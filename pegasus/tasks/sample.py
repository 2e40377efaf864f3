"""Writing a sampling job's images: one grid (small images enlarged so they can be seen), a folder
of PNGs that a stopped job continues (run/folder.py), or an .npz of uint8 pixels for FID tools
(images.save_npz)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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


def write_folder(job, folder: SampleFolder, seed: int, progress: Progress | None = None) -> Written:
    """Images 0 .. num - 1 of `seed` in `folder`, continuing from the first image missing there
    when the folder holds this very job's earlier images (and refusing any other job's)."""
    start = folder.begin(SampleSet.of(job, seed=seed),
                         source=f"{job.run.source} (step {job.run.step})")
    if start >= job.num:
        return Written(folder.path, start, 0, job.plan.evaluations)
    if progress is not None:
        progress(start, job.num)
    report = (lambda done: progress(done, job.num)) if progress is not None else None
    folder.write(job.batches(seed, start=start), start, report)
    return Written(folder.path, start, job.num - start, job.plan.evaluations)


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
