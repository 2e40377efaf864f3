"""Sample quality: KID and FID between a run's samples and its training images, computed by
torchmetrics (`KernelInceptionDistance`, `FrechetInceptionDistance`).

Two feature extractors (features.py): the run's judge, or Inception. Every result carries the
name of its features, and is printed with it. Beside KID and FID, every evaluation says whether
the samples copy training images, and gives precision and recall (novelty.py).

KID is unbiased at any sample size and torchmetrics reports it with the standard deviation over
random subsets (here of half the samples, a conservative standard error), which is what "within
noise" is measured against; FID is biased at small sample sizes.

Where the run has images it never trained on (the sprites' other seed, data.held_out), KID is
also given against them: against the training images a model that copies them scores best, so
only the held-out KID compares runs that memorise to different degrees, and on a small training
set it is the less noisy one (up to 1,000 held-out images against the few trained on).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus import distributed
from pegasus.colour import ColourStats, ColourTally, Drift
from pegasus.config import Config
from pegasus.data import load_images
from pegasus.errors import FieldError, PegasusWarning, UserError
from pegasus.fastpath import Execution
from pegasus.run.folder import SampleFolder
from pegasus.run.job import SamplingJob
from pegasus.run.layout import RunDir
from pegasus.tasks.features import (
    FEATURE_BATCH,
    Extractor,
    JudgeFeatures,
    feature_extractor,
    scores,
)
from pegasus.tasks.neighbours import FirstImages, Reference, save_neighbours
from pegasus.tasks.novelty import Novelty, novelty
from pegasus.texture import Texture, TextureTally, compare


@dataclass
class HeldKID:
    kid: float
    kid_std: float
    real: int
    rule: str  # which images they are


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
    held: HeldKID | None = None  # KID against images the run never trained on, where it has them
    step: int | None = None  # the training step of the weights that drew them, when known
    colour: Drift | None = None  # the samples' channel colours against the training images'
    recognised: float | None = None  # the share the judge recognises (judge features only)
    texture: Texture | None = None  # the samples' grain and high frequencies against the data's

    def describe(self) -> str:
        drawn = f" of step {self.step}'s weights" if self.step is not None else ""
        text = (f"KID {self.kid:.4g} ± {self.kid_std:.2g}, FID {self.fid:.4g} ({self.features} "
                f"features; {self.num} samples by {self.sampler} at {self.evaluations} evaluations"
                f"{drawn} against {self.real} training images)")
        if self.held is not None:
            text += (f"\nKID {self.held.kid:.4g} ± {self.held.kid_std:.2g} against {self.held.real} "
                     f"held-out images ({self.held.rule})")
        if self.recognised is not None:
            text += (f"\nthe judge recognises {100 * self.recognised:.1f}% of the samples (its "
                     f"top class at p >= {RECOGNISED})")
        if self.texture is not None:
            text += f"\n{self.texture.describe()}"
        if self.colour is not None:
            text += f"\n{self.colour.describe()}"
        return text if self.novelty is None else f"{text}\n{self.novelty.describe()}"


def measure(real: torch.Tensor, fake: torch.Tensor | Iterable[torch.Tensor], feature, *,
            inception_weights: Path | None = None, seed: int = 0,
            batch: int = 256) -> tuple[float, float, float]:
    """(KID, its std over subsets, FID) between two image sets in [0, 1], seeded. `fake` is a
    tensor, or batches of images as they are drawn or read: only their features are kept,
    never the images."""
    extract = Extractor(feature, inception_weights, real.device)
    fakes = [fake] if isinstance(fake, torch.Tensor) else fake
    return scores(extract.stream([real], batch), extract.stream(fakes, batch), seed=seed,
                  device=real.device)


def real_images(config: Config, device: torch.device, max_real: int, seed: int) -> torch.Tensor:
    """Up to `max_real` of the run's training images in [0, 1], a seeded random pick."""
    data = load_images(config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:max_real]
    return data[pick].to(device).float() / 255


