"""Sample quality: KID and FID between a run's samples and its training images, computed by
torchmetrics (`KernelInceptionDistance`, `FrechetInceptionDistance`).

Two feature extractors (features.py): the run's judge, or Inception. Every result carries the
name of its features, and is printed with it. Beside KID and FID, every evaluation says whether
the samples copy training images, and gives precision and recall (novelty.py).

KID is unbiased at any sample size and torchmetrics reports it with the standard deviation over
random subsets (here of half the samples, a conservative standard error), which is what "within
noise" is measured against; FID is biased at small sample sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.config import Config
from pegasus.data import load_images
from pegasus.errors import FieldError, UserError
from pegasus.run.folder import SampleFolder
from pegasus.run.layout import RunDir
from pegasus.signatures import ProgressBar
from pegasus.tasks.features import feature_extractor, metrics
from pegasus.tasks.neighbours import FirstImages, Reference, save_neighbours
from pegasus.tasks.novelty import Novelty, novelty


@dataclass
class Quality:
    features: str
    kid: float
    kid_std: float  # over random subsets of half the samples: the noise of the estimate
    fid: float
    num: int  # generated images
    real: int  # real images
    sampler: str
    evaluations: int
    novelty: Novelty | None = None

    def describe(self) -> str:
        text = (f"KID {self.kid:.4g} ± {self.kid_std:.2g}, FID {self.fid:.4g} ({self.features} "
                f"features; {self.num} samples by {self.sampler} at {self.evaluations} evaluations "
                f"against {self.real} training images)")
        return text if self.novelty is None else f"{text}\n{self.novelty.describe()}"


@torch.no_grad()
def measure(real: torch.Tensor, fake: torch.Tensor | Iterable[torch.Tensor], feature, *,
            fake_count: int | None = None, inception_weights: Path | None = None, seed: int = 0,
            batch: int = 256) -> tuple[float, float, float]:
    """(KID, its std over subsets, FID) between two image sets in [0, 1], seeded. `fake` is a
    tensor, or batches of `fake_count` images in all as they are drawn or read: only their
    features are kept, never the images."""
    return measure_with_features(real, fake, feature, fake_count=fake_count,
                                 inception_weights=inception_weights, seed=seed, batch=batch)[:3]


@torch.no_grad()
def measure_with_features(real, fake, feature, *, fake_count=None, inception_weights=None,
                          seed: int = 0, batch: int = 256):
    """`measure`'s (KID, std, FID), and the samples' features (what novelty.py compares)."""
    device = real.device
    fake_count = len(fake) if isinstance(fake, torch.Tensor) else fake_count
    # Subsets of half the smaller set: their spread is a (conservative) standard error of the
    # KID of the whole set; subsets as large as the set would all be the set itself.
    subset = max(2, min(1000, len(real) // 2, fake_count // 2))
    kid, fid = metrics(feature, inception_weights, subset, device)
    fakes = fake.split(batch) if isinstance(fake, torch.Tensor) else fake
    for images, is_real in ((real.split(batch), True), (fakes, False)):
        for chunk in images:
            kid.update(chunk.to(device), real=is_real)
            fid.update(chunk.to(device), real=is_real)
    torch.manual_seed(seed)  # KID's random subsets
    kid_mean, kid_std = kid.compute()
    return float(kid_mean), float(kid_std), float(fid.compute()), torch.cat(kid.fake_features).cpu()


def real_images(config: Config, device: torch.device, max_real: int, seed: int) -> torch.Tensor:
    """Up to `max_real` of the run's training images in [0, 1], a seeded random pick."""
    data = load_images(config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:max_real]
    return data[pick].to(device).float() / 255


