"""Annealed Langevin dynamics (NCSNv2 Algorithm 1 with the final denoising step), the seeded
per-image noise streams it draws from, and `sample_images`, which draws a run's images.

Samplers are pure functions over an explicit sigma tensor, k-diffusion style: they take the
score function, the starting point, the sigmas, a seeded generator (or a noise sampler) and an
optional callback, and they never read anything back to the host inside the loop. The Langevin
update exists once: the chain always runs one step function over static buffers, and a
`capture` turns that step into its CUDA-graph replay on a GPU (no capture: the step itself).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence

import torch

from pegasus.schedule import Schedule, langevin_step_sizes
from pegasus.signatures import Callback, NoiseSampler, ScoreFn

Step = Callable[[], None]
Capture = Callable[[Step], Step]


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


def image_seed(seed: int, index: int, stream: int = 0) -> int:
    """The seed of image `index`'s own generator: a hash of (seed, stream, index), so that
    neighbouring seeds and indices give unrelated streams."""
    digest = hashlib.blake2b(f"pegasus/{seed}/{stream}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


class ImageStreams:
    """One seeded generator per image: images first .. first + count - 1 of `seed`.

    Image i's starting point and its noise at every step come from its own generator alone, so
    an image does not depend on how many images are drawn or how they are batched: the first 4
    of 64 are the 4 of a request for 4 (diffusers and k-diffusion seed per sample for the same
    reason). `stream` tells apart independent families of streams of one seed (eq. 4's p and q).
    """

    def __init__(self, seed: int, first: int, count: int, device: torch.device | str,
                 stream: int = 0) -> None:
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(image_seed(seed, i, stream))
                           for i in range(first, first + count)]

    def prior(self, shape: Sequence[int]) -> torch.Tensor:
        """Each image's uniform starting point, from its own generator."""
        x = torch.empty((len(self.generators), *shape), device=self.device)
        for row, g in zip(x, self.generators, strict=True):
            torch.rand(tuple(shape), generator=g, device=self.device, out=row)
        return x

    def noise_sampler(self, shape: Sequence[int]) -> NoiseSampler:
        """Standard normal noise for the batch, each row from its image's generator, into one
        reused buffer."""
        buffer = torch.empty((len(self.generators), *shape), device=self.device)
        rows = list(buffer)

        def draw() -> torch.Tensor:
            for row, g in zip(rows, self.generators, strict=True):
                torch.randn(row.shape, generator=g, device=self.device, out=row)
            return buffer

        return draw


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


def default_capture(device: torch.device | str) -> Capture | None:
    """A CUDA graph on a GPU (a network evaluation is hundreds of small kernels; a graph
    launches them as one); nothing elsewhere."""
    return cuda_graph_capture if torch.device(device).type == "cuda" else None


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
    `capture` turns it into a replay once (`cuda_graph_capture`, or `default_capture(device)`);
    its warm-up runs are undone, so every capture gives the same chain as none.
    """
    if noise_sampler is None:
        noise_sampler = gaussian_noise_sampler(x, generator)
    plan = _ChainPlan(sigmas, eps, x)
    state, noise = x.clone(), torch.zeros_like(x)
    sigma, alpha, scale = (plan.per_sample[0].clone(), plan.step_sizes[0].clone(),
                           plan.noise_scales[0].clone())

    def step() -> None:
        state.addcmul_(score_fn(state, sigma), alpha).addcmul_(noise, scale)

    if capture is None:
        run = step
    else:
        start = state.clone()
        run = capture(step)
        state.copy_(start)  # undo the warm-up steps
        del start

    index = 0
    for level in range(plan.levels):
        sigma.copy_(plan.per_sample[level])
        alpha.copy_(plan.step_sizes[level])
        scale.copy_(plan.noise_scales[level])
        for t in range(steps_per_level):
            noise.copy_(noise_sampler())
            run()
            plan.report(callback, state, level, t, index)
            index += 1
    if denoise:
        plan.tweedie(score_fn, state, callback, steps_per_level, index)
    return state


def sample_images(
    score_fn: ScoreFn,
    schedule: Schedule,
    *,
    num: int,
    res: int,
    seed: int,
    device: torch.device | str = "cpu",
    channels: int = 3,
    callback: Callback | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """`num` samples by annealed Langevin from uniform noise, in [0, 1]. Image i comes from its
    own seeded stream (`ImageStreams`), so it is the same whatever `num` and `batch_size`.
    `batch_size` None means all at once on CPU and, on a GPU, the largest batch that fits
    (`fill_gpu_batch_size`). On a GPU each step is replayed as a CUDA graph."""
    device = torch.device(device)
    shape = (channels, res, res)
    sigmas = schedule.sigmas(device)
    if batch_size is None:
        batch_size = fill_gpu_batch_size(score_fn, shape, device) if device.type == "cuda" else num
    chunks = []
    for first in range(0, num, batch_size):
        streams = ImageStreams(seed, first, min(batch_size, num - first), device)
        chunks.append(annealed_langevin(
            score_fn, streams.prior(shape), sigmas, steps_per_level=schedule.steps_per_level,
            eps=schedule.eps, noise_sampler=streams.noise_sampler(shape), denoise=schedule.denoise,
            callback=callback, capture=default_capture(device),
        ).clamp_(0, 1))
    return torch.cat(chunks)


@torch.no_grad()
def fill_gpu_batch_size(model, shape: tuple[int, ...], device: torch.device,
                        fraction: float = 0.8, probe: int = 8) -> int:
    """The largest batch whose evaluations fit in `fraction` of the free GPU memory, from the
    peak memory of one probe evaluation (plus the chain's own x, noise and score tensors)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model(torch.rand(probe, *shape, device=device), torch.ones(probe, device=device))
    torch.cuda.synchronize(device)
    per_image = (torch.cuda.max_memory_allocated(device) - before) / probe
    per_image += 3 * 4 * math.prod(shape)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, int(fraction * free / per_image))
