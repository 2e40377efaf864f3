"""Layers shared by the built-in networks: InstanceNorm++, the Fourier embedding of log sigma,
and the norm/activation choices."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

NormName = Literal["instancenorm++", "groupnorm"]
ActName = Literal["elu", "silu"]


class InstanceNormPlus(nn.Module):
    """InstanceNorm++ (NCSNv2, Song & Ermon 2020, appendix B; NOTES.md).

    out_c = gamma_c ((x - mu_c)/sqrt(s_c^2 + e) + alpha_c (mu_c - mean(mu))/sqrt(var(mu) + e)) + beta_c

    Plain instance norm discards each channel's mean, which shifts colours; the alpha term puts
    back the channel means relative to one another.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(1 + 0.02 * torch.randn(channels))
        self.alpha = nn.Parameter(1 + 0.02 * torch.randn(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=(2, 3))
        centred = (means - means.mean(dim=1, keepdim=True)) / torch.sqrt(
            means.var(dim=1, keepdim=True) + self.eps
        )
        h = F.instance_norm(x, eps=self.eps) + centred[..., None, None] * self.alpha[:, None, None]
        return self.gamma[:, None, None] * h + self.beta[:, None, None]


def make_norm(name: NormName, channels: int) -> nn.Module:
    if name == "instancenorm++":
        return InstanceNormPlus(channels)
    if name == "groupnorm":
        return nn.GroupNorm(min(32, channels // 4) or 1, channels)
    raise ValueError(f"unknown normalisation {name!r}; choose instancenorm++ or groupnorm")


def make_act(name: ActName) -> nn.Module:
    if name == "elu":
        return nn.ELU()
    if name == "silu":
        return nn.SiLU()
    raise ValueError(f"unknown activation {name!r}; choose elu or silu")


class GaussianFourierEmbedding(nn.Module):
    """[sin(2 pi W t), cos(2 pi W t)] with fixed W ~ N(0, scale^2) (Tancik et al. 2020;
    Song et al. 2021). Fed log sigma, which spreads the geometric levels evenly."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        self.register_buffer("weight", torch.randn(dim // 2) * scale)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[:, None].float() * self.weight[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)
