"""Heun's method on the probability-flow ODE (Karras et al. 2022, "EDM", Algorithm 2), for the
variance-exploding noise of NCSN: sigma(t) = t, so the ODE is dx/dsigma = -sigma s(x, sigma).

It starts from a draw of the noisiest marginal, centre + sigma_1 z (SamplerPlan.start_point),
not from annealed Langevin's uniform noise: an ODE transports a distribution exactly and cannot
mix its way out of a wrong start, while Langevin steps at sigma_1 forget where they began. The
sigma grid is Karras's (rho = 7: steps concentrate at small sigma, where the images form). The
last step is an Euler step from sigma_L to 0, which is exactly the Tweedie denoising step
x + sigma_L^2 s(x, sigma_L).
Optional stochastic churn (EDM's S_churn, S_min, S_max, S_noise) adds noise before a step and
makes the sampler stochastic (and so able to blend by eq. 4).
"""

from __future__ import annotations

import math

import torch

from pegasus.noise.schedule import Schedule, karras_sigmas
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


@torch.no_grad()
def heun_sampler(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    churn: float = 0.0,
    s_min: float = 0.0,
    s_max: float = math.inf,
    s_noise: float = 1.0,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Integrate the probability-flow ODE from sigmas[0] to sigmas[-1] with Heun steps, then
    (with `denoise`) one Euler step to sigma = 0. 2 (n - 1) + 1 evaluations for n sigmas.

    With churn > 0, each step whose sigma lies in [s_min, s_max] first raises the noise level
    to sigma (1 + gamma), gamma = min(churn / n, sqrt 2 - 1), by adding fresh noise (times
    s_noise); the raised sigma never exceeds sigmas[0], the largest level the network knows.
    """
    if churn > 0 and noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    grid = sigmas.tolist()  # the grid is known up front: no host read inside the loop
    n = len(grid)
    hats = []  # each step's raised sigma (the level itself without churn)
    top = max(grid)  # a grid may run upward too: encoding an image (tasks/encode.py)
    for sigma in grid[:-1]:
        gamma = min(churn / n, math.sqrt(2) - 1) if churn > 0 and s_min <= sigma <= s_max else 0.0
        hats.append(min(sigma * (1 + gamma), top))
    score = ScoreCalls(score_fn, x, grid + hats, callback)
    x = x.clone()

    def derivative(state: torch.Tensor, sigma: float, level: int, step: int) -> torch.Tensor:
        return score(state, sigma, level, step).mul_(-sigma)

    for i in range(n - 1):
        sigma, nxt, hat = grid[i], grid[i + 1], hats[i]
        if hat > sigma:
            x.add_(noise_sampler(), alpha=s_noise * math.sqrt(hat**2 - sigma**2))
        d = derivative(x, hat, i, 0)
        proposal = x + (nxt - hat) * d
        d_next = derivative(proposal, nxt, i, 1)
        x.add_(d.add_(d_next), alpha=(nxt - hat) / 2)
    if denoise:
        x.add_(derivative(x, grid[-1], n - 1, 0), alpha=-grid[-1])
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """n Karras sigmas cost 2 (n - 1) evaluations, and one more for the denoising step."""
    steps = SPEC.default_steps if steps is None else steps
    denoise = options["denoise"]
    n = (steps + 1) // 2 if denoise else steps // 2 + 1
    enough("heun", n, 3, steps)
    grid = snap(karras_sigmas(schedule.sigma_max, schedule.sigma_min, n))
    return Fitted(grid, 2 * (len(grid) - 1) + int(denoise), options)


SPEC = SamplerSpec(
    name="heun",
    summary="the probability-flow ODE by Heun's method on a Karras grid (EDM, Karras et al. "
            "2022); deterministic unless churn > 0",
    function=heun_sampler, fit=fit, default_steps=35, start="normal",
    stochastic=lambda options, sigmas: options.get("churn", 0.0) > 0, reversible=True)
