"""The noise schedule: the geometric sigma sequence a run trains on plus the settings its
annealed Langevin sampler uses (NCSNv2, docs/science.md). One object, validated in one place.

Levels are ordered sigma_1 > sigma_2 > ... > sigma_L: index 0 is the largest noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

# Far beyond any published schedule (CIFAR-10's L = 232), and small enough to allocate: a file's
# metadata cannot ask for a billion levels.
MAX_LEVELS = 100_000


def check_schedule_numbers(sigma_max: Any, sigma_min: Any, levels: Any, steps_per_level: Any,
                           eps: Any) -> None:
    """The rules every schedule obeys; "auto" (still to be planned) passes. Raises ValueError."""
    for name, value in (("sigma_max", sigma_max), ("sigma_min", sigma_min), ("levels", levels),
                        ("steps_per_level", steps_per_level), ("eps", eps)):
        if value != "auto" and not (isinstance(value, int | float) and math.isfinite(value)
                                    and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if sigma_max != "auto" and not sigma_max > sigma_min:
        raise ValueError(f"sigma_max ({sigma_max}) must exceed sigma_min ({sigma_min})")
    if levels != "auto" and levels < 2:
        raise ValueError(f"levels must be at least 2, got {levels}")
    if levels != "auto" and levels > MAX_LEVELS:
        raise ValueError(f"levels must be at most {MAX_LEVELS:,}, got {levels:,}")
    if steps_per_level != "auto" and steps_per_level > MAX_LEVELS:
        raise ValueError(f"steps_per_level must be at most {MAX_LEVELS:,}, got {steps_per_level:,}")


@dataclass(frozen=True)
class Schedule:
    """A concrete noise schedule: what training and sampling need, all numbers fixed."""

    sigma_max: float  # sigma_1, the largest noise level (Technique 1)
    sigma_min: float  # sigma_L, the smallest noise level
    levels: int  # L
    steps_per_level: int  # T, Langevin steps at each level
    eps: float  # base step size; alpha_i = eps * sigma_i^2 / sigma_L^2 (Technique 4)
    denoise: bool = True  # the final Tweedie step after the last level (NCSNv2 sec. 3.4)

    def __post_init__(self) -> None:
        check_schedule_numbers(self.sigma_max, self.sigma_min, self.levels, self.steps_per_level,
                               self.eps)

    @classmethod
    def from_noise(cls, noise: Any) -> Schedule:
        """The schedule of a config's noise section (a `NoiseConfig`), once its "auto" fields
        have been planned."""
        if not noise.planned:
            raise ValueError("the noise schedule still says 'auto'; plan it first (pegasus.noise.techniques)")
        return cls(noise.sigma_max, noise.sigma_min, noise.levels, noise.steps_per_level, noise.eps,
                   noise.denoise)

    @property
    def gamma(self) -> float:
        """Common ratio sigma_{i-1} / sigma_i of the geometric sequence (Technique 2)."""
        return (self.sigma_max / self.sigma_min) ** (1.0 / (self.levels - 1))

    @property
    def evaluations(self) -> int:
        """Network evaluations per sample: L*T Langevin steps plus the denoising step."""
        return self.levels * self.steps_per_level + int(self.denoise)

    def sigmas(self, device: torch.device | str | None = None) -> torch.Tensor:
        return geometric_sigmas(self.sigma_max, self.sigma_min, self.levels, device=device)

    def describe(self) -> str:
        return (f"sigma_1 {self.sigma_max:.4g}, sigma_L {self.sigma_min:.4g}, L {self.levels}, "
                f"T {self.steps_per_level}, eps {self.eps:.3g}")


def geometric_sigmas(
    sigma_max: float,
    sigma_min: float,
    levels: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """sigma_i = sigma_1 * gamma^-(i-1), i = 1..L, from sigma_max down to sigma_min exactly.

    Computed in float64 in log space so both ends are exact before the cast.
    """
    logs = torch.linspace(math.log(sigma_max), math.log(sigma_min), levels, dtype=torch.float64)
    return logs.exp().to(device=device, dtype=dtype)


def karras_sigmas(sigma_max: float, sigma_min: float, n: int, rho: float = 7.0,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """n sigmas from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho) (EDM eq. 5),
    computed in float64 so both ends are exact before the cast."""
    if n < 2:
        raise ValueError(f"a Karras grid needs at least 2 sigmas, got {n}")
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return ((hi + ramp * (lo - hi)) ** rho).to(device=device, dtype=torch.float32)


def nearest_levels(levels: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The index into `levels` (largest first) of the level nearest each sigma, in log sigma: a
    binary search per sigma, so even the largest grid costs milliseconds. Ties go to the
    larger level."""
    ascending = levels.double().log().flip(0).to(sigma.device)
    x = sigma.double().log()
    right = torch.searchsorted(ascending, x).clamp(1, len(ascending) - 1)
    left = right - 1
    nearer = torch.where((x - ascending[left]).abs() <= (ascending[right] - x).abs(), left, right)
    return len(ascending) - 1 - nearer


def langevin_step_sizes(sigmas: torch.Tensor, eps: float) -> torch.Tensor:
    """alpha_i = eps * sigma_i^2 / sigma_L^2 (NCSNv2 Algorithm 1; sigma_L is the last entry)."""
    return eps * (sigmas / sigmas[-1]) ** 2
