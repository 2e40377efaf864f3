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
from pegasus.score import ScoreFn

NoiseSampler = Callable[[], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def gaussian_noise_sampler(
    x: torch.Tensor, generator: torch.Generator | None = None
) -> NoiseSampler:
    """Fresh standard normal noise shaped like x at every call, drawn from `generator` into one
    reused buffer (the sampler consumes it before the next call), so no step allocates."""
    buffer = torch.empty_like(x, memory_format=torch.contiguous_format)
    return lambda: torch.randn(buffer.shape, generator=generator, out=buffer)


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
    plan = _ChainPlan(sigmas, eps, x)
    x = x.clone()
    index = 0
    for level in range(plan.levels):
        sigma = plan.per_sample[level]
        for step in range(steps_per_level):
            score = score_fn(x, sigma)
            x.addcmul_(score, plan.step_sizes[level]).addcmul_(noise_sampler(), plan.noise_scales[level])
            plan.report(callback, x, level, step, index)
            index += 1
    if denoise:
        plan.tweedie(score_fn, x, callback, steps_per_level, index)
    return x


class _ChainPlan:
    """What a chain needs, on the device before the loop starts (no per-step transfer):
    the sigmas, alpha_i, sqrt(2 alpha_i), and each sigma repeated per sample."""

    def __init__(self, sigmas: torch.Tensor, eps: float, x: torch.Tensor) -> None:
        self.sigmas = sigmas.to(device=x.device, dtype=x.dtype)
        self.levels = len(self.sigmas)
        self.step_sizes = langevin_step_sizes(self.sigmas, eps)
        self.noise_scales = (2.0 * self.step_sizes).sqrt()
        self.per_sample = self.sigmas[:, None].expand(-1, x.shape[0])

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


Step = Callable[[], None]
Capture = Callable[[Step], Step]


def cuda_graph_capture(step: Step) -> Step:
    """Capture `step` in a CUDA graph and return its replay. Warm-up runs on a side stream first,
    as torch.cuda.graph asks (cuDNN picks its kernels, the caching allocator settles); those runs
    change whatever `step` writes, so the caller restores its buffers afterwards."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


@torch.no_grad()
def annealed_langevin_graphed(
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
    """The chain of `annealed_langevin`, with one Langevin step captured once and replayed for
    all L*T steps (a network evaluation is hundreds of small kernels; a CUDA graph launches them
    as one). The step reads its sigma, step size and noise from static device tensors, refilled
    before each replay from the precomputed schedule and from the same noise stream as the eager
    sampler, so both give the same chain.

    `capture` turns the step into its replay: `cuda_graph_capture` by default on CUDA; off CUDA,
    without one, this is the eager sampler.
    """
    if capture is None:
        if x.device.type != "cuda":
            return annealed_langevin(score_fn, x, sigmas, steps_per_level=steps_per_level, eps=eps,
                                     generator=generator, noise_sampler=noise_sampler,
                                     denoise=denoise, callback=callback)
        capture = cuda_graph_capture
    plan = _ChainPlan(sigmas, eps, x)
    state, noise = x.clone(), torch.zeros_like(x)
    sigma, alpha, scale = (plan.per_sample[0].clone(), plan.step_sizes[0].clone(),
                           plan.noise_scales[0].clone())

    def step() -> None:
        state.addcmul_(score_fn(state, sigma), alpha).addcmul_(noise, scale)

    start = state.clone()
    replay = capture(step)
    state.copy_(start)  # undo the warm-up steps
    del start

    def draw_noise() -> None:
        if noise_sampler is None:
            torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype, out=noise)
        else:
            noise.copy_(noise_sampler())

    index = 0
    for level in range(plan.levels):
        sigma.copy_(plan.per_sample[level])
        alpha.copy_(plan.step_sizes[level])
        scale.copy_(plan.noise_scales[level])
        for t in range(steps_per_level):
            draw_noise()
            replay()
            plan.report(callback, state, level, t, index)
            index += 1
    if denoise:
        plan.tweedie(score_fn, state, callback, steps_per_level, index)
    return state
