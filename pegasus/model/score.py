"""The score model: a backbone's output divided by sigma (NCSNv2 Technique 3), or, when a run
asks for it, EDM's preconditioning around the data's centre (model/precondition.py); then the
objective's parameterisation, when it has one (a consistency function's: objectives/ect.py).

Every backbone obeys one contract, forward(x, sigma) -> tensor shaped like x, and this wrapper
applies the 1/sigma scaling (or the preconditioning) exactly once, so no backbone repeats it.

It also answers which sigmas its network knows (`round_sigma`, as EDM's networks and
k-diffusion's DiscreteSchedule do): a network trained on NCSNv2's discrete levels whose sigma
input does not interpolate (the U-Net's Fourier features of log sigma, scale 16, turn over
several radians between neighbouring levels) is wrong between them, so samplers and losses
round each sigma to the nearest level; any other knows every sigma of its schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pegasus.model.precondition import EDMPreconditioning
from pegasus.noise.schedule import nearest_levels


class ScoreModel(nn.Module):
    """s_theta(x, sigma) = backbone(x, sigma) / sigma, evaluated in float32 at the end (or EDM's
    preconditioned score, when `edm` is given), then `output(score, sigma)` where the objective
    parameterises the network otherwise. `learns` says what the result is ("score", or
    "consistency": hookspecs.Objective.learns); `discrete` that the network knows the levels it
    trained on alone (set by `know`)."""

    def __init__(self, backbone: nn.Module, edm: EDMPreconditioning | None = None, *,
                 output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 learns: str = "score", discrete: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.edm = edm
        self.output = output
        self.learns = learns
        self.discrete = discrete
        self.known: torch.Tensor | None = None  # the sigmas a discrete network knows (CPU)
        self._placed: dict[torch.device, torch.Tensor] = {}  # `known` on each device asked

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, x)
        if self.edm is not None:
            score = self.edm.score(self.backbone, x, sigma)
        else:
            # The division happens in float32 even when the backbone runs in bf16: for sigma_L =
            # 0.01 the score is 100x the network output, and bf16 would lose the low bits.
            score = self.backbone(x, sigma).float() / sigma.float().view(-1, *([1] * (x.dim() - 1)))
        return score if self.output is None else self.output(score, sigma)

    def know(self, sigmas: torch.Tensor) -> None:
        """The sigmas the network is trained on (largest first): a discrete network knows
        those alone."""
        self.known = sigmas.detach().float().cpu().clone() if self.discrete else None
        self._placed = {}

    @property
    def knows_every_sigma(self) -> bool:
        return not self.discrete

    def round_sigma(self, sigma: torch.Tensor) -> torch.Tensor:
        """Each sigma as the nearest one the network knows (in log sigma): the nearest trained
        level for a discrete network, the sigma itself for any other."""
        if not self.discrete:
            return sigma
        if self.known is None:
            raise RuntimeError("a discrete network's levels are not known yet (ScoreModel.know)")
        if sigma.device not in self._placed:  # copied once per device, not at every step
            self._placed[sigma.device] = self.known.to(sigma.device)
        known = self._placed[sigma.device]
        return known[nearest_levels(known, sigma)].to(sigma.dtype)

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