@dataclass(frozen=True, kw_only=True)
class EvalRequest:
    """What `pegasus eval` and Model.evaluate ask for, with the defaults of both."""

    num: int = 1000  # samples drawn and scored
    seed: int = 0
    sampler: str | None = None  # None: the run's own (TrainedRun.plan)
    steps: int | None = None  # evaluation budget; None: the sampler's default
    features: str = "judge"  # judge or inception (features.py)
    inception_weights: Path | None = None  # an offline copy, with inception features
    batch_size: int | None = None  # None: as many as fit
    neighbours: Path | None = None  # a picture of the first samples beside their nearest images
    neighbours_of: int = 8
    max_real: int = 5000  # training images compared with

    def __post_init__(self) -> None:  # paths given as text (from Python) become paths
        for name in ("inception_weights", "neighbours"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))

    def validate(self) -> None:
        if self.num < 2:
            raise FieldError("num", f"must be at least 2 for KID and FID, got {self.num}")


def evaluate_run(trained, request: EvalRequest, *, execution: Execution = Execution(),
                 ctx: distributed.Context | None = None) -> Quality:
    """`request.num` samples of a TrainedRun (its network on the fast path `execution` asks
    for), scored batch by batch as they are drawn against up to `max_real` training
    images, and checked for copies of the training images (novelty.py; with `neighbours`, a
    picture of the first `neighbours_of` samples beside their nearest training images). The
    features are loaded before any sampling. Under torchrun (`ctx` of several ranks) each rank
    draws its share of the samples and extracts its share of every image set's features; the
    features gathered in one process's order, every rank scores them alike."""
    ctx = ctx or distributed.alone(trained.device)
    request.validate()
    r = request
    num, seed, features = r.num, r.seed, r.features
    inception_weights, neighbours = r.inception_weights, r.neighbours
    plan = trained.plan(r.sampler, r.steps)
    folder = trained.run_dir.path if trained.run_dir is not None else None
    feature = feature_extractor(features, folder, trained.device, inception_weights)
    job = SamplingJob.make(trained, plan, num=num, batch_size=r.batch_size, execution=execution)
    extract = Extractor(feature, inception_weights, trained.device)
    real_pixels = real_images(trained.config, trained.device, r.max_real, seed)
    real = _features(ctx, extract, real_pixels)
    # Each rank draws whole blocks of one process's job (the same batches: the same images to
    # the bit on CPU), and extracts their features block by block as one process does.
    todo = job.blocks(0, num)
    lo, hi = distributed.share(ctx, len(todo))
    mine = todo[lo:hi]
    callback = execution.bar(f"sample ({plan.name})", plan.evaluations * len(mine))
    first, tally, texture = FirstImages(r.neighbours_of), ColourTally(), TextureTally()
    drawn = _tallied((tally, texture),
                     (images for _, images in job.draw_blocks(seed, mine, callback)))
    fake = _gathered(ctx, lambda: extract.stream(first.keep(drawn)))
    kid, kid_std, fid = scores(real, fake, seed=seed, device=trained.device)
    found, held = _novelty(ctx, trained.config, extract, features, seed, fake, first, neighbours)
    # Each rank tallied its own share: the sums over every rank's are one process's (up to the
    # float64 rounding of the order they are added in).
    tally = ColourTally.merged(distributed.gather(ctx, (tally.count, tally.sum, tally.square)))
    colour = Drift(tally.stats(), ColourStats.of(real_pixels))
    return Quality(features, kid, kid_std, fid, num, len(real), plan.name, plan.evaluations, found,
                   held, trained.step, colour, recognised(feature, fake),
                   _texture(ctx, texture, real_pixels, seed))


def _texture(ctx: distributed.Context, samples: TextureTally, real_pixels: torch.Tensor,
             seed: int) -> Texture:
    """The texture figures of every rank's samples (their per-image rows gathered in rank
    order; a rank whose share is empty sends none, of the real table's width) against the real
    images'."""
    real = TextureTally().add(real_pixels).table()
    mine = samples.table() if samples.rows else real[:0]
    return compare(distributed.gather_rows(ctx, mine), real, real_pixels.shape[-1], seed=seed)


