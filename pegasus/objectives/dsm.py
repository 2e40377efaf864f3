"""Denoising score matching (NCSNv2, docs/science.md, "The score and its loss"): the objective
`dsm`, every run's unless tuned.

For each sample draw a level index uniformly, z ~ N(0, I), x~ = x + sigma z, and
    loss = 1/2 * || sigma * s(x~, sigma) + z ||^2
summed over pixels and averaged over the batch. This is eq. 2 of the winged-horses text
multiplied by sigma^2 (the lambda(sigma) = sigma^2 weighting), so every level contributes
on the same scale and an untrained network that outputs zero scores D/2.

Each image's sigma is one of the run's levels (NCSNv2) or drawn from a continuum
(`noise.training`: noise/draws.py); a run preconditioned as EDM's weights the loss by its lambda
(model/precondition.py). DSM has one stage, and its loss on held-out images is comparable from
one log step to the next (training/heldout.py).
"""

from __future__ import annotations

import torch

from pegasus.hookspecs import Loss
from pegasus.noise.draws import SigmaDraw
from pegasus.signatures import ScoreFn


class DenoisingScoreMatching:
    """The `dsm` objective of a run (hookspecs.Objective's factory)."""

    def __init__(self, options, *, config, sigmas: torch.Tensor, model) -> None:
        noise = config.noise
        self.sigmas = sigmas
        self.draw = (None if noise.training == "levels" else
                     SigmaDraw(noise.training, sigmas, noise.p_mean, noise.p_std))
        self.weight = model.loss_weight

    def __call__(self, net: ScoreFn, x: torch.Tensor, *, step: int,
                 generator: torch.Generator | None = None) -> Loss:
        return dsm_loss(net, x, self.sigmas, generator=generator, draw=self.draw,
                        weight=self.weight)


def dsm_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    nearest: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    draw=None,
    weight=None,
) -> Loss:
    """The loss on a batch of clean images x, each at a sigma `draw` picks (a noise/draws.py
    SigmaDraw; by default one of `sigmas`, uniformly: NCSNv2).

    `nearest` (each image's level index) and `noise` may be given explicitly (tests do, to
    check the closed form);
    otherwise they are drawn from `generator`. `weight`, a function of each sample's sigma,
    multiplies its loss (EDM's lambda: ScoreModel.loss_weight); None keeps NCSNv2's.
    """
    batch = x.shape[0]
    if draw is not None and nearest is None:
        sigma, nearest = draw(batch, generator, x.device)
    else:
        if nearest is None:
            nearest = torch.randint(len(sigmas), (batch,), device=x.device, generator=generator)
        sigma = sigmas[nearest]
    if noise is None:
        noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    sigma_b = sigma.view(-1, *([1] * (x.dim() - 1)))
    perturbed = x + sigma_b * noise
    score = score_fn(perturbed, sigma)
    residual = sigma_b * score.float() + noise.float()
    per_sample = 0.5 * residual.square().flatten(1).sum(dim=1)
    if weight is not None:
        per_sample = per_sample * weight(sigma)
    return Loss(loss=per_sample.mean(), per_sample=per_sample, nearest=nearest)
