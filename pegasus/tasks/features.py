"""The features KID, FID and the novelty figures compare images on, extracted the way
torchmetrics does:

  inception  the standard Inception-v3 pool features (torchmetrics through torch-fidelity, the
             `inception` extra); offline, an `inception_weights` file holds a copy of them
  judge      the run's independent judge classifier (`train-judge`): its penultimate features,
             with no download; numbers on it compare samplers and runs of one project, and are
             not comparable with published FIDs
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from pegasus.errors import FieldError, UserError, first_line
from pegasus.model.classifier import Classifier
from pegasus.run.classifiers import load_classifier

FEATURES = ("judge", "inception")


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


def metrics(feature, inception_weights: Path | None, subset_size: int, device: torch.device):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    extra = {} if isinstance(feature, nn.Module) or inception_weights is None else {
        "feature_extractor_weights_path": str(inception_weights)}
    # Every rank is handed every rank's features already (tasks/evaluate.py gathers them);
    # torchmetrics' own gathering across a process group would count each of them world times.
    extra["sync_on_compute"] = False
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


FEATURE_BATCH = 256  # images per forward pass of the feature network


class Extractor:
    """The features of images in [0, 1], as torchmetrics extracts them: the judge's module, or
    torchmetrics' own Inception (8-bit pixels, as its `normalize=True` makes them)."""

    def __init__(self, feature, inception_weights: Path | None, device: torch.device) -> None:
        if isinstance(feature, nn.Module):
            self.module, self.eight_bit = feature, False
            self.num_features = feature.num_features
        else:
            kid, _ = metrics(feature, inception_weights, 2, device)
            self.module, self.eight_bit, self.num_features = kid.inception, True, feature
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        return self.module((x * 255).byte() if self.eight_bit else x)

    def of(self, images: torch.Tensor) -> torch.Tensor:
        """The features of a tensor of images, (N, F) on the CPU."""
        return self.stream([images])

    def stream(self, batches: Iterable[torch.Tensor], batch: int = FEATURE_BATCH) -> torch.Tensor:
        """The features of every image of `batches`, in order, (N, F) on the CPU."""
        out = [self(chunk).cpu() for images in batches for chunk in images.split(batch)]
        return torch.cat(out) if out else torch.empty(0, self.num_features)


class _Given(nn.Module):
    """Features already extracted, handed to torchmetrics as its "feature extractor"."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def scores(real: torch.Tensor, fake: torch.Tensor, *, seed: int = 0,
           device: torch.device | str = "cpu", batch: int = 4096) -> tuple[float, float, float]:
    """(KID, its std over subsets, FID) by torchmetrics between two sets of features. KID's
    subsets are half the smaller set: their spread is a (conservative) standard error of the
    KID of the whole set; subsets as large as the set would all be the set itself."""
    subset = max(2, min(1000, len(real) // 2, len(fake) // 2))
    kid, fid = metrics(_Given(real.shape[1]), None, subset, torch.device(device))
    for features, is_real in ((real, True), (fake, False)):
        for chunk in features.split(batch):
            kid.update(chunk.to(device), real=is_real)
            fid.update(chunk.to(device), real=is_real)
    torch.manual_seed(seed)  # KID's random subsets
    kid_mean, kid_std = kid.compute()
    return float(kid_mean), float(kid_std), float(fid.compute())
