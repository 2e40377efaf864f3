"""The NCSNv2 RefineNet score network (Song & Ermon 2020; docs/science.md, "The NCSNv2 network").

One builder serves every resolution: the encoder is a list of stages, each two pre-activation
residual blocks (norm, ELU, conv), and one RefineBlock per stage fuses it with the coarser
result on the way back up. The published 32-64 px network and the deeper 96+ px variant are
two stage lists, not two classes. The network is unconditional: the score is its output divided
by sigma (Technique 3), which the engine's ScoreModel does, so sigma is unused here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from pegasus.backbones.layers import FloatConv2d, InstanceNormPlus, dropout


@dataclass(frozen=True)
class Stage:
    mult: int  # output channels = mult * ngf
    downsample: bool  # halve the resolution (ignored by dilated stages, as in the reference)
    dilation: int = 1


# NCSNv2 for 32-64 px: ngf, 2ngf (down), 2ngf (dilation 2), 2ngf (dilation 4).
NCSNV2_STAGES = (Stage(1, False), Stage(2, True), Stage(2, True, 2), Stage(2, True, 4))
# NCSNv2Deeper (96 and 128 px; LSUN church at 64 px too): one more downsampling and a 4ngf
# bottleneck.
DEEPER_STAGES = (Stage(1, False), Stage(2, True), Stage(2, True), Stage(4, True, 2), Stage(4, True, 4))
# NCSNv2Deepest (256 px, FFHQ): one more 2ngf downsampling stage still.
DEEPEST_STAGES = (Stage(1, False), Stage(2, True), Stage(2, True), Stage(2, True), Stage(4, True, 2),
                  Stage(4, True, 4))
STAGES = {"ncsnv2": NCSNV2_STAGES, "deeper": DEEPER_STAGES, "deepest": DEEPEST_STAGES}

StagesName = Literal["auto", "ncsnv2", "deeper", "deepest"]


def auto_stages(res: int) -> str:
    """The paper's choice by resolution: NCSNv2 below 96 px, Deeper to 128, Deepest above."""
    return "ncsnv2" if res < 96 else "deeper" if res <= 128 else "deepest"


def stages_for(name: StagesName, res: int) -> tuple[Stage, ...]:
    return STAGES[auto_stages(res) if name == "auto" else name]


def conv3x3(cin: int, cout: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=bias)


class ConvMeanPool(nn.Sequential):
    """Convolution then 2x2 mean pooling: the reference code's downsampling."""

    def __init__(self, cin: int, cout: int, kernel: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.AvgPool2d(2))


class ResidualBlock(nn.Module):
    """Pre-activation residual block. A block marked as downsampling keeps the input width in
    its first convolution and widens in the second; when it is also dilated it keeps the
    resolution, as in the reference implementation (its `resample='down'` with dilation). A
    plain block widens in its first convolution."""

    def __init__(self, cin: int, cout: int, act: nn.Module, downsample: bool, dilation: int,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.act, self.drop = act, dropout(drop)
        self.norm1 = InstanceNormPlus(cin)
        if downsample and dilation == 1:
            self.conv1 = conv3x3(cin, cin)
            self.norm2 = InstanceNormPlus(cin)
            self.conv2 = ConvMeanPool(cin, cout, 3)
            self.shortcut = ConvMeanPool(cin, cout, 1)
        elif downsample:
            self.conv1 = conv3x3(cin, cin, dilation=dilation)
            self.norm2 = InstanceNormPlus(cin)
            self.conv2 = conv3x3(cin, cout, dilation=dilation)
            self.shortcut = conv3x3(cin, cout, dilation=dilation)
        else:
            self.conv1 = conv3x3(cin, cout, dilation=dilation)
            self.norm2 = InstanceNormPlus(cout)
            self.conv2 = conv3x3(cout, cout, dilation=dilation)
            if cin == cout:
                self.shortcut = nn.Identity()
            elif dilation > 1:
                self.shortcut = conv3x3(cin, cout, dilation=dilation)
            else:
                self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.drop(self.act(self.norm2(h))))
        return self.shortcut(x) + h