def _tallied(tallies, batches: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The batches as they come, each added to every one of `tallies` on its way."""
    for batch in batches:
        for tally in tallies:
            tally.add(batch)
        yield batch


RECOGNISED = 0.9  # the judge's top-class probability at which a sample counts as recognised


@torch.no_grad()
def recognised(feature, features: torch.Tensor) -> float | None:
    """The share of samples the judge puts in one of its classes at p >= RECOGNISED (whether
    they look like the classes at all, beside KID's distance between the sets), from the
    judge features already extracted (every rank's, gathered): its head alone, no second pass
    over the images. None for other features."""
    if not isinstance(feature, JudgeFeatures):
        return None
    head = feature.judge.head
    logits = head(features.to(head.weight.device, head.weight.dtype)).float()
    return (logits.softmax(dim=1).max(dim=1).values >= RECOGNISED).double().mean().item()


def evaluate_folder(run_dir: Path, samples: SampleFolder, *, device: torch.device,
                    num: int | None = None, seed: int = 0, features: str = "judge",
                    inception_weights: Path | None = None, max_real: int = 5000,
                    progress: Callable[[int, int], None] | None = None,
                    neighbours: Path | None = None, neighbours_of: int = 8,
                    ctx: distributed.Context | None = None) -> Quality:
    """The first `num` images (None: all) of a folder of samples (run/folder.py), drawn by
    however many jobs, scored against up to `max_real` training images of the run in
    `run_dir`; `progress` hears the count of images scored and of those to score (this rank's
    share of them under torchrun, as in evaluate_run)."""
    ctx = ctx or distributed.alone(device)
    drawn = samples.recorded()
    config = RunDir(run_dir).read_config()
    source = samples.source()
    if source is not None and not RunDir(run_dir).holds(source):
        warnings.warn(f"{samples.path} was drawn from {source}, not from run {run_dir}: it is "
                      f"scored against that run's images and judge", PegasusWarning, stacklevel=2)
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
    try:
        samples.check_pictures(num, config.data.res)
    except UserError as e:  # every rank checks alike: rank 0 says it
        distributed.first_error(ctx, e)
    feature = feature_extractor(features, run_dir, device, inception_weights)
    extract = Extractor(feature, inception_weights, device)
    real_pixels = real_images(config, device, max_real, seed)
    real = _features(ctx, extract, real_pixels)
    lo, hi = distributed.share(ctx, num, FEATURE_BATCH)
    read = samples.read(hi, batch=FEATURE_BATCH, start=lo,
                        progress=(lambda done: progress(done - lo, hi - lo)) if progress else None)
    first, texture = FirstImages(neighbours_of), TextureTally()
    fake = _gathered(ctx, lambda: extract.stream(first.keep(_tallied((texture,), read))))
    kid, kid_std, fid = scores(real, fake, seed=seed, device=device)
    found, held = _novelty(ctx, config, extract, features, seed, fake, first, neighbours)
    return Quality(features, kid, kid_std, fid, num, len(real), drawn.sampler, drawn.evaluations,
                   found, held, recognised=recognised(feature, fake),
                   texture=_texture(ctx, texture, real_pixels, seed))


def _features(ctx: distributed.Context, extract: Extractor, images: torch.Tensor) -> torch.Tensor:
    """The features of `images`, each rank extracting its share, gathered in order."""
    lo, hi = distributed.share(ctx, len(images), FEATURE_BATCH)
    return _gathered(ctx, lambda: extract.of(images[lo:hi]))


def _gathered(ctx: distributed.Context, make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Every rank's rows of `make()` in rank order; an input error of one rank (a damaged
    sample file, say) is raised on all of them, not left to hang the others."""
    rows, error = None, None
    try:
        rows = make()
    except UserError as e:
        error = e
    distributed.first_error(ctx, error)
    return distributed.gather_rows(ctx, rows)


def _novelty(ctx: distributed.Context, config: Config, extract: Extractor, features: str,
             seed: int, fake: torch.Tensor, first: FirstImages,
             neighbours: Path | None) -> tuple[Novelty, HeldKID | None]:
    """The samples' novelty figures against the run's training and held-out images, their KID
    against the held-out images where the run never trained on them, and (on rank 0) the
    neighbours picture when one is asked for."""
    reference = Reference.of(config, lambda x: _features(ctx, extract, x), seed)
    found = novelty(fake, reference.features, reference.held, features=features, seed=seed)
    if neighbours is not None and ctx.main:
        save_neighbours(first.images, fake[:len(first.images)], reference, neighbours)
    if not reference.unseen or len(reference.held) < 2:
        return found, None
    kid, kid_std, _ = scores(reference.held, fake, seed=seed, device=fake.device)
    return found, HeldKID(kid, kid_std, len(reference.held), reference.rule)
