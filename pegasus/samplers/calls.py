"""Score evaluations at sigmas known before the loop, shared by the heun, pc and cas samplers:
the per-sample sigma tensors are made once (no allocation per evaluation), and the callback
hears every evaluation with a running index."""

from __future__ import annotations

import torch

from pegasus.signatures import Callback, ScoreFn


class ScoreCalls:
    def __init__(self, score_fn: ScoreFn, x: torch.Tensor, sigmas: list[float],
                 callback: Callback | None) -> None:
        values = sorted(set(sigmas), reverse=True)
        # Contiguous rows, as annealed Langevin passes them: a compiled network guards on
        # strides, so every sampler then runs one compile of it.
        rows = torch.tensor(values, dtype=x.dtype).to(x.device)[:, None].repeat(1, x.shape[0])
        self.per_sample = dict(zip(values, rows, strict=True))
        self.score_fn, self.callback, self.index = score_fn, callback, 0

    def __call__(self, x: torch.Tensor, sigma: float, level: int, step: int) -> torch.Tensor:
        per_sample = self.per_sample[sigma]
        s = self.score_fn(x, per_sample)
        if self.callback is not None:
            self.callback({"x": x, "level": level, "step": step, "index": self.index,
                           "sigma": per_sample[0]})
        self.index += 1
        return s
