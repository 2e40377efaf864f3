"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
Probabilistic Models", Algorithm 2, multistep second order) for the variance-exploding noise of
NCSN: the probability-flow ODE written for the denoised image D(x, sigma) = x + sigma^2 s(x, sigma)
in the time lambda = -log sigma.

With h = log(sigma_i / sigma_{i+1}), the exact solution over a step with D held fixed is
    x_{i+1} = (sigma_{i+1} / sigma_i) x_i + (1 - sigma_{i+1} / sigma_i) D,
and the multistep method puts in for D its linear extrapolation from this step's and the last
step's denoised images, (1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1} / h_i (first order at the
first step). The last step, from sigma_L to 0, is x = D(x, sigma_L): Tweedie's denoising step.
One network evaluation per grid sigma, none wasted; deterministic, so it blends by slerp.
"""

from __future__ import annotations

import math

import torch

from pegasus.noise.schedule import Schedule, geometric_sigmas, karras_sigmas
from pegasus.samplers.calls import ScoreCalls
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, NoiseSampler, ScoreFn

GRIDS = ("log-uniform", "karras")


def multistep(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, *, denoise: bool,
              callback: Callback | None, noise_sampler: NoiseSampler | None = None) -> torch.Tensor:
    """DPM-Solver++(2M), or with `noise_sampler` its SDE form (dpmpp_2m_sde.py): the same
    denoised images, each step's update and noise by the form's own rule."""
    grid = sigmas.tolist()
    calls = ScoreCalls(score_fn, x, grid, callback)
    x = x.clone()
    targets = grid[1:] + ([0.0] if denoise else [])
    last_denoised, last_h = None, None
    for i, (sigma, nxt) in enumerate(zip(grid, targets, strict=False)):
        denoised = calls(x, sigma, i, 0).mul_(sigma**2).add_(x)
        if nxt == 0:
            return denoised
        h = math.log(sigma / nxt)
        # The ODE: x <- ratio x + (1 - ratio) D; the SDE: x <- ratio^2 x + (1 - ratio^2) D +
        # sigma_{i+1} sqrt(1 - ratio^2) z. Both correct D by (D_i - D_{i-1}) / (2 r).
        keep = nxt / sigma if noise_sampler is None else (nxt / sigma) ** 2
        target = denoised
        if last_denoised is not None:
            target = denoised + (denoised - last_denoised) * (0.5 * h / last_h)
        x.mul_(keep).add_(target, alpha=1 - keep)
        if noise_sampler is not None:
            x.add_(noise_sampler(), alpha=nxt * math.sqrt(1 - keep))
        last_denoised, last_h = denoised, h
    return x


@torch.no_grad()
def dpmpp_2m(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    grid: str = "log-uniform",
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """From sigmas[0] to sigmas[-1], then (with `denoise`) to sigma = 0: one evaluation per
    sigma. `grid` names the grid the plan laid (the function walks `sigmas` as given)."""
    return multistep(score_fn, x, sigmas, denoise=denoise, callback=callback)


def grid_of(name: str, schedule: Schedule, n: int) -> torch.Tensor:
    """n sigmas from sigma_1 to sigma_L: uniform in log sigma (DPM-Solver's uniform steps in
    lambda), or Karras's (rho = 7, more steps at small sigma)."""
    if name == "karras":
        return karras_sigmas(schedule.sigma_max, schedule.sigma_min, n)
    return geometric_sigmas(schedule.sigma_max, schedule.sigma_min, n)


def fit_multistep(name: str, schedule: Schedule, steps: int | None, options: dict, snap: Snap,
                  default: int) -> Fitted:
    """n grid sigmas cost n evaluations with the step to 0, n - 1 without it."""
    options = {"grid": "log-uniform", **options}
    if options["grid"] not in GRIDS:
        from pegasus.errors import FieldError

        raise FieldError("grid", f"must be {' or '.join(GRIDS)}, got {options['grid']!r}")
    steps = default if steps is None else steps
    n = steps if options["denoise"] else steps + 1
    enough(name, n, 2 if options["denoise"] else 1, steps)
    sigmas = snap(grid_of(options["grid"], schedule, n))
    return Fitted(sigmas, len(sigmas) - (not options["denoise"]), options)


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    return fit_multistep("dpmpp-2m", schedule, steps, options, snap, SPEC.default_steps)


SPEC = SamplerSpec(
    name="dpmpp-2m",
    summary="DPM-Solver++(2M) (Lu et al. 2022): the probability-flow ODE by a second-order "
            "multistep method in log sigma, one evaluation a step; deterministic",
    function=dpmpp_2m, fit=fit, default_steps=20, start="normal",
    stochastic=lambda options, sigmas: False, reversible=True)
