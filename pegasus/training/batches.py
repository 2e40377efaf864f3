"""The training batches: which images each step takes (a function of the step alone, so a
resumed run draws exactly the batches an uninterrupted one would) and their random flips."""

from __future__ import annotations

import torch


class EpochSampler:
    """Batch indices as a function of the step alone: epochs of seeded permutations laid end to
    end, so resuming at step s draws exactly the batches an uninterrupted run would have. With
    several ranks, each step takes world * batch_size consecutive indices and rank r its own
    slice of them: every rank sees its own shard. The current permutation lives on `device`."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 device: torch.device | str = "cpu") -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world, self.device = rank, world, torch.device(device)
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _order(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=g).to(self.device)
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        start = (step * self.world + self.rank) * self.batch_size
        parts, need = [], self.batch_size
        while need:
            epoch, offset = divmod(start, self.n)
            take = min(need, self.n - offset)
            parts.append(self._order(epoch)[offset : offset + take])
            start, need = start + take, need - take
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def batch_of(images: torch.Tensor, indices: torch.Tensor, *, flip: bool, channels_last: bool,
             generator: torch.Generator) -> torch.Tensor:
    """The uint8 images at `indices` as floats in [0, 1], each flipped left to right with
    probability 1/2 (one draw per image from `generator`) when `flip`."""
    x = images[indices].float() / 255
    if flip:
        flips = torch.rand(len(x), device=x.device, generator=generator) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x
