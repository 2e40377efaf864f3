"""Layers shared by the built-in networks: InstanceNorm++, the Fourier embedding of log sigma,
the float32 output convolution, dropout, and the norm/activation choices."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

NormName = Literal["instancenorm++", "groupnorm"]
ActName = Literal["elu", "silu"]


class InstanceNormPlus(nn.Module):
    """InstanceNorm++ (NCSNv2, Song & Ermon 2020, appendix B; docs/science.md).

    out_c = gamma_c ((x - mu_c)/sqrt(s_c^2 + e) + alpha_c (mu_c - mean(mu))/sqrt(var(mu) + e)) + beta_c

    Plain instance norm discards each channel's mean, which shifts colours; the alpha term puts
    back the channel means relative to one another.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.randn(channels).mul_(0.02).add_(1))
        self.alpha = nn.Parameter(torch.randn(channels).mul_(0.02).add_(1))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm_plus(x, self.gamma, self.alpha, self.beta, self.eps,
                                  single_pass=x.is_cuda)


def instance_norm_plus(x: torch.Tensor, gamma: torch.Tensor, alpha: torch.Tensor,
                       beta: torch.Tensor, eps: float, *, single_pass: bool) -> torch.Tensor:
    """InstanceNorm++ as statistics on (B, C) plus one fused multiply-add over the image,
        out = (x - mu) gamma / sqrt(s^2 + e) + (beta + gamma alpha centred),
    instead of instance_norm followed by four full-size elementwise passes.

    `single_pass` (for GPUs): one var_mean kernel for both statistics, then the addcmul, two
    passes over x. Otherwise (CPU, where var_mean is a slow Welford loop): the mean, the centred
    copy and its norm, 1.5-3x faster than the straightforward form (bench/instancenorm.py) and as
    exact (no E[x^2] - E[x]^2 cancellation).

    Under bf16 autocast x arrives in bf16, and the statistics are still accumulated and kept in
    float32: rounded to bf16 (as var_mean and mean return them for bf16 input), each channel's
    mean is off by up to |mean| 2^-9 and the (B, C) arithmetic after it by more, an error every
    pixel of the channel shares (0.006 to 0.05 in the output, for channel means of 0.5 to 30
    standard deviations: tests/test_backbones.py). On GPUs that costs one more read of x: the
    mean and the root mean square in float32 (the cancellation in E[x^2] - E[x]^2 is harmless in
    float32 at these ratios)."""
    n = x.shape[2] * x.shape[3]
    stats = torch.promote_types(x.dtype, torch.float32)  # float32, or float64 for float64 x
    if single_pass and x.dtype == stats:
        var, means = torch.var_mean(x, dim=(2, 3), correction=0, keepdim=True)
        centred_x = x
    elif single_pass:
        means = x.mean(dim=(2, 3), keepdim=True, dtype=stats)
        squares = torch.linalg.vector_norm(x, dim=(2, 3), keepdim=True, dtype=stats)
        var = (squares.square() / n - means.square()).clamp_min(0)
        centred_x = x
    else:
        means = x.mean(dim=(2, 3), keepdim=True, dtype=stats)
        centred_x = x - means
        var = torch.linalg.vector_norm(centred_x, dim=(2, 3), keepdim=True).square() / n
    mu = means[..., 0, 0]
    m_var, m_mean = torch.var_mean(mu, dim=1, keepdim=True)  # unbiased across channels
    centred = (mu - m_mean) * torch.rsqrt(m_var + eps)
    scale = gamma[:, None, None] * torch.rsqrt(var + eps)
    shift = (beta + gamma * alpha * centred)[..., None, None]
    if single_pass:
        shift = shift - means * scale
    return torch.addcmul(shift, centred_x, scale)


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


class FloatConv2d(nn.Conv2d):
    """A convolution that computes in float32 under autocast too: a score network's output
    layer. In bf16 its rounded weights and bias move every sample's colours the same way: on
    the demo run (bench/bf16_quality.py, 300 samples, paired with fp32) the mean brightness
    moved by -0.0041 (red -0.0074) with the whole U-Net in bf16, +0.0005 with this layer alone
    in float32, and -0.0040 with the embedding, the attention or the first convolution in float32
    instead. It is one convolution to 3 channels, so float32 costs next to nothing. The
    parameters are a plain Conv2d's (same names, same checkpoints)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


class GaussianFourierEmbedding(nn.Module):
    """[sin(2 pi W t), cos(2 pi W t)] with fixed W ~ N(0, scale^2) (Tancik et al. 2020;
    Song et al. 2021). Fed log sigma, which spreads the geometric levels evenly."""

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        # In place: an out-of-place product on the meta device (build_score_model's shapes-only
        # network) goes through torch's Python meta kernels, whose first use imports dynamo (1.4 s
        # of every CLI call that loads a run).
        self.register_buffer("weight", torch.randn(dim // 2).mul_(scale))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[:, None].float() * self.weight[None, :]
        return torch.cat([angles.sin(), angles.cos()], dim=1)


def dropout(p: float) -> nn.Module:
    """Dropout before a residual block's second convolution (DDPM's and EDM's place; ECT tunes
    with it: docs/science.md, "Consistency tuning"). At p = 0 no layer at all, so a network
    without dropout draws no random numbers and keeps its reference-exact forward."""
    return nn.Dropout(p) if p > 0 else nn.Identity()
