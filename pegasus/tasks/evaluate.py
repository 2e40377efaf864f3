"""Sample quality: KID and FID between a run's samples and its training images, computed by
torchmetrics (`KernelInceptionDistance`, `FrechetInceptionDistance`).

Two feature extractors:
  inception  the standard Inception-v3 pool features (torchmetrics through torch-fidelity, the
             `inception` extra); offline, an `inception_weights` file holds a copy of them
  judge      the run's independent judge classifier (`train-judge`): its penultimate features,
             with no download; numbers on it compare samplers and runs of one project, and are
             not comparable with published FIDs
Every result carries the name of its features, and is printed with it.

KID is unbiased at any sample size and torchmetrics reports it with the standard deviation over
random subsets (here of half the samples, a conservative standard error), which is what "within
noise" is measured against; FID is biased at small sample sizes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pegasus.config import Config
from pegasus.data import load_images
from pegasus.errors import FieldError, UserError, first_line
from pegasus.model.classifier import Classifier
from pegasus.run.classifiers import load_classifier
from pegasus.run.folder import SampleFolder
from pegasus.run.layout import RunDir
from pegasus.signatures import ProgressBar

FEATURES = ("judge", "inception")


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

    def describe(self) -> str:
        return (f"KID {self.kid:.4g} ± {self.kid_std:.2g}, FID {self.fid:.4g} ({self.features} "
                f"features; {self.num} samples by {self.sampler} at {self.evaluations} evaluations "
                f"against {self.real} training images)")


class JudgeFeatures(nn.Module):
    """The judge's pooled features for images in [0, 1], any size (the network pools globally)."""

    def __init__(self, judge: Classifier) -> None:
        super().__init__()
        self.judge = judge
        self.num_features = judge.head.in_features  # torchmetrics reads it instead of probing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge.features(x.float())


def feature_extractor(features: str, run_dir: Path | None, device: torch.device,
                      inception_weights: Path | None = None) -> nn.Module | int:
    """What torchmetrics takes as `feature`: a module (judge) or Inception's 2048 features."""
    if features not in FEATURES:
        raise FieldError("features", f"must be one of {', '.join(FEATURES)}, got {features!r}")
    if features == "judge":
        if run_dir is None:
            raise UserError("judge features need a run folder with a trained judge")
        return JudgeFeatures(load_classifier(run_dir, "judge", device)).eval()
    if inception_weights is not None and not Path(inception_weights).is_file():
        raise UserError(f"Inception weights file {inception_weights} does not exist; give the path "
                        f"of an offline copy of torch-fidelity's pt_inception-2015-12-05 weights")
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        raise UserError("Inception features need torch-fidelity: pip install 'pegasus-score[inception]'"
                        "; or measure with the run's judge features") from None
    return 2048


def _metrics(feature, inception_weights: Path | None, subset_size: int, device: torch.device):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    extra = {} if isinstance(feature, nn.Module) or inception_weights is None else {
        "feature_extractor_weights_path": str(inception_weights)}
    try:
        with warnings.catch_warnings():
            # KID keeps every feature vector for its subsets, as it must; its warning says so.
            warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
            kid = KernelInceptionDistance(feature=feature, subset_size=subset_size, normalize=True,
                                          **extra)
            fid = FrechetInceptionDistance(feature=feature, normalize=True, **extra)
    except (OSError, RuntimeError, ValueError) as e:  # offline download, a bad weights file
        where = f"from {inception_weights}" if inception_weights else "(downloaded on first use)"
        raise UserError(f"cannot load the Inception weights {where}: {first_line(e)}; "
                        f"offline, give a local copy as inception_weights") from None
    return kid.to(device), fid.to(device)


@torch.no_grad()
def measure(real: torch.Tensor, fake: torch.Tensor | Iterable[torch.Tensor], feature, *,
            fake_count: int | None = None, inception_weights: Path | None = None, seed: int = 0,
            batch: int = 256) -> tuple[float, float, float]:
    """(KID, its std over subsets, FID) between two image sets in [0, 1], seeded. `fake` is a
    tensor, or batches of `fake_count` images in all as they are drawn or read: only their
    features are kept, never the images."""
    device = real.device
    fake_count = len(fake) if isinstance(fake, torch.Tensor) else fake_count
    # Subsets of half the smaller set: their spread is a (conservative) standard error of the
    # KID of the whole set; subsets as large as the set would all be the set itself.
    subset = max(2, min(1000, len(real) // 2, fake_count // 2))
    kid, fid = _metrics(feature, inception_weights, subset, device)
    fakes = fake.split(batch) if isinstance(fake, torch.Tensor) else fake
    for images, is_real in ((real.split(batch), True), (fakes, False)):
        for chunk in images:
            kid.update(chunk.to(device), real=is_real)
            fid.update(chunk.to(device), real=is_real)
    torch.manual_seed(seed)  # KID's random subsets
    kid_mean, kid_std = kid.compute()
    return float(kid_mean), float(kid_std), float(fid.compute())


def real_images(config: Config, device: torch.device, max_real: int, seed: int) -> torch.Tensor:
    """Up to `max_real` of the run's training images in [0, 1], a seeded random pick."""
    data = load_images(config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:max_real]
    return data[pick].to(device).float() / 255


def evaluate_run(run, *, sampler: str = "als", steps: int | None = None, num: int = 1000,
                 seed: int = 0, features: str = "judge", inception_weights: Path | None = None,
                 max_real: int = 5000, batch_size: int | None = None, compile_: str = "auto",
                 amp: str = "auto", progress: ProgressBar | None = None) -> Quality:
    """`num` samples of a TrainedRun by `sampler` (its network on the fast path that `compile_`
    and `amp` choose), scored batch by batch as they are drawn against up to `max_real` training
    images. The features are loaded before any sampling."""
    if num < 2:
        raise FieldError("num", f"must be at least 2 for KID and FID, got {num}")
    plan = run.plan(sampler, steps)
    folder = run.run_dir.path if run.run_dir is not None else None
    feature = feature_extractor(features, folder, run.device, inception_weights)
    job = run.job(plan, num=num, batch_size=batch_size, compile_=compile_, amp=amp)
    real = real_images(run.config, run.device, max_real, seed)
    callback = progress(f"sample ({sampler})", job.evaluations) if progress else None
    kid, kid_std, fid = measure(real, job.batches(seed, callback=callback), feature,
                                fake_count=num, inception_weights=inception_weights, seed=seed)
    return Quality(features, kid, kid_std, fid, num, len(real), plan.name, plan.evaluations)


def evaluate_folder(run_dir: Path, samples: SampleFolder, *, device: torch.device,
                    num: int | None = None, seed: int = 0, features: str = "judge",
                    inception_weights: Path | None = None, max_real: int = 5000,
                    progress: Callable[[int, int], None] | None = None) -> Quality:
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
    kid, kid_std, fid = measure(real, read, feature,
                                fake_count=num, inception_weights=inception_weights, seed=seed)
    return Quality(features, kid, kid_std, fid, num, len(real), drawn.sampler, drawn.evaluations)