class ResidualConvUnit(nn.Module):
    """RCU: `blocks` residual units of `stages` (ELU, bias-free 3x3 conv) each."""

    def __init__(self, channels: int, blocks: int, act: nn.Module, stages: int = 2) -> None:
        super().__init__()
        self.act = act
        self.blocks = nn.ModuleList(
            nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages))
            for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for convs in self.blocks:
            h = x
            for conv in convs:
                h = conv(self.act(h))
            x = x + h
        return x


class ChainedResidualPooling(nn.Module):
    """CRP: repeated 5x5 max-pool + conv, each result added back, to gather wide context."""

    def __init__(self, channels: int, act: nn.Module, stages: int = 2) -> None:
        super().__init__()
        self.act = act
        self.pool = nn.MaxPool2d(5, stride=1, padding=2)
        self.convs = nn.ModuleList(conv3x3(channels, channels, bias=False) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(x)
        path = x
        for conv in self.convs:
            path = conv(self.pool(path))
            x = x + path
        return x


class RefineBlock(nn.Module):
    """Adapt each input (RCU), fuse them at the finest resolution (multi-resolution fusion:
    3x3 conv + bilinear upsampling, summed), chained residual pooling, output RCU."""

    def __init__(self, in_channels: list[int], features: int, act: nn.Module, end: bool) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(ResidualConvUnit(c, 2, act) for c in in_channels)
        self.fuse = (
            nn.ModuleList(conv3x3(c, features) for c in in_channels) if len(in_channels) > 1 else None
        )
        self.crp = ChainedResidualPooling(features, act)
        self.out = ResidualConvUnit(features, 3 if end else 1, act)

    def forward(self, xs: list[torch.Tensor]) -> torch.Tensor:
        hs = [adapt(x) for adapt, x in zip(self.adapt, xs, strict=True)]
        if self.fuse is None:
            h = hs[0]
        else:
            size = hs[0].shape[2:]
            h = sum(
                F.interpolate(conv(x), size=size, mode="bilinear", align_corners=True)
                for conv, x in zip(self.fuse, hs, strict=True)
            )
        return self.out(self.crp(h))


class RefineNet(nn.Module):
    def __init__(self, channels: int, ngf: int, stages: tuple[Stage, ...],
                 drop: float = 0.0) -> None:
        super().__init__()
        act = nn.ELU()
        widths = [s.mult * ngf for s in stages]
        self.begin = conv3x3(channels, ngf)
        self.stages = nn.ModuleList()
        cin = ngf
        for stage, width in zip(stages, widths, strict=True):
            self.stages.append(nn.Sequential(
                ResidualBlock(cin, width, act, stage.downsample, stage.dilation, drop),
                ResidualBlock(width, width, act, False, stage.dilation, drop),
            ))
            cin = width
        # RefineBlocks from coarse to fine: the coarsest takes its stage alone; each next one
        # fuses its stage's features with the previous RefineBlock's output.
        self.refine = nn.ModuleList()
        prev = widths[-1]
        for i in reversed(range(len(stages))):
            out = widths[i - 1] if i > 0 else ngf
            ins = [widths[i]] if i == len(stages) - 1 else [widths[i], prev]
            self.refine.append(RefineBlock(ins, out, act, end=i == 0))
            prev = out
        self.norm = InstanceNormPlus(ngf)
        self.act = act
        self.end = FloatConv2d(ngf, channels, 3, padding=1)  # float32 under autocast

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        h = self.begin(2 * x - 1)  # images in [0, 1] are centred, as the reference does
        feats = []
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        h = self.refine[0]([feats[-1]])
        for block, feat in zip(self.refine[1:], reversed(feats[:-1]), strict=True):
            h = block([feat, h])
        return self.end(self.act(self.norm(h)))
