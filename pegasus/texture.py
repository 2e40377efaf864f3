"""Texture figures: whether samples are as smooth or as grainy as the data, which KID on a
classifier's features does not see.

Two figures, each of the samples against the training images, each with its spread:
- grain: the mean absolute difference between neighbouring pixels (horizontal and vertical
  pairs, every channel, images in [0, 1]), as a ratio to the data's. White noise of standard
  deviation s gives 2 s / sqrt(pi); a picture that is all one colour gives 0.
- the high-frequency gap: each image's power spectrum (the squared magnitude of the 2-D Fourier
  transform of each channel less its mean, over the pixel count, averaged over the channels),
  averaged over rings of one integer frequency radius; the gap is 10 log10 of the samples' ring
  power over the data's, in dB, averaged over the rings from a quarter to half the sampling
  rate (the upper half of the frequencies a picture holds). White noise of variance s^2 has
  power s^2 in every ring; speckle shows as a positive gap, blur as a negative one.

The spreads are the standard deviations over bootstrap resamples of both image sets (seeded),
so they carry the noise of the samples and of the data alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

BOOTSTRAPS = 200  # resamples for each figure's spread


def as_unit(images: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as float64 in [0, 1] (uint8 pictures scaled)."""
    return images.double().div(255.0 if images.dtype == torch.uint8 else 1.0)


def neighbour_difference(images: torch.Tensor) -> torch.Tensor:
    """Each image's mean |x_p - x_q| over its horizontally and vertically adjacent pixels p, q,
    every channel: (B,)."""
    x = as_unit(images)
    across = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1)
    down = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1)
    return torch.cat([across, down], dim=1).mean(dim=1)


def periodogram(images: torch.Tensor) -> torch.Tensor:
    """Each image's power spectrum |FFT2(x - mean)|^2 / (H W), averaged over channels: (B, H, W),
    frequency (0, 0) first, as torch.fft orders them."""
    x = as_unit(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs().square() / (x.shape[-2] * x.shape[-1])
    return power.mean(dim=1)


def rings(h: int, w: int) -> torch.Tensor:
    """Each frequency's ring: its radius in frequency steps of the shorter side, rounded, (H, W)."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64).view(1, -1)
    return (torch.sqrt(fy.square() + fx.square()) * min(h, w)).round().long()


def radial_average(power: torch.Tensor) -> torch.Tensor:
    """The mean of `power` (..., H, W) over each ring from radius 0 to half the shorter side
    (the frequencies of the corners beyond it are left out): (..., min(H, W) // 2 + 1)."""
    h, w = power.shape[-2:]
    ring = rings(h, w).flatten()
    count = min(h, w) // 2 + 1
    keep = ring < count
    flat = power.flatten(-2)[..., keep]
    index = ring[keep].expand_as(flat)
    sums = torch.zeros((*flat.shape[:-1], count), dtype=flat.dtype).scatter_add_(-1, index, flat)
    return sums / torch.bincount(ring[keep], minlength=count).to(flat.dtype)


def high_rings(res: int) -> slice:
    """The rings from a quarter to half the sampling rate of a picture `res` pixels across."""
    return slice(math.ceil(res / 4), res // 2 + 1)


class TextureTally:
    """Each image's grain and ring power, kept batch by batch (float64, on the CPU)."""

    def __init__(self) -> None:
        self.rows: list[torch.Tensor] = []

    def add(self, images: torch.Tensor) -> TextureTally:
        for chunk in images.split(1024):
            ring_power = radial_average(periodogram(chunk))
            self.rows.append(torch.cat([neighbour_difference(chunk)[:, None], ring_power],
                                       dim=1).cpu())
        return self

    def table(self) -> torch.Tensor:
        """(N, 1 + rings): each image's grain, then its power in each ring."""
        return torch.cat(self.rows) if self.rows else torch.zeros(0, 1)


@dataclass(frozen=True)
class Texture:
    grain: float  # the samples' neighbour-pixel difference over the data's
    grain_std: float
    high_gap_db: float  # 10 log10 of the samples' high-frequency ring power over the data's
    high_gap_std: float
    num: int
    real: int

    def describe(self) -> str:
        return (f"texture: neighbour-pixel difference {self.grain:.3g}x the data's "
                f"(± {self.grain_std:.2g}); high-frequency power {self.high_gap_db:+.2f} dB "
                f"against the data's (± {self.high_gap_std:.2g}; {self.num} samples, "
                f"{self.real} training images)")


def _figures(samples: torch.Tensor, data: torch.Tensor, band: slice) -> tuple[float, float]:
    """(grain ratio, high-frequency gap in dB) of two tables (TextureTally.table)."""
    s, d = samples.mean(dim=0), data.mean(dim=0)
    grain = (s[0] / d[0]).item()
    gap = 10 * torch.log10(s[1:][band] / d[1:][band]).mean().item()
    return grain, gap


def compare(samples: torch.Tensor, data: torch.Tensor, res: int, *, seed: int = 0,
            bootstraps: int = BOOTSTRAPS) -> Texture:
    """The texture figures of the samples' table against the data's (TextureTally.table), the
    spreads over `bootstraps` seeded resamples of both."""
    band = high_rings(res)
    grain, gap = _figures(samples, data, band)
    g = torch.Generator().manual_seed(seed)
    draws = torch.tensor([_figures(samples[torch.randint(len(samples), (len(samples),),
                                                         generator=g)],
                                   data[torch.randint(len(data), (len(data),), generator=g)],
                                   band)
                          for _ in range(bootstraps)], dtype=torch.float64)
    spread = draws.std(dim=0).tolist()
    return Texture(grain, spread[0], gap, spread[1], len(samples), len(data))
