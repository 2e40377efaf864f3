"""Blending two Langevin chains by noise interpolation (eq. 4 of the winged-horses text).

A strip of N + 2 images shares one starting point x0. At every Langevin step two standard
normal draws p and q are made per strip and shared by all its columns; column k injects
    cos(theta_k) p + sin(theta_k) q,   theta_k = k pi / (2 (N + 1)),   k = 0 .. N + 1,
for the whole trajectory. cos^2 + sin^2 = 1, so every column is still an exact Langevin chain;
column 0 is the plain chain driven by p, column N + 1 the one driven by q, and the columns
between move smoothly from one to the other (docs/science.md, "Noise interpolation").

A deterministic sampler (the probability-flow ODE) injects no noise to interpolate;
`slerp_strips` blends its starting noise spherically instead, with the same angles.

Classifier guidance makes the ends the classes asked for, which the source text names as its
main limitation: the score gets W * grad_x [cos^2(theta_k) log p(a | x, sigma) +
sin^2(theta_k) log p(b | x, sigma)], so the class weight moves from class a to class b along
the strip together with the noise angle: a ClassGuide (model/guides.py) with the weights of
`endpoint_class_weights`.
"""

from __future__ import annotations

import math

import torch

from pegasus.samplers.plan import SamplerPlan
from pegasus.signatures import Callback, Capture, NoiseSampler, ScoreFn


def interpolation_angles(n: int) -> torch.Tensor:
    """theta_k = k pi / (2 (N + 1)) for k = 0 .. N + 1 (eq. 4), in float64 so that the cosines
    and sines made from them are exact to float64 before any cast."""
    if n < 1:
        raise ValueError(f"N must be at least 1, got {n}")
    return torch.arange(n + 2, dtype=torch.float64) * math.pi / (2 * (n + 1))


class InterpolatedNoise:
    """The noise sampler of a batch of strips laid out as (M * (N + 2), ...), strip-major.

    Each call takes p from `noise_p` and q from `noise_q`, (M, ...) each, one draw per strip,
    and returns cos(theta_k) p + sin(theta_k) q for column k. Stream p is exactly the noise a
    plain sampler of those M chains draws, which is what makes column 0 the plain chain.
    """

    def __init__(self, strips: int, n: int, shape: tuple[int, ...], *, noise_p: NoiseSampler,
                 noise_q: NoiseSampler, device: torch.device, dtype: torch.dtype) -> None:
        theta = interpolation_angles(n)
        view = (1, n + 2) + (1,) * len(shape)
        self.cos = theta.cos().to(device, dtype).view(view)
        self.sin = theta.sin().to(device, dtype).view(view)
        self.noise_p, self.noise_q = noise_p, noise_q
        # Reused at every step: the sampler consumes the noise before the next call.
        self.out = torch.empty((strips, n + 2, *shape), device=device, dtype=dtype)

    def __call__(self) -> torch.Tensor:
        p, q = self.noise_p().unsqueeze(1), self.noise_q().unsqueeze(1)
        torch.mul(self.cos, p, out=self.out).addcmul_(self.sin, q)
        return self.out.view(-1, *self.out.shape[2:])


def endpoint_class_weights(n: int, source: int, target: int, classes: int) -> torch.Tensor:
    """(N + 2, classes): weight cos^2(theta_k) on `source` and sin^2(theta_k) on `target`."""
    theta = interpolation_angles(n)
    w = torch.zeros(n + 2, classes, dtype=torch.float64)
    w[:, source] += theta.cos() ** 2
    w[:, target] += theta.sin() ** 2
    return w.float()


@torch.no_grad()
def blend_strips(
    score_fn: ScoreFn,
    x0: torch.Tensor,
    plan: SamplerPlan,
    *,
    n: int,
    noise_p: NoiseSampler,
    noise_q: NoiseSampler,
    callback: Callback | None = None,
    capture: Capture | None = None,
    per_column: bool = False,
) -> torch.Tensor:
    """Strips (M, N + 2, ...) from starting points x0 (M, ...) by eq. 4 noise interpolation,
    with any sampler that injects noise (`plan.stochastic`); `noise_p` and `noise_q` each give
    (M, ...) standard normal noise per call. With `per_column`, x0 is (M, N + 2, ...): a start
    for each column (two given pictures noised and mixed: tasks/pictures.py).

    `score_fn` sees the strips flattened to (M * (N + 2), ...), strip-major; a guide's class
    weights (model/guides.py) are laid out the same way. `capture` is passed to
    annealed Langevin (a CUDA graph of one step on a GPU gives the same chain).
    """
    if not plan.stochastic:
        raise ValueError(f"eq. 4 interpolates injected noise, and sampler {plan.name!r} injects "
                         f"none here; blend its starting noise instead (slerp)")
    strips, shape = x0.shape[0], tuple(x0.shape[2 if per_column else 1:])
    noise = InterpolatedNoise(strips, n, shape, noise_p=noise_p, noise_q=noise_q,
                              device=x0.device, dtype=x0.dtype)
    x = (x0 if per_column else x0[:, None].expand(strips, n + 2, *shape))
    x = x.reshape(strips * (n + 2), *shape)
    out = plan.run(score_fn, x, noise_sampler=noise, callback=callback, capture=capture)
    return out.view(strips, n + 2, *shape)


@torch.no_grad()
def slerp_strips(
    score_fn: ScoreFn,
    z_p: torch.Tensor,
    z_q: torch.Tensor,
    plan: SamplerPlan,
    *,
    n: int,
    callback: Callback | None = None,
    centre: float | torch.Tensor = 0.5,
) -> torch.Tensor:
    """Strips (M, N + 2, ...) by a deterministic sampler (the probability-flow ODE) from starting
    noise interpolated spherically: column k starts at centre + sigma_1 (cos theta_k z_p +
    sin theta_k z_q), theta_k as in eq. 4, so every start is still a draw of the same Gaussian
    (SamplerPlan.start_point) and columns 0 and N + 1 are the plain chains from z_p and z_q."""
    if plan.stochastic or plan.start != "normal":
        raise ValueError(f"slerp blends the starting noise of a deterministic sampler (heun "
                         f"without churn); {plan.name!r} here is not one")
    strips, shape = z_p.shape[0], tuple(z_p.shape[1:])
    view = (1, n + 2) + (1,) * len(shape)
    theta = interpolation_angles(n)
    cos = theta.cos().to(z_p.device, z_p.dtype).view(view)
    sin = theta.sin().to(z_p.device, z_p.dtype).view(view)
    z = (cos * z_p[:, None] + sin * z_q[:, None]).reshape(strips * (n + 2), *shape)
    out = plan.run(score_fn, plan.start_point(z, z, centre), callback=callback)
    return out.view(strips, n + 2, *shape)
