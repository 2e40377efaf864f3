"""Consistent annealed sampling (Jolicoeur-Martineau et al. 2021, "Adversarial score matching
and improved sampling for image generation", Algorithm 2).

Annealed Langevin's noise does not shrink in step with sigma: after its steps at sigma_i the
sample's noise is not sigma_{i+1}. CAS takes one step per level with alpha_i = eta sigma_i^2
and adds beta sigma_{i+1} z, with beta chosen so that the noise is exactly sigma_{i+1} when the
score is exact:  (1 - eta)^2 sigma_i^2 + beta^2 sigma_{i+1}^2 = sigma_{i+1}^2, i.e.
    beta = sqrt(1 - ((1 - eta) / gamma)^2),   gamma = sigma_{i+1} / sigma_i,
with sigma_{L+1} = 0 (the last level adds no noise). Consistency needs 1 - eta <= gamma. The
default eta = 1 - gamma^2 makes each step the variance-exploding ancestral step.
"""

from __future__ import annotations

import math

import torch

from pegasus.errors import FieldError
from pegasus.noise.schedule import Schedule, geometric_sigmas
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


def consistent_eta(sigmas: torch.Tensor) -> float:
    """The default eta = 1 - gamma^2, gamma the smallest ratio sigma_{i+1} / sigma_i."""
    ratios = (sigmas[1:] / sigmas[:-1]).double()
    return 1 - float(ratios.min()) ** 2


def eta_problem(grid: list[float], eta: float) -> str | None:
    """Why `eta` is not consistent on this grid of sigmas (1 - eta <= gamma, the smallest ratio
    sigma_{i+1} / sigma_i, and 0 < eta <= 1), or None: the one statement of the rule, checked
    by the plan before any work and by the function for its own callers."""
    smallest = min(b / a for a, b in zip(grid, grid[1:], strict=False))
    if 0 < eta <= 1 and 1 - eta <= smallest + 1e-12:
        return None
    return (f"eta must be in (1 - gamma, 1] = ({1 - smallest:.4g}, 1] on these {len(grid)} "
            f"levels, got {eta}")


@torch.no_grad()
def consistent_annealed(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float | None = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """One step per level (L evaluations) and, with `denoise`, a final Tweedie step."""
    grid = sigmas.tolist()
    eta = consistent_eta(sigmas) if eta is None else eta
    if (problem := eta_problem(grid, eta)) is not None:
        raise ValueError(problem)
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    x = x.clone()
    score = ScoreCalls(score_fn, x, grid, callback)
    for i, sigma in enumerate(grid + ([grid[-1]] if denoise else [])):
        tweedie = i == len(grid)
        s = score(x, sigma, min(i, len(grid) - 1), int(tweedie))
        if tweedie:
            x.add_(s, alpha=sigma**2)
            break
        x.add_(s, alpha=eta * sigma**2)
        if i + 1 < len(grid):
            gamma = grid[i + 1] / sigma
            beta = math.sqrt(max(0.0, 1 - ((1 - eta) / gamma) ** 2))
            x.add_(noise_sampler(), alpha=beta * grid[i + 1])
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """n geometric levels of one evaluation each, and one more for the denoising step."""
    steps = SPEC.default_steps if steps is None else steps
    denoise = options["denoise"]
    n = steps - int(denoise)
    enough("cas", n, 2 + int(denoise), steps)
    grid = snap(geometric_sigmas(schedule.sigma_max, schedule.sigma_min, n))
    if options.get("eta") is not None and (problem := eta_problem(grid.tolist(), options["eta"])):
        raise FieldError("sampler", f"cas's {problem}")
    return Fitted(grid, len(grid) + int(denoise), options)


SPEC = SamplerSpec(
    name="cas",
    summary="consistent annealed sampling (Jolicoeur-Martineau et al. 2021): one step per level, "
            "its noise exactly the next level's",
    function=consistent_annealed, fit=fit, default_steps=200, start="normal")
