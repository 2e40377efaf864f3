"""The built-in backbones, registered through the same hook a third-party plugin uses.

Only declarations live here; torch and the networks are imported inside the factories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pegasus.hookspecs import Backbone, hookimpl


@dataclass(frozen=True)
class RefineNetConfig:
    ngf: int = 128
    # "auto": by resolution as the paper does (ncsnv2 below 96 px, deeper at 96-128 px,
    # deepest at 256 px); any of them can be asked for at any supported size.
    stages: Literal["auto", "ncsnv2", "deeper", "deepest"] = "auto"
    dropout: float = 0.0  # in each residual block of the stages; off unless set

    def __post_init__(self) -> None:
        if self.ngf < 1:
            raise ValueError(f"ngf must be at least 1, got {self.ngf}")
        _check_dropout(self.dropout)


def _check_dropout(p: float) -> None:
    if not 0 <= p < 1:
        raise ValueError(f"dropout must be in [0, 1), got {p}")


def _refinenet(config: RefineNetConfig, *, res: int, channels: int):
    from pegasus.backbones.refinenet import RefineNet, stages_for

    return RefineNet(channels, config.ngf, stages_for(config.stages, res), config.dropout)


@hookimpl
def register_backbones(register):
    register(Backbone(
        name="refinenet",
        description="NCSNv2 RefineNet: InstanceNorm++, ELU, dilated residual stages, RefineBlocks",
        factory=_refinenet,
        config=RefineNetConfig,
        resolutions=(32, 48, 64, 96, 128, 256),
        channels_last=True,  # faster in NHWC on an H100 and on oneDNN CPUs (bench/README.md)
        interpolates=True,  # its only dependence on sigma is the score's 1/sigma
        free=("dropout",),
    ))


@dataclass(frozen=True)
class UNetConfig:
    width: int = 64  # channels at full resolution
    mults: tuple[int, ...] = (1, 2, 2)  # one entry per down level: width multipliers
    emb_dim: int = 128  # size of the Fourier embedding of log sigma
    fourier_scale: float = 16.0
    heads: int = 4
    head_dim: int = 32
    norm: Literal["instancenorm++", "groupnorm"] = "instancenorm++"
    act: Literal["elu", "silu"] = "elu"
    dropout: float = 0.0  # in each residual block; off unless set

    def __post_init__(self) -> None:
        _check_dropout(self.dropout)
        for name in ("width", "emb_dim", "heads", "head_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sine and cosine halves), got {self.emb_dim}")
        if not self.mults or min(self.mults) < 1:
            raise ValueError(f"mults must be one or more positive multipliers, got {list(self.mults)}")
        if not self.fourier_scale > 0:
            raise ValueError(f"fourier_scale must be positive, got {self.fourier_scale}")


def _unet(config: UNetConfig, *, res: int, channels: int):
    from pegasus.backbones.unet import UNet

    if res % (2 ** len(config.mults)):
        raise ValueError(f"unet with {len(config.mults)} levels needs a resolution divisible by "
                         f"{2 ** len(config.mults)}, got {res}")
    return UNet(channels, config.width, tuple(config.mults), config.emb_dim, config.fourier_scale,
                config.heads, config.head_dim, config.norm, config.act, config.dropout)


@hookimpl(specname="register_backbones")
def register_unet(register):
    register(Backbone(
        name="unet",
        description="winged-horses U-Net: linear attention with ReZero, Fourier log-sigma embedding",
        factory=_unet,
        config=UNetConfig,
        resolutions=(16, 24, 32, 48, 64, 96),
        channels_last=False,  # slower in NHWC: its norms and attention reshapes (bench/README.md)
        free=("dropout",),
    ))
