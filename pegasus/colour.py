"""Colour drift: the winged-horses text's third limitation, "colour shift when trained for long
periods". A drifting model's samples move away from the training images' colours as a whole: a
channel's mean or spread, not any one image. The measure is the per-channel mean and standard
deviation of samples against the training images', tallied batch by batch (images in [0, 1] or
uint8), the largest gap of each and their distance (the root of the summed squared gaps).
Training logs it at every sample grid and warns once past DRIFT_WARNING and the grid's own
noise; `pegasus eval` prints it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The largest channel-mean gap that passes without a warning: a shift of 0.05 in [0, 1] (13 of
# 255 levels) is visible on a grid.
DRIFT_WARNING = 0.05
# A warning also needs the gap to be beyond the grid's own sampling noise: NOISE_MARGIN standard
# errors of its channel means. The mean of a few varied images wanders by chance: over 16 sprites
# (the demo's grid) a channel mean's standard error is 0.027, so a sound run's grid passed 0.05
# at times; over 64 it is 0.013, where 0.05 alone decides.
NOISE_MARGIN = 3.0


class ColourTally:
    """Per-channel sums over images added batch by batch, in float64."""

    def __init__(self) -> None:
        self.count, self.sum, self.square = 0, None, None

    def add(self, images: torch.Tensor) -> ColourTally:
        scale = 255.0 if images.dtype == torch.uint8 else 1.0
        for chunk in images.split(1024):
            x = chunk.double().div(scale).transpose(0, 1).flatten(1)  # (C, pixels)
            sum_, square = x.sum(dim=1).cpu(), x.square().sum(dim=1).cpu()
            self.sum = sum_ if self.sum is None else self.sum + sum_
            self.square = square if self.square is None else self.square + square
            self.count += x.shape[1]
        return self

    @classmethod
    def merged(cls, parts: list[tuple[int, torch.Tensor | None, torch.Tensor | None]]) -> ColourTally:
        """One tally of several (count, sum, square) parts: every rank's share of the images."""
        tally = cls()
        for count, sum_, square in parts:
            if count:
                tally.sum = sum_ if tally.sum is None else tally.sum + sum_
                tally.square = square if tally.square is None else tally.square + square
                tally.count += count
        return tally

    def stats(self) -> ColourStats:
        mean = self.sum / self.count
        std = (self.square / self.count - mean.square()).clamp_min(0).sqrt()
        return ColourStats(mean.tolist(), std.tolist())


@dataclass(frozen=True)
class ColourStats:
    mean: list[float]  # per channel
    std: list[float]

    @classmethod
    def of(cls, images: torch.Tensor) -> ColourStats:
        return ColourTally().add(images).stats()


def mean_noise(images: torch.Tensor) -> float:
    """The largest standard error of the images' channel means: the spread of the images' own
    channel means over the root of their number (0 for fewer than two images)."""
    if len(images) < 2:
        return 0.0
    scale = 255.0 if images.dtype == torch.uint8 else 1.0
    per_image = images.double().div(scale).flatten(2).mean(dim=2)  # (N, C)
    return (per_image.std(dim=0) / len(images) ** 0.5).max().item()


@dataclass(frozen=True)
class Drift:
    samples: ColourStats
    data: ColourStats
    noise: float = 0.0  # the samples' mean_noise, where they are few enough for it to matter

    @property
    def mean_gaps(self) -> list[float]:
        return [s - d for s, d in zip(self.samples.mean, self.data.mean, strict=True)]

    @property
    def std_gaps(self) -> list[float]:
        return [s - d for s, d in zip(self.samples.std, self.data.std, strict=True)]

    @property
    def mean_gap(self) -> float:
        return max(abs(g) for g in self.mean_gaps)

    @property
    def std_gap(self) -> float:
        return max(abs(g) for g in self.std_gaps)

    @property
    def distance(self) -> float:
        return sum(g * g for g in self.mean_gaps + self.std_gaps) ** 0.5

    @property
    def drifting(self) -> bool:
        return self.mean_gap > max(DRIFT_WARNING, NOISE_MARGIN * self.noise)

    def describe(self) -> str:
        def row(values: list[float]) -> str:
            return " ".join(f"{v:.3f}" for v in values)

        return (f"colour: channel means {row(self.samples.mean)} (data {row(self.data.mean)}), "
                f"stds {row(self.samples.std)} (data {row(self.data.std)}); largest gaps "
                f"{self.mean_gap:.3f} in mean, {self.std_gap:.3f} in std")

    def scalars(self) -> dict[str, float]:
        """TensorBoard's: each channel's gaps, the largest and the distance."""
        out = {f"colour/mean_gap_{c}": g for c, g in enumerate(self.mean_gaps)}
        out |= {f"colour/std_gap_{c}": g for c, g in enumerate(self.std_gaps)}
        return out | {"colour/largest_mean_gap": self.mean_gap, "colour/distance": self.distance}
