"""CUDA graphs for the samplers: a network evaluation is hundreds of small kernels, and a graph
launches them as one, so the host's launch cost stops limiting the GPU at small batches.

Two uses. Annealed Langevin captures its whole step, update included (langevin.py), once per
chain. The other samplers (heun, pc, cas) change their step's coefficients at every level, so
`GraphedScore` captures the score evaluation alone, once per job and input shape, and replays
it with the sampler's inputs copied into its static buffers.
"""

from __future__ import annotations

import torch

from pegasus.signatures import Capture, ScoreFn, Step


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
    """A CUDA graph on a GPU; nothing elsewhere."""
    return cuda_graph_capture if torch.device(device).type == "cuda" else None


def chain_graphs(plan, score_fn: ScoreFn,
                 device: torch.device | str) -> tuple[ScoreFn, Capture | None]:
    """The score function and the capture that chains of `plan` (samplers.plan.SamplerPlan)
    run with on `device`: on a GPU, a sampler that captures its own step (annealed Langevin)
    gets the capture, the others a graphed score; elsewhere, `score_fn` as it is. Keep the
    returned score for every chain of a job: it captures once per input shape."""
    capture = default_capture(device)
    if capture is None or plan.captures_steps:
        return score_fn, capture
    return GraphedScore(score_fn, capture), capture


class GraphedScore:
    """`score_fn`, each evaluation replayed from one CUDA graph per input shape (`capture`
    makes it, at the shape's first call; a sampling job has one shape, sampling.equal_batches).
    Inputs are copied into static buffers before a replay and the output comes out of one; it
    is returned as a copy, since a sampler may hold one score while it asks for the next
    (Heun's two slopes)."""

    def __init__(self, score_fn: ScoreFn, capture: Capture) -> None:
        self.score_fn, self.capture = score_fn, capture
        self.shape: tuple[int, ...] | None = None
        self.x = self.sigma = self.out = None
        self.replay: Step | None = None

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) != self.shape:
            self.shape, self.replay = tuple(x.shape), None
            self.x, self.sigma, self.out = (torch.empty_like(x), torch.empty_like(sigma),
                                            torch.empty_like(x))
        self.x.copy_(x)
        self.sigma.copy_(sigma)
        if self.replay is None:
            # The warm-up runs evaluate these very inputs, so nothing they write is wrong.
            self.replay = self.capture(self._step)
        self.replay()
        return self.out.clone()

    def _step(self) -> None:
        self.out.copy_(self.score_fn(self.x, self.sigma))
