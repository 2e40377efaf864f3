"""The winged-horses U-Net (docs/science.md, "The winged-horses U-Net"), after the DDPM U-Net.

Three down levels (residual block, average pool, linear self-attention), a middle (residual
block, attention, residual block) and three up levels (nearest upsample, residual block, linear
attention) with skip connections. Residual blocks use InstanceNorm++ and ELU by default and
receive a Gaussian Fourier embedding of log sigma through a small MLP. Every attention is
ReZero-gated, x + a * Attn(x) with a = 0 at the start (Bachlechner et al. 2020), so the net
starts as a plain conv U-Net and learns how much attention to use.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from pegasus.backbones.layers import (
    ActName,
    FloatConv2d,
    GaussianFourierEmbedding,
    NormName,
    dropout,
    make_act,
    make_norm,
)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, norm: NormName, act: ActName,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.norm1, self.act = make_norm(norm, cin), make_act(act)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2 = make_norm(norm, cout)
        self.drop = dropout(drop)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.drop(self.act(self.norm2(h))))
        return self.skip(x) + h


class LinearAttention(nn.Module):
    """Linear (efficient) self-attention (Shen et al. 2021): softmax q over features and k over
    positions, then out = q^T (k v^T): cost linear in the number of pixels."""

    def __init__(self, channels: int, heads: int = 4, head_dim: int = 32) -> None:
        super().__init__()
        self.heads, self.scale = heads, head_dim**-0.5
        self.norm = nn.GroupNorm(1, channels)
        self.qkv = nn.Conv2d(channels, 3 * heads * head_dim, 1, bias=False)
        self.out = nn.Conv2d(heads * head_dim, channels, 1)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised q, k and v, each (B, heads, head_dim, pixels)."""
        q, k, v = (
            rearrange(t, "b (h d) x y -> b h d (x y)", h=self.heads)
            for t in self.qkv(self.norm(x)).chunk(3, dim=1)
        )
        return q.softmax(dim=-2) * self.scale, k.softmax(dim=-1), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_heads(x)
        context = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", context, q)
        return self.out(rearrange(out, "b h e (x y) -> b (h e) x y", x=x.shape[2]))


class ReZero(nn.Module):
    """x + a * f(x), with the scalar a initialised to 0."""

    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.gate * self.fn(x)


class UNet(nn.Module):
    def __init__(
        self,
        channels: int = 3,
        width: int = 64,
        mults: tuple[int, ...] = (1, 2, 2),
        emb_dim: int = 128,
        fourier_scale: float = 16.0,
        heads: int = 4,
        head_dim: int = 32,
        norm: NormName = "instancenorm++",
        act: ActName = "elu",
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Sequential(
            GaussianFourierEmbedding(emb_dim, fourier_scale),
            nn.Linear(emb_dim, 4 * emb_dim), make_act(act), nn.Linear(4 * emb_dim, 4 * emb_dim),
        )
        e = 4 * emb_dim
        widths = [width * m for m in mults]

        def attention(c: int) -> ReZero:
            return ReZero(LinearAttention(c, heads, head_dim))

        self.begin = nn.Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList()
        cin = width
        for w in widths:
            self.down.append(nn.ModuleList([ResBlock(cin, w, e, norm, act, drop), attention(w)]))
            cin = w
        self.mid = nn.ModuleList([ResBlock(cin, cin, e, norm, act, drop), attention(cin),
                                  ResBlock(cin, cin, e, norm, act, drop)])
        self.up = nn.ModuleList()
        for w in reversed(widths):
            self.up.append(nn.ModuleList([ResBlock(cin + w, w, e, norm, act, drop), attention(w)]))
            cin = w
        self.norm, self.act = make_norm(norm, cin), make_act(act)
        self.end = FloatConv2d(cin, channels, 3, padding=1)  # float32 under autocast

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        emb = self.embed(sigma.log())
        h = self.begin(2 * x - 1)
        skips = []
        for block, attn in self.down:
            h = block(h, emb)
            skips.append(h)
            h = attn(F.avg_pool2d(h, 2))
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for block, attn in self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
        return self.end(self.act(self.norm(h)))
