"""Noise schedules: the geometric sigma sequence and Langevin step sizes (NCSNv2, NOTES.md).

Levels are ordered sigma_1 > sigma_2 > ... > sigma_L: index 0 is the largest noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """A concrete noise schedule: what training and sampling need, all numbers fixed."""

    sigma_max: float  # sigma_1, the largest noise level (Technique 1)
    sigma_min: float  # sigma_L, the smallest noise level
    levels: int  # L
    steps_per_level: int  # T, Langevin steps at each level
    eps: float  # base step size; alpha_i = eps * sigma_i^2 / sigma_L^2 (Technique 4)

    def __post_init__(self) -> None:
        if not (self.sigma_max > self.sigma_min > 0):
            raise ValueError(
                f"need sigma_max > sigma_min > 0, got sigma_max={self.sigma_max}, "
                f"sigma_min={self.sigma_min}"
            )
        if self.levels < 2:
            raise ValueError(f"need at least 2 noise levels, got {self.levels}")
        if self.steps_per_level < 1:
            raise ValueError(f"need at least 1 Langevin step per level, got {self.steps_per_level}")
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")

    @property
    def gamma(self) -> float:
        """Common ratio sigma_{i-1} / sigma_i of the geometric sequence (Technique 2)."""
        return (self.sigma_max / self.sigma_min) ** (1.0 / (self.levels - 1))

    @property
    def evaluations(self) -> int:
        """Network evaluations per sample: L*T Langevin steps plus one denoising step."""
        return self.levels * self.steps_per_level + 1

    def sigmas(self, device: torch.device | str | None = None) -> torch.Tensor:
        return geometric_sigmas(self.sigma_max, self.sigma_min, self.levels, device=device)


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


def langevin_step_sizes(sigmas: torch.Tensor, eps: float) -> torch.Tensor:
    """alpha_i = eps * sigma_i^2 / sigma_L^2 (NCSNv2 Algorithm 1; sigma_L is the last entry)."""
    return eps * (sigmas / sigmas[-1]) ** 2
