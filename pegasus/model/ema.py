"""Exponential moving average of the weights (NCSNv2 Technique 5), used for sampling.

The averaging itself is torch's foreach EMA update (`torch.optim.swa_utils.get_ema_multi_avg_fn`,
one `_foreach_lerp_` over all tensors). It is driven from here rather than through
`AveragedModel.update_parameters`, which reads its update counter back from the device twice on
every call: a host synchronisation per training step on a GPU. The copy starts equal to the
model, which is what AveragedModel's first update does.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMA:
    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).requires_grad_(False).eval()  # no dropout
        self.updates = 0
        self._update = get_ema_multi_avg_fn(decay)
        self._ema = self._tensors(self.module)
        self._model = self._tensors(model)

    @staticmethod
    def _tensors(module: nn.Module) -> list[torch.Tensor]:
        return [t.detach() for t in itertools.chain(module.parameters(), module.buffers())
                if t.is_floating_point()]

    @torch.no_grad()
    def update(self) -> None:
        self._update(self._ema, self._model, None)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
