"""Multistep consistency sampling (Song et al. 2023, "Consistency models", Algorithm 1) for runs
tuned into consistency functions (`pegasus tune`, objectives/ect.py): 1 to 8 evaluations.

Each step maps its noisy point to an image with f(x, sigma) = x + sigma^2 s(x, sigma) (a tuned
run's score carries the consistency parameterisation), then, unless it is the last, clips that
image to the data's range (as openai/consistency_models' sampler does: an estimate outside it
is no image of the data, and its excess would be renoised into the next step) and noises it to
the next sigma of the grid: x <- f + sqrt(sigma_{i+1}^2 - sigma_min^2) z, the noise above the
boundary sigma_min at which f is the identity. The last f is the image.

The grid starts at sigma_1. Below it come the sigmas chosen for the run (`sigmas`: searched
on the tuned run by pegasus search-sigmas, tasks/sigma_search.py, or given), else Karras's
grid with its sigma_L point left out (f at sigma_min would return its input), so N
evaluations walk N sigmas. With one step it injects no noise and blends by slerp of the
start; with more, eq. 4 interpolates the noise each step injects.
"""

from __future__ import annotations

import math

import torch

from pegasus.errors import FieldError
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
    clip: tuple[float, float] | None = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """One evaluation of f per sigma of `sigmas` (largest first), renoising between them; each
    image but the last clipped to `clip` (low, high) first, when given."""
    grid = sigmas.tolist()
    calls = ScoreCalls(score_fn, x, grid, callback)
    if len(grid) > 1 and noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    for i, sigma in enumerate(grid):
        image = calls(x, sigma, i, 0).mul_(sigma**2).add_(x)
        if i + 1 == len(grid):
            return image
        if clip is not None:
            image = image.clamp_(*clip)
        x = image.add_(noise_sampler(), alpha=math.sqrt(max(grid[i + 1] ** 2 - sigma_min**2, 0.0)))
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """N evaluations: sigma_1, then the N - 1 sigmas `options` chooses ("sigmas"), else the
    first N of N + 1 Karras sigmas from sigma_1 to sigma_L; images clipped to pegasus's [0, 1]
    between steps. The denoising step is f itself, so the run's `denoise` has nothing to
    add."""
    options = {k: v for k, v in options.items() if k != "denoise"}
    chosen = options.pop("sigmas", None)
    if chosen is None:
        steps = SPEC.default_steps if steps is None else steps
        grid = karras_sigmas(schedule.sigma_max, schedule.sigma_min, steps + 1)[:-1]
    else:
        grid = torch.tensor([schedule.sigma_max, *below_sigma_1(chosen, schedule, steps)])
    grid = snap(grid)
    return Fitted(grid, len(grid), {**options, "sigma_min": schedule.sigma_min, "clip": DATA_RANGE})


def below_sigma_1(chosen, schedule: Schedule, steps: int | None) -> list[float]:
    """The chosen sigmas after sigma_1 (a number or a list), checked: falling, between sigma_L
    and sigma_1, and one fewer than `steps` where a budget is given."""
    chosen = [float(v) for v in (chosen if isinstance(chosen, list) else [chosen])]
    if steps is not None and len(chosen) != steps - 1:
        raise FieldError("sigmas", f"{len(chosen)} sigma{'s' * (len(chosen) != 1)} below "
                                   f"sigma_1 make {len(chosen) + 1} evaluations, not {steps}; "
                                   f"give {steps - 1} for {steps}")
    top, bottom = schedule.sigma_max, schedule.sigma_min
    if any(not (bottom < v < top) for v in chosen):
        raise FieldError("sigmas", f"must each lie between sigma_L = {bottom:g} and sigma_1 = "
                                   f"{top:g}, got {chosen}")
    if any(b >= a for a, b in zip(chosen, chosen[1:], strict=False)):
        raise FieldError("sigmas", f"must fall from one step to the next, got {chosen}")
    return chosen


DATA_RANGE = (0.0, 1.0)  # pegasus's images


SPEC = SamplerSpec(
    name="consistency",
    summary="multistep consistency sampling (Song et al. 2023) of a consistency-tuned run "
            "(pegasus tune, ECT): 1 to N evaluations, renoising between them",
    function=consistency_sampler, fit=fit, default_steps=2, start="normal",
    stochastic=lambda options, sigmas: len(sigmas) > 1, fixed=("sigma_min", "clip"),
    grid_options=(("sigmas", "numbers"),),
    learns="consistency", inpaints=True, max_steps=MAX_STEPS)
