"""Likelihood by the probability-flow ODE (Song et al. 2021, sec. 4.3, and their appendix D.2):
the change of variables along the ODE, with the divergence of its drift estimated by
Hutchinson's trace estimator, gives an image's exact log density under the model up to the
solver's discretisation and the estimator's noise.

For dx/dsigma = f(x, sigma) = -sigma s(x, sigma),
    log p_sigma_L(x) = log p_sigma_1(x(sigma_1)) + integral from sigma_L to sigma_1 of div f,
    div f = -sigma tr(grad_x s) ~ -sigma eps^T (grad_x s) eps,
with eps a fixed Rademacher vector per image and probe (seeded), integrated by Heun's method on
the run's ODE grid upward, and p_sigma_1 taken as N(centre, sigma_1^2 I), the noisiest marginal
(sigma_1 is far above the data's spread). The density is that of the data blurred by sigma_L, the
smallest noise the model knows.

Bits per dimension of 8-bit images under uniform dequantisation, x = (k + u) / 256 with
u ~ U(0, 1): -log2 p(x) / D + 8, the 8 the log2 of the bin width's 1 / 256 in each dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pegasus import distributed
from pegasus.data import load_held_out, load_images
from pegasus.errors import FieldError
from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, ScoreFn


def log_likelihood(score_fn: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, *,
                   centre: float | torch.Tensor = 0.5, probes: int = 1,
                   generator: torch.Generator | None = None,
                   callback: Callback | None = None) -> torch.Tensor:
    """log p_{sigma_L}(x) in nats, per image, for x (N, ...), along `sigmas` (largest first, the
    grid is walked upward). `probes` Rademacher vectors per image average the trace estimate."""
    grid = sigmas.flip(0).tolist()
    eps = torch.randint(0, 2, (probes, *x.shape), generator=generator, device="cpu")
    eps = (eps.to(x.device, x.dtype) * 2 - 1)
    index = [0]

    def drift_and_divergence(y: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        per_sample = torch.full((len(y),), sigma, device=y.device, dtype=y.dtype)
        with torch.enable_grad():
            y = y.detach().requires_grad_(True)
            s = score_fn(y, per_sample)
            trace = torch.zeros(len(y), device=y.device, dtype=torch.float64)
            for i in range(probes):
                (vjp,) = torch.autograd.grad((s * eps[i]).sum(), y, retain_graph=i < probes - 1)
                trace += (vjp * eps[i]).flatten(1).sum(1).double()
        if callback is not None:
            callback({"x": y, "level": 0, "step": 0, "index": index[0], "sigma": sigma})
        index[0] += 1
        return (-sigma * s).detach(), -sigma * trace / probes

    state, total = x.clone(), torch.zeros(len(x), device=x.device, dtype=torch.float64)
    for sigma, nxt in zip(grid, grid[1:], strict=False):
        d, div = drift_and_divergence(state, sigma)
        proposal = state + (nxt - sigma) * d
        d_next, div_next = drift_and_divergence(proposal, nxt)
        state = state + (nxt - sigma) / 2 * (d + d_next)
        total += (nxt - sigma) / 2 * (div + div_next)
    top = grid[-1]
    dim = x[0].numel()
    prior = (-0.5 * (state - centre).double().square().flatten(1).sum(1) / top**2
             - 0.5 * dim * math.log(2 * math.pi * top**2))
    return prior + total


@dataclass
class Likelihood:
    bits_per_dim: float
    standard_error: float  # over images
    num: int
    evaluations: int  # network evaluations (with their backward passes) per image and probe
    probes: int
    images: str  # which images
    sigma_min: float

    def describe(self) -> str:
        return (f"NLL {self.bits_per_dim:.4f} ± {self.standard_error:.4f} bits/dim on {self.num} "
                f"{self.images}, 8-bit pixels uniformly dequantised, the density of the data "
                f"blurred by sigma_L = {self.sigma_min:g}; probability-flow ODE by Heun, "
                f"{self.evaluations} evaluations, Hutchinson's estimator with {self.probes} "
                f"Rademacher probe(s) per image")


def bits_per_dim(log_p: torch.Tensor, dim: int) -> torch.Tensor:
    """-log2 p(x) / D + 8 for images of D dimensions in [0, 1], dequantised 8-bit pixels."""
    return -log_p / (dim * math.log(2)) + 8


def evaluate_likelihood(trained, plan: SamplerPlan, *, num: int, seed: int = 0, probes: int = 1,
                        batch_size: int = 64, progress=None,
                        ctx: distributed.Context | None = None) -> Likelihood:
    """The mean bits per dimension of `num` images of the run's data, dequantised with seeded
    noise: held-out images where the run has them (data.load_held_out), else the training
    images. Batch b's probes come from a generator of its own (seed, b), so that under torchrun
    (`ctx` of several ranks), each rank taking its share of the batches, every image gets the
    figure one process gives it."""
    ctx = ctx or distributed.alone(trained.device)
    if num < 2:
        raise FieldError("num", f"must be at least 2 for a standard error, got {num}")
    if not plan.spec.reversible:
        raise FieldError("sampler", f"{plan.name} is not an ODE solver; the likelihood takes the "
                                    f"probability-flow ODE (heun)")
    images, which = load_held_out(trained.config.data, per_class=num).images, "held-out images"
    if not len(images):
        images, which = load_images(trained.config.data).images, "training images"
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:num]
    g = torch.Generator().manual_seed(seed)
    x = (images[pick].double() + torch.rand(images[pick].shape, generator=g, dtype=torch.float64))
    chunks = list((x / 256).float().split(batch_size))
    lo, hi = distributed.share(ctx, len(chunks))
    evaluations = 2 * (len(plan.sigmas) - 1)
    callback = progress("likelihood", evaluations * (hi - lo)) if progress else None
    # One dtype on every rank, a rank without a batch included: the gather needs it.
    values = [torch.empty(0, dtype=torch.float64)]
    for b in range(lo, hi):
        probe_seeds = torch.Generator().manual_seed(seed * 1_000_003 + b)
        log_p = log_likelihood(trained.model, chunks[b].to(trained.device), plan.sigmas,
                               centre=trained.centre, probes=probes, generator=probe_seeds,
                               callback=callback)
        values.append(bits_per_dim(log_p, chunks[b][0].numel()).double().cpu())
    bpd = distributed.gather_rows(ctx, torch.cat(values))
    return Likelihood(float(bpd.mean()), float(bpd.std() / math.sqrt(len(bpd))), len(bpd),
                      evaluations, probes, which, trained.schedule.sigma_min)
