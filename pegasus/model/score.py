"""The score model: a backbone's output divided by sigma (NCSNv2 Technique 3), or, when a run
asks for it, EDM's preconditioning around the data's centre (model/precondition.py); for a
consistency-tuned run, the score of its consistency function (model/consistency.py).

Every backbone obeys one contract, forward(x, sigma) -> tensor shaped like x, and this wrapper
applies the 1/sigma scaling (or the preconditioning) exactly once, so no backbone repeats it.
"""

from __future__ import annotations

import torch
from torch import nn

from pegasus.model.consistency import c_out
from pegasus.model.precondition import EDMPreconditioning


class ScoreModel(nn.Module):
    """s_theta(x, sigma) = backbone(x, sigma) / sigma, evaluated in float32 at the end (or EDM's
    preconditioned score, when `edm` is given)."""

    def __init__(self, backbone: nn.Module, edm: EDMPreconditioning | None = None,
                 consistency: float | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.edm = edm
        # sigma_min of a consistency-tuned run: its score is c_out times the network's, so
        # that x + sigma^2 s is f (model/consistency.py).
        self.consistency = consistency

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, x)
        if self.edm is not None:
            score = self.edm.score(self.backbone, x, sigma)
        else:
            # The division happens in float32 even when the backbone runs in bf16: for sigma_L =
            # 0.01 the score is 100x the network output, and bf16 would lose the low bits.
            score = self.backbone(x, sigma).float() / sigma.float().view(-1, *([1] * (x.dim() - 1)))
        if self.consistency is None:
            return score
        return score * c_out(sigma.float(), self.consistency).view(-1, *([1] * (x.dim() - 1)))

    @property
    def loss_weight(self):
        """The DSM loss's weight, a function of sigma, relative to NCSNv2's (dsm_loss's
        `weight`): None for NCSNv2 itself, EDM's lambda for a preconditioned model."""
        return None if self.edm is None else self.edm.loss_weight


def _per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or (B,) sigma to one value per sample, shape (B,)."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.dim() == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or shaped ({x.shape[0]},), got {tuple(sigma.shape)}")
    return sigma
