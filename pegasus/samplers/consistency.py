"""Multistep consistency sampling (Song et al. 2023, "Consistency models", Algorithm 1) for runs
tuned into consistency functions (`pegasus tune`, objectives/ect.py): 1 to 8 evaluations.

Each step maps its noisy point to an image with f(x, sigma) = x + sigma^2 s(x, sigma) (a tuned
run's score carries the consistency parameterisation), then, unless it is the last, noises that
image to the next sigma of the grid: x <- f + sqrt(sigma_{i+1}^2 - sigma_min^2) z, the noise
above the boundary sigma_min at which f is the identity. The last f is the image. The grid is
Karras's from sigma_1 with its sigma_L point left out (f at sigma_min would return its input),
so N evaluations walk N sigmas. With one step it injects no noise and blends by slerp of the
start; with more, eq. 4 interpolates the noise each step injects.
"""

from __future__ import annotations

import math

import torch

from pegasus.noise.schedule import Schedule, karras_sigmas
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap
from pegasus.signatures import Callback, NoiseSampler, ScoreFn

# Multistep consistency sampling gains little past a few steps (Song et al. 2023 go to 4 at
# most on CIFAR-10): each step throws away all but f's image and renoises it.
MAX_STEPS = 8


@torch.no_grad()
def consistency_sampler(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    sigma_min: float,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """One evaluation of f per sigma of `sigmas` (largest first), renoising between them."""
    grid = sigmas.tolist()
    calls = ScoreCalls(score_fn, x, grid, callback)
    if len(grid) > 1 and noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    for i, sigma in enumerate(grid):
        image = calls(x, sigma, i, 0).mul_(sigma**2).add_(x)
        if i + 1 == len(grid):
            return image
        x = image.add_(noise_sampler(), alpha=math.sqrt(max(grid[i + 1] ** 2 - sigma_min**2, 0.0)))
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """N evaluations: the first N of N + 1 Karras sigmas from sigma_1 to sigma_L. The denoising
    step is f itself, so the run's `denoise` has nothing to add."""
    steps = SPEC.default_steps if steps is None else steps
    grid = snap(karras_sigmas(schedule.sigma_max, schedule.sigma_min, steps + 1)[:-1])
    options = {k: v for k, v in options.items() if k != "denoise"}
    return Fitted(grid, len(grid), {**options, "sigma_min": schedule.sigma_min})


SPEC = SamplerSpec(
    name="consistency",
    summary="multistep consistency sampling (Song et al. 2023) of a consistency-tuned run "
            "(pegasus tune, ECT): 1 to N evaluations, renoising between them",
    function=consistency_sampler, fit=fit, default_steps=2, start="normal",
    stochastic=lambda options, sigmas: len(sigmas) > 1, fixed=("sigma_min",),
    learns="consistency", inpaints=True, max_steps=MAX_STEPS)
