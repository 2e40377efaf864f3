"""The call signatures shared across modules, defined once: what a score function, a noise
sampler, a sampler callback and a progress report look like."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

# (x, sigma of shape (B,)) -> score shaped like x.
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# () -> fresh standard normal noise shaped like the chain's state.
NoiseSampler = Callable[[], torch.Tensor]
# Called after every network evaluation of a sampler with {"x", "level", "step", "index", "sigma"}.
Callback = Callable[[dict[str, Any]], None]
# (step, total steps, mean loss at log steps else None).
ProgressFn = Callable[[int, int, float | None], None]
# A progress bar for one piece of work: (what it is, how many evaluations) -> the callback that
# advances it at each evaluation (a sampler's Callback).
ProgressBar = Callable[[str, int], Callback]
# A chain's step, and what turns it into its replay (a CUDA graph: fastpath/graphs.py).
Step = Callable[[], None]
Capture = Callable[[Step], Step]
