"""Annealed Langevin dynamics (ALS: NCSNv2 Algorithm 1 with the final denoising step).

The Langevin update exists once: the chain always runs one step function over static buffers,
and a `capture` (graphs.py) turns that step into its CUDA-graph replay on a GPU (no capture: the
step itself, eagerly).
"""

from __future__ import annotations

import torch

from pegasus.noise.schedule import Schedule, geometric_sigmas, langevin_step_sizes
from pegasus.noise.streams import gaussian_noise_sampler
from pegasus.noise.techniques import choose_eps
from pegasus.samplers.spec import Fitted, SamplerSpec, Snap, enough
from pegasus.signatures import Callback, Capture, NoiseSampler, ScoreFn


class _ChainTensors:
    """What a chain needs, on the device before the loop starts (no per-step transfer):
    the sigmas, alpha_i, sqrt(2 alpha_i), and each sigma repeated per sample."""

    def __init__(self, sigmas: torch.Tensor, eps: float, x: torch.Tensor) -> None:
        self.sigmas = sigmas.to(device=x.device, dtype=x.dtype)
        self.levels = len(self.sigmas)
        self.step_sizes = langevin_step_sizes(self.sigmas, eps)
        self.noise_scales = (2.0 * self.step_sizes).sqrt()
        # Contiguous, not an expanded view: a compiled network guards on strides, and the final
        # denoising step's sigma with stride 0 would compile the network a second time.
        self.per_sample = self.sigmas[:, None].expand(-1, x.shape[0]).contiguous()

    def report(self, callback: Callback | None, x: torch.Tensor, level: int, step: int,
               index: int) -> None:
        if callback is not None:
            callback({"x": x, "level": level, "step": step, "index": index,
                      "sigma": self.sigmas[level]})

    def tweedie(self, score_fn: ScoreFn, x: torch.Tensor, callback: Callback | None,
                steps_per_level: int, index: int) -> None:
        """The final denoising step, in place: x <- x + sigma_L^2 s(x, sigma_L)."""
        x.addcmul_(score_fn(x, self.per_sample[-1]), self.sigmas[-1].square())
        self.report(callback, x, self.levels - 1, steps_per_level, index)


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
    capture: Capture | None = None,
) -> torch.Tensor:
    """Run T Langevin steps at each sigma_i, largest first, from x; return the final sample.

    Each step is x <- x + alpha_i s(x, sigma_i) + sqrt(2 alpha_i) z with
    alpha_i = eps sigma_i^2 / sigma_L^2. With `denoise`, one last Tweedie step
    x <- x + sigma_L^2 s(x, sigma_L) removes the remaining sigma_L noise (NCSNv2 sec. 3.4;
    CIFAR-10 FID 31.75 -> 10.87). That makes L*T + 1 evaluations of `score_fn`.

    Noise comes from `noise_sampler` when given (noise interpolation and per-image streams
    supply their own), else from a standard normal stream seeded by `generator`. The callback
    receives {"x", "level", "step", "index", "sigma"}; `sigma` is a 0-d device tensor, so a
    callback that only counts calls (a progress bar) costs no synchronisation.

    The step reads its sigma, step size and noise from static tensors refilled before each call.
    `capture` turns it into a replay once (fastpath/graphs.py: `cuda_graph_capture`, or
    `default_capture(device)`); its warm-up runs are undone, so every capture gives the same
    chain as none.
    """
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    chain = _ChainTensors(sigmas, eps, x)
    state, noise = x.clone(), torch.zeros_like(x)
    sigma, alpha, scale = (chain.per_sample[0].clone(), chain.step_sizes[0].clone(),
                           chain.noise_scales[0].clone())

    def step() -> None:
        state.addcmul_(score_fn(state, sigma), alpha).addcmul_(noise, scale)

    run = step if capture is None else _captured(step, capture, state)
    index = 0
    for level in range(chain.levels):
        sigma.copy_(chain.per_sample[level])
        alpha.copy_(chain.step_sizes[level])
        scale.copy_(chain.noise_scales[level])
        for t in range(steps_per_level):
            noise.copy_(noise_sampler())
            run()
            chain.report(callback, state, level, t, index)
            index += 1
    if denoise:
        chain.tweedie(score_fn, state, callback, steps_per_level, index)
    return state


def _captured(step, capture: Capture, state: torch.Tensor):
    """`step`'s replay, with the state its capture's warm-up runs moved put back."""
    start = state.clone()
    run = capture(step)
    state.copy_(start)
    return run


def fit(schedule: Schedule, steps: int | None, options: dict, snap: Snap) -> Fitted:
    """The run's own schedule by default; within a budget, as many of its levels as fit at its
    T steps each, with eps chosen again by Technique 4 for the coarser ratio between them."""
    t, denoise = schedule.steps_per_level, options["denoise"]
    if steps is None:
        return Fitted(schedule.sigmas(), schedule.evaluations,
                      {"steps_per_level": t, "eps": schedule.eps, **options})
    levels = min((steps - int(denoise)) // t, schedule.levels)
    enough("als", levels, 2 * t + int(denoise), steps)
    grid = snap(geometric_sigmas(schedule.sigma_max, schedule.sigma_min, levels))
    eps = choose_eps((schedule.sigma_max / schedule.sigma_min) ** (1 / (len(grid) - 1)),
                     schedule.sigma_min, t)
    return Fitted(grid, len(grid) * t + int(denoise), {"steps_per_level": t, "eps": eps, **options})


SPEC = SamplerSpec(
    name="als",
    summary="annealed Langevin dynamics, NCSNv2's sampler (Song & Ermon 2020), on the run's "
            "schedule: L levels of T steps and the final denoising step",
    function=annealed_langevin, fit=fit, default_steps=None, start="uniform", inpaints=True,
    captures_steps=True, fixed=("steps_per_level",))
