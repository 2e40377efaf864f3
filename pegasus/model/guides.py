"""Guides: gradients that steer a score, g(x, sigma) shaped like x and added to it (classifier
guidance: Song et al. 2021, "Score-based generative modeling through SDEs", sec. 5), as objects
that compose. Blends, inpainting and the other verbs take one guide, whatever it is made of:

    ClassGuide(log_prob, weights)   grad_x sum_c w_c log p(c | x, sigma) of a noise-conditional
                                    classifier, its class weights per image
    a + b                           the sum of two guides (a product of their experts: Composable
                                    Diffusion, Liu et al. 2022)
    3.0 * g, g * weight_of_sigma    a guide weighed by a number, or by a function of each image's
                                    sigma (one layout at high noise, another's details at low:
                                    MagicMix, Liew et al. 2022)
    g.masked(mask)                  a guide that acts where `mask` is 1 only

`guided(score_fn, guide)` is the score they steer. Each guide differentiates its classifier once
per call, so a sum of guides on one classifier costs one backward pass each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from pegasus.signatures import ScoreFn

LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, sigma) -> (B, classes)
Weight = float | Callable[[torch.Tensor], torch.Tensor]  # a number, or (B,) sigma -> (B,)


class Guide:
    """A gradient g(x, sigma) for images x (B, C, H, W) at sigmas (B,), added to their score."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __add__(self, other: Guide) -> Guide:
        return Sum(self, other)

    def __mul__(self, weight: Weight) -> Guide:
        return Weighted(self, weight)

    __rmul__ = __mul__

    def masked(self, mask: torch.Tensor) -> Guide:
        return Masked(self, mask)


class ClassGuide(Guide):
    """grad_x sum_c w_c log p(c | x, sigma) per image: `weights` is (B, classes), one row per
    image of the batch it guides, or (classes,) for all alike."""

    def __init__(self, log_prob: LogProbFn, weights: torch.Tensor) -> None:
        self.log_prob, self.weights = log_prob, weights

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            objective = (self.log_prob(xg, sigma) * self.weights).sum()
            (grad,) = torch.autograd.grad(objective, xg)
        return grad


class Sum(Guide):
    def __init__(self, *guides: Guide) -> None:
        self.guides = guides

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        total = self.guides[0](x, sigma)
        for guide in self.guides[1:]:
            total = total + guide(x, sigma)
        return total


class Weighted(Guide):
    """A guide times a number, or times a function of each image's sigma."""

    def __init__(self, guide: Guide, weight: Weight) -> None:
        self.guide, self.weight = guide, weight

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if callable(self.weight):
            w = self.weight(sigma).to(x.dtype).view(-1, *([1] * (x.dim() - 1)))
            return w * self.guide(x, sigma)
        return self.weight * self.guide(x, sigma)


class Masked(Guide):
    """A guide where `mask` (broadcastable to an image, 1 inside) is 1, nothing elsewhere."""

    def __init__(self, guide: Guide, mask: torch.Tensor) -> None:
        self.guide, self.mask = guide, mask

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.guide(x, sigma) * self.mask


def guided(score_fn: ScoreFn, guide: Guide | None) -> ScoreFn:
    """s(x, sigma) + guide(x, sigma); the score itself without a guide."""
    if guide is None:
        return score_fn

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        steer = guide(x, sigma)
        return score_fn(x, sigma) + steer

    return score
