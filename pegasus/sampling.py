"""Annealed Langevin dynamics (NCSNv2 Algorithm 1 with the final denoising step).

Samplers are pure functions over an explicit sigma tensor, k-diffusion style: they take the
score function, the starting point, the sigmas, a seeded generator (or a noise sampler) and an
optional callback, and they never read anything back to the host inside the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from pegasus.schedule import langevin_step_sizes

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
NoiseSampler = Callable[[], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def gaussian_noise_sampler(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> NoiseSampler:
    """Fresh standard normal noise shaped like x at every call, drawn from `generator`."""
    shape, device, dtype = x.shape, x.device, x.dtype
    return lambda: torch.randn(shape, generator=generator, device=device, dtype=dtype)


def uniform_prior(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The starting point of annealed Langevin: uniform noise in [0, 1] (NOTES.md)."""
    return torch.rand(tuple(shape), generator=generator, device=device)


@torch.no_grad()
def annealed_langevin(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    steps_per_level: int,
    eps: float,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    denoise: bool = True,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run T Langevin steps at each sigma_i, largest first, from x; return the final sample.

    Each step is x <- x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z with
    alpha_i = eps sigma_i^2 / sigma_L^2. With `denoise`, one last Tweedie step
    x <- x + sigma_L^2 s(x, sigma_L) removes the remaining sigma_L noise (NCSNv2 sec. 3.4;
    CIFAR-10 FID 31.75 -> 10.87). That makes L*T + 1 evaluations of `score_fn`.

    Noise comes from `noise_sampler` when given (noise interpolation supplies its own), else
    from a standard normal stream seeded by `generator`. The callback receives
    {"x", "level", "step", "index", "sigma"}; `sigma` is a 0-d device tensor, so a callback that
    only counts calls (a progress bar) costs no synchronisation.
    """
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    sigmas = sigmas.to(device=x.device, dtype=x.dtype)
    # Everything the loop needs lives on the device before it starts: no per-step transfer.
    step_sizes = langevin_step_sizes(sigmas, eps)
    noise_scales = (2.0 * step_sizes).sqrt()
    per_sample_sigmas = sigmas[:, None].expand(-1, x.shape[0])
    x = x.clone()
    index = 0
    for level in range(len(sigmas)):
        sigma = per_sample_sigmas[level]
        for step in range(steps_per_level):
            score = score_fn(x, sigma)
            x.addcmul_(score, step_sizes[level]).addcmul_(noise_sampler(), noise_scales[level])
            if callback is not None:
                callback({"x": x, "level": level, "step": step, "index": index, "sigma": sigmas[level]})
            index += 1
    if denoise:
        x.addcmul_(score_fn(x, per_sample_sigmas[-1]), sigmas[-1].square())
        if callback is not None:
            callback({"x": x, "level": len(sigmas) - 1, "step": steps_per_level, "index": index,
                      "sigma": sigmas[-1]})
    return x
