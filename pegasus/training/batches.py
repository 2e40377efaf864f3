"""The training batches: which images each step takes (a function of the step alone, so a
resumed run draws exactly the batches an uninterrupted one would), their random flips and
shifts."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
             generator: torch.Generator, shift: int = 0) -> torch.Tensor:
    """The uint8 images at `indices` as floats in [0, 1], each flipped left to right with
    probability 1/2 (one draw per image from `generator`) when `flip`, then moved by up to
    `shift` whole pixels each way (shifted). The shifts are drawn after the flips, so a run
    without them draws the flips it always drew."""
    x = images[indices].float() / 255
    if flip:
        flips = torch.rand(len(x), device=x.device, generator=generator) < 0.5
        x = torch.where(flips[:, None, None, None], x.flip(-1), x)
    if shift:
        x = shifted(x, shift, generator)
    return x.contiguous(memory_format=torch.channels_last if channels_last else
                        torch.contiguous_format)


def shifted(x: torch.Tensor, most: int, generator: torch.Generator) -> torch.Tensor:
    """Each image of `x` (N, C, H, W) moved by a whole number of pixels from -most to most, down
    and right, uniformly and independently (two draws per image from `generator`); the border
    it uncovers is the picture mirrored, as in the translations of classifier training, so no
    constant edge is learnt. A score network learns the moved images as data: `most` stays
    small against where the objects already lie (data.shift)."""
    n, _, h, w = x.shape
    offset = torch.randint(0, 2 * most + 1, (n, 2), device=x.device, generator=generator)
    rows = torch.arange(h, device=x.device)[None] + offset[:, :1]  # (N, H) rows of the padding
    cols = torch.arange(w, device=x.device)[None] + offset[:, 1:]
    padded = F.pad(x, (most, most, most, most), mode="reflect").permute(0, 2, 3, 1)
    picked = padded[torch.arange(n, device=x.device)[:, None, None], rows[:, :, None],
                    cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # laid out channels last: batch_of makes it contiguous
