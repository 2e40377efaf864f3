"""Small image classifiers: the noise-conditional guide p(class | x, sigma) used for blend
guidance, and the independent clean-image judge that scores blends.

One parameterised network serves both: the guide scales its input by 1/sqrt(1 + sigma^2) (so
inputs stay O(1) at every noise level) and adds a Fourier embedding of log sigma to its
features; the judge sees clean images only and has no sigma input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pegasus.backbones.layers import GaussianFourierEmbedding

KINDS = ("guide", "judge")


@dataclass(frozen=True)
class ClassifierSpec:
    classes: list[str]
    res: int
    channels: int = 3
    width: int = 32
    noise_conditional: bool = True


class Classifier(nn.Module):
    def __init__(self, spec: ClassifierSpec) -> None:
        super().__init__()
        self.spec = spec
        w = spec.width
        self.begin = nn.Conv2d(spec.channels, w, 3, padding=1)
        self.embed = (
            nn.Sequential(GaussianFourierEmbedding(64), nn.Linear(64, w), nn.SiLU(), nn.Linear(w, w))
            if spec.noise_conditional else None
        )
        layers, cin = [], w
        for cout in (w, 2 * w, 2 * w):
            layers += [nn.GroupNorm(8, cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, stride=2, padding=1)]
            cin = cout
        self.body = nn.Sequential(*layers, nn.GroupNorm(8, cin), nn.SiLU())
        self.head = nn.Linear(cin, len(spec.classes))

    def features(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled features the head classifies, (B, 2 * width); any image size."""
        x = 2 * x - 1
        if self.embed is not None:
            x = x / torch.sqrt(1 + sigma.view(-1, 1, 1, 1) ** 2)
        h = self.begin(x)
        if self.embed is not None:
            h = h + self.embed(sigma.log())[:, :, None, None]
        return self.body(h).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, (B, classes)."""
        return self.head(self.features(x, sigma))

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        return F.log_softmax(self(x, sigma).float(), dim=1)
