"""Predictor-corrector sampling (Song et al. 2021, "Score-based generative modeling through
SDEs", Algorithms 2 and 4) for the variance-exploding SDE of NCSN.

At each sigma_i: Langevin corrector steps whose step size follows a signal-to-noise ratio r,
eps = 2 (r ||z|| / ||s||)^2, then the reverse-diffusion predictor
    x <- x + (sigma_i^2 - sigma_{i+1}^2) s(x, sigma_i) + sqrt(sigma_i^2 - sigma_{i+1}^2) z,
with sigma_{L+1} = 0 after the last level, where the predictor adds no noise and is exactly the
Tweedie denoising step.

The paper's code measures ||z|| and ||s|| on the batch (their means). Here the rule uses their
expectations under the noise at sigma_i, ||z||^2 = D and ||s||^2 = D / sigma_i^2, so
eps_i = 2 r^2 sigma_i^2: the same step where the score is dominated by the noise (as it is at
every level in high dimension), and one that depends neither on the other images of a batch
(image i stays the same whatever the batch) nor on the state (a step size that follows ||s(x)||
per image biases Langevin dynamics, which low-dimensional tests show plainly).
"""

from __future__ import annotations

import torch

from pegasus.noise.schedule import Schedule, geometric_sigmas
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


@torch.no_grad()
def predictor_corrector(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    snr: float = 0.16,
    corrector_steps: int = 1,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """L grid of (corrector_steps + 1) evaluations each; without `denoise` the last
    (noise-free) predictor step is left out."""
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    grid = sigmas.tolist()
    x = x.clone()
    calls = ScoreCalls(score_fn, x, grid, callback)

    def score(sigma: float, level: int, step: int) -> torch.Tensor:
        return calls(x, sigma, level, step)

    for i, sigma in enumerate(grid):
        eps = 2 * (snr * sigma) ** 2
        for c in range(corrector_steps):
            x.add_(score(sigma, i, c), alpha=eps).add_(noise_sampler(), alpha=(2 * eps) ** 0.5)
        last = i == len(grid) - 1
        if last and not denoise:
            break
        variance = sigma**2 - (0.0 if last else grid[i + 1] ** 2)
        x.add_(score(sigma, i, corrector_steps), alpha=variance)
        if not last:
            x.add_(noise_sampler(), alpha=variance**0.5)
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """n geometric levels of (corrector_steps + 1) evaluations each; without denoising the last
    predictor step is left out."""
    steps = SPEC.default_steps if steps is None else steps
    denoise, per_level = options["denoise"], options.get("corrector_steps", 1) + 1
    n = steps // per_level if denoise else (steps + 1) // per_level
    enough("pc", n, 2 * per_level, steps)
    grid = snap(geometric_sigmas(schedule.sigma_max, schedule.sigma_min, n))
    return Fitted(grid, len(grid) * per_level - (not denoise), options)


SPEC = SamplerSpec(
    name="pc",
    summary="reverse-diffusion predictor and Langevin corrector for the variance-exploding SDE "
            "(Song et al. 2021)",
    function=predictor_corrector, fit=fit, default_steps=200, start="normal", inpaints=True)
