"""The held-out DSM loss: the EMA weights' loss on images the run does not train on, at each log
step, with the same levels and noise every time (a seeded generator) so that the values compare.
A training loss that keeps falling while this one rises is the sign that the run has started
memorising its images; `train.early_stop` stops training then (after that many logs without a new
lowest held-out loss)."""

from __future__ import annotations

import torch

from pegasus.data import load_held_out
from pegasus.model.loss import dsm_loss

MOST = 256  # held-out images per evaluation
SEED = 20_201_126


class HeldOut:
    def __init__(self, config, device: torch.device) -> None:
        images = load_held_out(config.data).images
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(SEED))[:MOST]
        self.images = images[pick].to(device).float() / 255 if len(images) else None
        self.best, self.since_best = float("inf"), 0

    @torch.no_grad()
    def loss(self, model, sigmas: torch.Tensor, draw=None) -> float | None:
        if self.images is None:
            return None
        g = torch.Generator(device=self.images.device).manual_seed(SEED)
        value = dsm_loss(model, self.images, sigmas, generator=g, draw=draw,
                         weight=model.loss_weight).loss.item()
        if value < self.best:
            self.best, self.since_best = value, 0
        else:
            self.since_best += 1
        return value
