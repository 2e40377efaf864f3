"""DPM-Solver++(2M) SDE (Lu et al. 2022; the stochastic multistep form with eta = 1) for the
variance-exploding noise of NCSN.

Each step is the exact posterior step of VE noise given the denoised image D (with
ratio = sigma_{i+1} / sigma_i),
    x_{i+1} = ratio^2 x_i + (1 - ratio^2) D + sigma_{i+1} sqrt(1 - ratio^2) z,
the ancestral step that consistent annealed sampling also takes at its default eta, and the
multistep correction adds (1 - ratio^2) / (2 r) (D_i - D_{i-1}), r = h_{i-1} / h_i, h the step in
log sigma (the "midpoint" form). The last step, from sigma_L to 0, is Tweedie's x = D. One
evaluation per grid sigma; it injects noise, so eq. 4 blends its chains.
"""

from __future__ import annotations

import torch

from pegasus.noise.schedule import Schedule
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.samplers.dpmpp_2m import fit_multistep, multistep
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


@torch.no_grad()
def dpmpp_2m_sde(
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
    """From sigmas[0] to sigmas[-1], then (with `denoise`) to sigma = 0, with fresh noise at
    every step from `noise_sampler` (or a standard normal stream seeded by `generator`)."""
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    return multistep(score_fn, x, sigmas, denoise=denoise, callback=callback,
                     noise_sampler=noise_sampler)


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    return fit_multistep("dpmpp-2m-sde", schedule, steps, options, snap, SPEC.default_steps)


SPEC = SamplerSpec(
    name="dpmpp-2m-sde",
    summary="DPM-Solver++(2M) SDE (Lu et al. 2022): the multistep solver with the exact "
            "ancestral noise of each step; stochastic",
    function=dpmpp_2m_sde, fit=fit, default_steps=20, start="normal")
