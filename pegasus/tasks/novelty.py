"""Is it new? Whether samples copy the training images, and how realistic and how varied they
are, on the features KID uses (the run's judge, or Inception).

memorisation  The share of samples whose nearest training image is closer than the 1st
              percentile of the distances from held-out images to their nearest training image:
              a sample that near is nearer than 99 of 100 images the model never saw, the rule
              of thumb of a copy. Held-out images are sprites drawn with another seed, for the
              built-in data, else a seeded tenth of the training images kept out of the
              reference set. With it, the median of each sample's nearest-training distance over
              the held-out images' median (about 1 for a model that generalises, near 0 for one
              that copies). Its standard error is the binomial one.
precision,    Improved precision and recall (Kynkaanniemi et al. 2019) with k = 3: a sample is
recall        realistic when it lies inside the k-nearest-neighbour ball of some real image, a
              real image covered when it lies inside some sample's ball; density and coverage
              (Naeem et al. 2020) with the same k count the balls instead; the real set is as
              many training images as there are samples. Spreads over 20 bootstrap resamples of
              the samples.

The k-NN arithmetic is a few lines of torch.cdist over chunks: torchmetrics has no precision
and recall, and torch-fidelity's run only inside its own Inception pipeline (an optional extra,
not the run's judge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

K = 3
BOOTSTRAPS = 20


def nearest(a: torch.Tensor, b: torch.Tensor, k: int = 1, chunk: int = 1024,
            skip_self: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to, and indices of, each row of `a`'s k nearest rows of `b` (N, k): in chunks,
    so 50,000 samples against 10,000 images never hold the whole matrix. With `skip_self`, a
    row of `a` that is a row of `b` (the same set) does not count as its own neighbour."""
    a, b = a.double(), b.double()
    dists, index = [], []
    for start in range(0, len(a), chunk):
        d = torch.cdist(a[start:start + chunk], b)
        if skip_self:
            rows = torch.arange(start, start + len(d))
            d[torch.arange(len(d)), rows] = math.inf
        values, where = d.topk(k, dim=1, largest=False)
        dists.append(values)
        index.append(where)
    return torch.cat(dists), torch.cat(index)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = K,
                     real_radius: torch.Tensor | None = None) -> dict[str, float]:
    """Improved precision and recall, density and coverage of `fake` against `real` (the real
    images' k-NN radii may be given, as bootstrap resamples of `fake` share them)."""
    if real_radius is None:
        real_radius = nearest(real, real, k, skip_self=True)[0][:, -1]
    fake_radius = nearest(fake, fake, k, skip_self=True)[0][:, -1]
    d_fake_real = torch.cdist(fake.double(), real.double())  # (fakes, reals)
    inside = d_fake_real <= real_radius[None]
    precision = inside.any(dim=1).double().mean()
    recall = (d_fake_real <= fake_radius[:, None]).any(dim=0).double().mean()
    density = inside.double().sum(1).mean() / k
    coverage = (d_fake_real.min(dim=0).values <= real_radius).double().mean()
    return {"precision": float(precision), "recall": float(recall), "density": float(density),
            "coverage": float(coverage)}


@dataclass
class Novelty:
    memorised: float  # the share of samples nearer a training image than the threshold
    memorised_se: float
    median_ratio: float  # median nearest-training distance of samples / of held-out images
    threshold: float  # the 1st percentile of held-out images' nearest-training distances
    scores: dict[str, float]  # precision, recall, density, coverage
    spreads: dict[str, float]  # their bootstrap standard deviations
    samples: int
    reference: int  # training images compared with
    held_out: int
    features: str

    def describe(self) -> str:
        scores = (", ".join(f"{k} {v:.3f} ± {self.spreads[k]:.3f}" for k, v in self.scores.items())
                  or f"no precision or recall: they need more than {K} samples")
        return (f"memorised {100 * self.memorised:.1f}% ± {100 * self.memorised_se:.1f}% of "
                f"{self.samples} samples (nearer a training image than 99% of {self.held_out} "
                f"held-out images are; median distance ratio {self.median_ratio:.2f}); {scores} "
                f"(k = {K}; {self.features} features, {self.reference} training images)")


def memorisation(samples: torch.Tensor, train: torch.Tensor,
                 held: torch.Tensor) -> tuple[float, float, float, float]:
    """(share memorised, its standard error, median distance ratio, threshold)."""
    held_d = nearest(held, train)[0][:, 0]
    threshold = float(torch.quantile(held_d, 0.01))
    sample_d = nearest(samples, train)[0][:, 0]
    share = float((sample_d < threshold).double().mean())
    se = math.sqrt(share * (1 - share) / len(samples))
    return share, se, float(sample_d.median() / held_d.median()), threshold


def novelty(samples: torch.Tensor, train: torch.Tensor, held: torch.Tensor, *,
            features: str, seed: int = 0) -> Novelty:
    """Every figure of the module for sample features against training and held-out features."""
    share, se, ratio, threshold = memorisation(samples, train, held)
    if len(samples) <= K:  # each sample's k-NN radius needs K others
        return Novelty(share, se, ratio, threshold, {}, {}, len(samples), len(train), len(held),
                       features)
    # Precision and recall compare sets of one size: as many training images as samples.
    g = torch.Generator().manual_seed(seed)
    real = train[torch.randperm(len(train), generator=g)[:len(samples)]]
    radius = nearest(real, real, K, skip_self=True)[0][:, -1]
    scores = precision_recall(real, samples, real_radius=radius)
    draws = [precision_recall(real, samples[torch.randint(len(samples), (len(samples),),
                                                           generator=g)], real_radius=radius)
             for _ in range(BOOTSTRAPS)]
    spreads = {k: float(torch.tensor([d[k] for d in draws]).std()) for k in scores}
    return Novelty(share, se, ratio, threshold, scores, spreads, len(samples), len(train),
                   len(held), features)
