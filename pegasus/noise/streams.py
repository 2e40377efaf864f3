"""Noise for the samplers: standard normal streams from a generator, and seeded per-image
streams (each image's uniform prior of annealed Langevin, docs/science.md, and its noise) that make
an image independent of how many images are drawn with it and how they are batched."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from pegasus.signatures import NoiseSampler


def gaussian_noise_sampler(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> NoiseSampler:
    """Fresh standard normal noise shaped like x at every call, drawn from `generator` into one
    reused buffer (the sampler consumes it before the next call), so no step allocates."""
    buffer = torch.empty_like(x, memory_format=torch.contiguous_format)
    return lambda: torch.randn(buffer.shape, generator=generator, out=buffer)


def image_seed(seed: int, index: int, stream: int = 0) -> int:
    """The seed of image `index`'s own generator: a hash of (seed, stream, index), so that
    neighbouring seeds and indices give unrelated streams."""
    digest = hashlib.blake2b(f"pegasus/{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ImageStreams:
    """One seeded generator per image: images first .. first + count - 1 of `seed`.

    Image i's starting point and its noise at every step come from its own generator alone, so
    an image does not depend on how many images are drawn or how they are batched: the first 4
    of 64 are the 4 of a request for 4 (diffusers and k-diffusion seed per sample for the same
    reason). `stream` tells apart independent families of streams of one seed (eq. 4's p and q).
    """

    def __init__(self, seed: int, first: int, count: int, device: torch.device | str,
                 stream: int = 0) -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(image_seed(seed, i, stream))
                           for i in range(first, first + count)]

    def prior(self, shape: Sequence[int]) -> torch.Tensor:
        """Each image's uniform starting point, from its own generator."""
        x = torch.empty((len(self.generators), *shape), device=self.device)
        for row, g in zip(x, self.generators, strict=True):
            torch.rand(tuple(shape), generator=g, device=self.device, out=row)
        return x

    def normal(self, shape: Sequence[int]) -> torch.Tensor:
        """Each image's standard normal draw, from its own generator (the z of the ODE and
        diffusion samplers' start, centre + sigma_1 z)."""
        x = torch.empty((len(self.generators), *shape), device=self.device)
        for row, g in zip(x, self.generators, strict=True):
            torch.randn(tuple(shape), generator=g, device=self.device, out=row)
        return x

    def starting_draws(self, shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's uniform and standard normal starting draws, in the one order every chain
        of pegasus takes them: the uniform prior, then the normal draw, then the sampler's noise
        (so a blend's column 0 is the image `pegasus sample` draws with that seed)."""
        return self.prior(shape), self.normal(shape)

    def noise_sampler(self, shape: Sequence[int]) -> NoiseSampler:
        """Standard normal noise for the batch, each row from its image's generator, into one
        reused buffer."""
        buffer = torch.empty((len(self.generators), *shape), device=self.device)
        rows = list(buffer)

        def draw() -> torch.Tensor:
            for row, g in zip(rows, self.generators, strict=True):
                torch.randn(row.shape, generator=g, device=self.device, out=row)
            return buffer

        return draw