def evaluate_run(run, *, sampler: str = "als", steps: int | None = None, num: int = 1000,
                 seed: int = 0, features: str = "judge", inception_weights: Path | None = None,
                 max_real: int = 5000, batch_size: int | None = None, compile_: str = "auto",
                 amp: str = "auto", progress: ProgressBar | None = None,
                 neighbours: Path | None = None, neighbours_of: int = 8) -> Quality:
    """`num` samples of a TrainedRun by `sampler` (its network on the fast path that `compile_`
    and `amp` choose), scored batch by batch as they are drawn against up to `max_real` training
    images, and checked for copies of the training images (novelty.py; with `neighbours`, a
    picture of the first `neighbours_of` samples beside their nearest training images). The
    features are loaded before any sampling."""
    if num < 2:
        raise FieldError("num", f"must be at least 2 for KID and FID, got {num}")
    plan = run.plan(sampler, steps)
    folder = run.run_dir.path if run.run_dir is not None else None
    feature = feature_extractor(features, folder, run.device, inception_weights)
    job = run.job(plan, num=num, batch_size=batch_size, compile_=compile_, amp=amp)
    real = real_images(run.config, run.device, max_real, seed)
    callback = progress(f"sample ({sampler})", job.evaluations) if progress else None
    first = FirstImages(neighbours_of)
    kid, kid_std, fid, fake = measure_with_features(
        real, first.keep(job.batches(seed, callback=callback)), feature, fake_count=num,
        inception_weights=inception_weights, seed=seed)
    found = _novelty(run.config, run.device, (feature, features, inception_weights), seed, fake,
                     first, neighbours)
    return Quality(features, kid, kid_std, fid, num, len(real), plan.name, plan.evaluations, found)


def evaluate_folder(run_dir: Path, samples: SampleFolder, *, device: torch.device,
                    num: int | None = None, seed: int = 0, features: str = "judge",
                    inception_weights: Path | None = None, max_real: int = 5000,
                    progress: Callable[[int, int], None] | None = None,
                    neighbours: Path | None = None, neighbours_of: int = 8) -> Quality:
    """The first `num` images (None: all) of a folder of samples (run/folder.py), drawn by
    however many jobs, scored against up to `max_real` training images of the run in
    `run_dir`; `progress` hears the count of images scored and of those to score."""
    drawn = samples.recorded()
    config = RunDir(run_dir).read_config()
    if drawn.res != config.data.res:
        raise UserError(f"{samples.path} holds {drawn.res} px samples, but run {run_dir} trains "
                        f"at {config.data.res} px; score them against the run they came from")
    held = samples.count()
    if num is None and held < 2:
        raise UserError(f"{samples.path} holds {held} image{'s' * (held != 1)} from 0 on; KID and "
                        f"FID need at least 2: draw more with pegasus sample --folder")
    num = held if num is None else num
    if num < 2 or num > held:
        raise FieldError("num", f"must be between 2 and the {held} images {samples.path} holds, "
                                f"got {num}")
    feature = feature_extractor(features, run_dir, device, inception_weights)
    real = real_images(config, device, max_real, seed)
    read = samples.read(num, progress=(lambda done: progress(done, num)) if progress else None)
    first = FirstImages(neighbours_of)
    kid, kid_std, fid, fake = measure_with_features(real, first.keep(read), feature,
                                                    fake_count=num,
                                                    inception_weights=inception_weights, seed=seed)
    found = _novelty(config, device, (feature, features, inception_weights), seed, fake, first,
                     neighbours)
    return Quality(features, kid, kid_std, fid, num, len(real), drawn.sampler, drawn.evaluations,
                   found)


def _novelty(config: Config, device: torch.device, extractor, seed: int, fake: torch.Tensor,
             first: FirstImages, neighbours: Path | None) -> Novelty:
    """The samples' novelty figures against the run's training and held-out images, and the
    neighbours picture when one is asked for."""
    feature, features, inception_weights = extractor
    reference = Reference.of(config, device, feature, features, inception_weights, seed)
    found = novelty(fake, reference.features, reference.held, features=features, seed=seed)
    if neighbours is not None:
        save_neighbours(first.images, fake[:len(first.images)], reference, neighbours)
    return found
