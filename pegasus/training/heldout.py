"""The held-out loss: the EMA weights' loss (the run's objective, DSM unless tuned) on images the
run does not train on, at each log step, with the same sigmas and noise every time (a seeded
generator) so that the values compare.
A training loss that keeps falling while this one rises is the sign that the run has started
memorising its images; `train.early_stop` stops training then (after that many logs without a new
lowest held-out loss)."""

from __future__ import annotations

import torch

from pegasus.data import load_held_out

MOST = 256  # held-out images per evaluation
SEED = 20_201_126


class HeldOut:
    def __init__(self, config, device: torch.device) -> None:
        images = load_held_out(config.data).images
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))[:MOST]
        self.images = images[pick].to(device).float() / 255 if len(images) else None
        self.best, self.since_best = float("inf"), 0

    @torch.no_grad()
    def measure(self, model, objective) -> float:
        """`objective`'s loss of `model` on the held-out images, the same draws every time."""
        g = torch.Generator(device=self.images.device).manual_seed(SEED)
        return objective(model, self.images, step=0, generator=g).loss.item()

    def loss(self, model, objective) -> float | None:
        """The held-out loss of `model` (the EMA weights) now, kept track of for early stops;
        None where the run has no held-out images."""
        if self.images is None:
            return None
        value = self.measure(model, objective)
        if value < self.best:
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return value
