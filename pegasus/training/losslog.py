"""The training loss, summed on the device between log steps (no host read per step) and read
back once: the mean over the ranks, and this rank's mean per range of noise levels for
TensorBoard."""

from __future__ import annotations

import torch

from pegasus import distributed
from pegasus.model.loss import DSMLoss


class LossLog:
    def __init__(self, sigmas: torch.Tensor, groups: int = 8) -> None:
        levels, device = len(sigmas), sigmas.device
        bounds = torch.linspace(0, levels, min(groups, levels) + 1).round().long().tolist()
        self.groups = list(zip(bounds[:-1], bounds[1:], strict=True))
        self.names = [f"loss_by_sigma/{float(sigmas[lo]):.3g}-{float(sigmas[hi - 1]):.3g}"
                      for lo, hi in self.groups]
        self.total = torch.zeros((), device=device)
        self.sums = torch.zeros(levels, device=device)
        self.counts = torch.zeros(levels, device=device)
        self.one = torch.ones((), device=device)  # each sample counts once for its level
        self.steps = 0

    def add(self, out: DSMLoss) -> None:
        self.total += out.loss.detach()
        self.sums.index_add_(0, out.levels, out.per_sample.detach())
        self.counts.index_add_(0, out.levels, self.one.expand(len(out.levels)))
        self.steps += 1

    def read(self, ctx) -> tuple[float, dict[str, float]]:
        """The mean loss over the ranks and, per level range, this rank's mean; then reset."""
        mean = distributed.mean(ctx, self.total).item() / self.steps
        sums, counts = self.sums.tolist(), self.counts.tolist()
        by_range = {name: sum(sums[lo:hi]) / n for name, (lo, hi) in zip(self.names, self.groups,
                                                                            strict=True)
                    if (n := sum(counts[lo:hi]))}
        self.total.zero_(), self.sums.zero_(), self.counts.zero_()
        self.steps = 0
        return mean, by_range
