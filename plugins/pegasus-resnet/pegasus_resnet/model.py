import torch
from torch import nn

from pegasus.backbones.layers import FloatConv2d


class FiLMBlock(nn.Module):
    """GroupNorm, SiLU, conv, with a per-channel scale and shift predicted from log sigma."""

    def __init__(self, width: int, groups: int) -> None:
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, width), nn.Conv2d(width, width, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, width), nn.Conv2d(width, width, 3, padding=1)
        self.film = nn.Linear(64, 2 * width)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.conv1(self.act(self.norm1(x)))
        h = self.norm2(h) * (1 + scale) + shift
        return x + self.conv2(self.act(h))


class ResNet(nn.Module):
    def __init__(self, channels: int, width: int, blocks: int, groups: int) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(1, 64), nn.SiLU(), nn.Linear(64, 64))
        self.begin = nn.Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(FiLMBlock(width, groups) for _ in range(blocks))
        # The output layer in float32 under bf16 autocast: rounded in bf16 it shifts colours
        # (pegasus.backbones.layers.FloatConv2d says by how much).
        self.end = nn.Sequential(nn.GroupNorm(groups, width), nn.SiLU(),
                                 FloatConv2d(width, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        emb = self.embed(sigma.log()[:, None])
        h = self.begin(2 * x - 1)
        for block in self.blocks:
            h = block(h, emb)
        return self.end(h)
