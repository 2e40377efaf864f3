"""iPNDM (Zhang & Chen 2023, "Fast sampling of diffusion models with exponential integrator",
the improved pseudo numerical method of Liu et al. 2022): the probability-flow ODE
dx/dsigma = (x - D(x, sigma)) / sigma = -sigma s(x, sigma) by Adams-Bashforth steps on a Karras
grid, one network evaluation a step, training-free.

Each step combines the derivatives d of the last steps with Adams-Bashforth's fixed weights:
order 1 d_i; 2 (3 d_i - d_{i-1}) / 2; 3 (23 d_i - 16 d_{i-1} + 5 d_{i-2}) / 12; 4 (55 d_i -
59 d_{i-1} + 37 d_{i-2} - 9 d_{i-3}) / 24, the order rising as the history fills (at most
`order`). The last evaluation, at sigma_L, also gives the denoising step x + sigma_L^2 s (as
dpmpp-2m's does), so n grid sigmas cost n evaluations. It starts from centre + sigma_1 z like
the other ODE solvers; deterministic, so it blends by slerp.
"""

from __future__ import annotations

import torch

from pegasus.errors import FieldError
from pegasus.noise.schedule import Schedule, karras_sigmas
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, NoiseSampler, ScoreFn

# Adams-Bashforth's weights by order, newest derivative first.
WEIGHTS = ((1.0,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12),
           (55 / 24, -59 / 24, 37 / 24, -9 / 24))


@torch.no_grad()
def ipndm(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    order: int = 4,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """From sigmas[0] to sigmas[-1] by Adams-Bashforth steps of at most `order` (1 to 4), then
    (with `denoise`) to sigma = 0 by the last evaluation's Tweedie step."""
    if order not in (1, 2, 3, 4):
        raise FieldError("sampler", f"ipndm's order must be 1, 2, 3 or 4, got {order}")
    grid = sigmas.tolist()
    calls = ScoreCalls(score_fn, x, grid, callback)
    x = x.clone()
    history: list[torch.Tensor] = []  # the last derivatives, newest first
    for i, (sigma, nxt) in enumerate(zip(grid[:-1], grid[1:], strict=True)):
        history.insert(0, calls(x, sigma, i, 0).mul_(-sigma))
        del history[order:]
        weights = WEIGHTS[len(history) - 1]
        for weight, d in zip(weights, history, strict=True):
            x.add_(d, alpha=(nxt - sigma) * weight)
    if denoise:
        x.add_(calls(x, grid[-1], len(grid) - 1, 0), alpha=grid[-1] ** 2)
    return x


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """n Karras sigmas cost n - 1 evaluations, and one more for the denoising step."""
    steps = SPEC.default_steps if steps is None else steps
    n = steps if options["denoise"] else steps + 1
    enough("ipndm", n, 2 if options["denoise"] else 1, steps)
    grid = snap(karras_sigmas(schedule.sigma_max, schedule.sigma_min, n))
    return Fitted(grid, len(grid) - 1 + int(options["denoise"]), options)


SPEC = SamplerSpec(
    name="ipndm",
    summary="iPNDM (Zhang & Chen 2023): the probability-flow ODE by Adams-Bashforth steps of up "
            "to 4th order on a Karras grid, one evaluation a step; deterministic",
    function=ipndm, fit=fit, default_steps=10, start="normal",
    stochastic=lambda options, sigmas: False)
