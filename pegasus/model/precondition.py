"""EDM's preconditioning (Karras et al. 2022, "Elucidating the design space", Table 1), an option
beside NCSNv2's score = output / sigma (`noise.preconditioning`; docs/science.md, "EDM's
preconditioning").

EDM writes the denoiser D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) around data of standard
deviation sigma_data, with
    c_skip = sigma_data^2 / (sigma^2 + sigma_data^2),
    c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2),
    c_in = 1 / sqrt(sigma^2 + sigma_data^2),
so that the network's input and its training target both have unit variance at every sigma. EDM's
data are centred on 0; pegasus's lie in [0, 1], so x is taken about the training images' per-channel
mean mu (the centre recorded with every checkpoint). The score follows from Tweedie's formula,
s = (D - x) / sigma^2:
    s(x, sigma) = -(x - mu) / (sigma^2 + sigma_data^2) + sigma_data F / (sigma sqrt(sigma^2 + sigma_data^2)),
the exact score of N(mu, sigma_data^2 I) perturbed by sigma, plus the network's correction. The
backbone keeps its contract, forward(x, sigma); only its input is scaled (c_noise is the
backbone's own function of sigma, as with NCSNv2).

NCSNv2's loss, 1/2 ||sigma s + z||^2 (model/loss.py), is 1/2 ||D - x||^2 / sigma^2. EDM's weight
lambda = 1 / c_out^2 is (sigma^2 + sigma_data^2) / sigma_data^2 times that, and makes the loss
1/2 ||F - F_target||^2 with a unit-variance target at every sigma: `loss_weight`.
"""

from __future__ import annotations

import torch
from torch import nn


class EDMPreconditioning(nn.Module):
    def __init__(self, centre: torch.Tensor, sigma_data: float) -> None:
        super().__init__()
        # Not part of the weights: the centre is the run's recorded data mean (run/load.py).
        self.register_buffer("centre", centre.detach().float().clone(), persistent=False)
        self.sigma_data = float(sigma_data)

    def score(self, backbone: nn.Module, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """s(x, sigma) for (B,) sigma, in float32 (the backbone may run in bf16)."""
        s = sigma.float().view(-1, *([1] * (x.dim() - 1)))
        total = s.square() + self.sigma_data ** 2
        offset = x.float() - self.centre
        out = backbone((offset * total.rsqrt()).to(x.dtype), sigma)
        return -offset / total + self.sigma_data * out.float() / (s * total.sqrt())

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """EDM's lambda(sigma) over NCSNv2's sigma^2 weighting, per sample."""
        return (sigma.float().square() + self.sigma_data ** 2) / self.sigma_data ** 2
