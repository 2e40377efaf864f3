"""Choosing the noise schedule from the data: NCSNv2 Techniques 1, 2 and 4 (docs/science.md).

The reference implementation hard-codes its schedules; this module derives them.
- Technique 1: sigma_1 = the largest Euclidean distance between two training images.
- Technique 2: a geometric ratio gamma with
      Phi(sqrt(2D)(gamma - 1) + 3 gamma) - Phi(sqrt(2D)(gamma - 1) - 3 gamma) = 0.5,
  hence L levels from sigma_1 down to sigma_L.
- Technique 4 (Proposition 3): for T steps per level, the eps whose
      r(eps) = (1 - eps/sL^2)^(2T) (gamma^2 - c) + c,  c = 2 eps / (sL^2 - sL^2 (1 - eps/sL^2)^2)
  is closest to 1; |r - 1| has several local minima, so the search is global.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pegasus.noise.schedule import check_schedule_numbers


@dataclass(frozen=True)
class ChosenSchedule:
    dim: int
    sigma_max: float
    sigma_min: float
    gamma: float
    levels: int
    steps_per_level: int
    eps: float
    ratio: float  # r(eps): the variance ratio s^2/sigma^2 that Proposition 3 predicts

    def as_config(self) -> dict[str, float | int]:
        return {"sigma_max": self.sigma_max, "sigma_min": self.sigma_min, "levels": self.levels,
                "steps_per_level": self.steps_per_level, "eps": self.eps}


def _phi(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def overlap(gamma: float, dim: int) -> float:
    """Technique 2's left-hand side: the overlap of adjacent levels for D = dim."""
    a = math.sqrt(2 * dim) * (gamma - 1)
    return _phi(a + 3 * gamma) - _phi(a - 3 * gamma)


def choose_gamma(dim: int, target: float = 0.5) -> float:
    """The ratio whose overlap equals `target` (the overlap falls as gamma grows)."""
    # For sqrt(2D) <= 3 the +-3 gamma window widens as fast as it shifts and the overlap never
    # falls to 0.5: the technique needs D >= 5.
    if dim < 5:
        raise ValueError(f"Technique 2 needs data of dimension at least 5, got {dim}")
    lo, hi = 1.0, 2.0
    while overlap(hi, dim) > target:
        hi *= 2
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if overlap(mid, dim) > target else (lo, mid)
    return 0.5 * (lo + hi)


def levels_for(sigma_max: float, sigma_min: float, gamma: float) -> int:
    """Levels of a geometric sequence from sigma_max to sigma_min with ratio at most gamma."""
    # A difference of logs: sigma_max / sigma_min itself can overflow a float (1e308 / 0.01).
    return math.ceil((math.log(sigma_max) - math.log(sigma_min)) / math.log(gamma)) + 1


def variance_ratio(eps: float, gamma: float, sigma_min: float, steps: int) -> float:
    """r(eps) of Proposition 3."""
    s2 = sigma_min**2
    q = 1 - eps / s2
    c = 2 * eps / (s2 - s2 * q * q)
    return q ** (2 * steps) * (gamma**2 - c) + c


def choose_eps(gamma: float, sigma_min: float, steps: int) -> float:
    """The global minimiser of |r(eps) - 1| over 0 < eps < sigma_L^2.

    Langevin at the last level is stable only for alpha_L = eps < 2 sigma_L^2, and past
    sigma_L^2 the factor (1 - eps/sL^2) turns negative; the search covers (0, sL^2) on a fine
    logarithmic grid, then refines every grid minimum by golden-section search and keeps the best.
    """
    s2 = sigma_min**2

    def err(log_eps: float) -> float:
        return abs(variance_ratio(math.exp(log_eps), gamma, sigma_min, steps) - 1)

    lo, hi = math.log(s2 * 1e-12), math.log(s2 * (1 - 1e-9))
    grid = torch.linspace(lo, hi, 20001, dtype=torch.float64).tolist()
    values = [err(v) for v in grid]
    candidates = [i for i in range(1, len(grid) - 1)
                  if values[i] <= values[i - 1] and values[i] <= values[i + 1]]
    candidates += [0, len(grid) - 1]
    best, best_err = grid[0], values[0]
    inv_phi = (math.sqrt(5) - 1) / 2
    for i in candidates:
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
        for _ in range(100):
            if err(c) < err(d):
                b, d = d, c
                c = b - inv_phi * (b - a)
            else:
                a, c = c, d
                d = a + inv_phi * (b - a)
        x = 0.5 * (a + b)
        if err(x) < best_err:
            best, best_err = x, err(x)
    return math.exp(best)


def choose_schedule(
    dim: int,
    sigma_max: float,
    steps_per_level: int,
    sigma_min: float = 0.01,
    levels: int | None = None,
) -> ChosenSchedule:
    """Techniques 2 and 4 for data of dimension `dim` and a given sigma_1. Given `levels`, the
    ratio follows from it and only eps is chosen."""
    # The rules of every schedule (schedule.py), before and once the levels are chosen.
    check_schedule_numbers(sigma_max, sigma_min, levels or "auto", steps_per_level, "auto")
    if levels is None:
        levels = levels_for(sigma_max, sigma_min, choose_gamma(dim))
        check_schedule_numbers(sigma_max, sigma_min, levels, steps_per_level, "auto")
    gamma = (sigma_max / sigma_min) ** (1 / (levels - 1))
    eps = choose_eps(gamma, sigma_min, steps_per_level)
    return ChosenSchedule(dim, sigma_max, sigma_min, gamma, levels, steps_per_level, eps,
                     variance_ratio(eps, gamma, sigma_min, steps_per_level))


def max_pairwise_distance(images: torch.Tensor, chunk: int = 1024) -> float:
    """Technique 1: the exact largest Euclidean distance between two images (uint8 or float in
    [0, 1]), in chunks of `chunk` x N distances so memory stays bounded; runs on the images'
    device (a GPU when they are there)."""
    x = images.flatten(1)
    x = x.float() / 255 if images.dtype == torch.uint8 else x.float()
    sq = x.square().sum(1).double()
    best = torch.zeros((), device=x.device)
    for start in range(0, len(x), chunk):
        block = x[start : start + chunk]
        # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b, in float64 so the cancellation stays exact enough.
        d2 = sq[start : start + chunk, None] + sq[None] - 2 * (block @ x.T).double()
        best = torch.maximum(best, d2.max().float())
    return float(best.clamp_min(0).sqrt())


def choose_for_images(noise, images: torch.Tensor):
    """A NoiseConfig with its "auto" fields filled in from the training images."""
    import dataclasses

    if noise.planned:
        return noise
    dim = images[0].numel()
    sigma_max = max_pairwise_distance(images) if noise.sigma_max == "auto" else noise.sigma_max
    levels = None if noise.levels == "auto" else noise.levels
    chosen = choose_schedule(dim, sigma_max, noise.steps_per_level, noise.sigma_min, levels)
    eps = chosen.eps if noise.eps == "auto" else noise.eps
    return dataclasses.replace(noise, sigma_max=sigma_max, levels=chosen.levels, eps=eps)
