"""How training draws each image's noise level (`noise.training`).

    levels       NCSNv2: one of the run's L geometric levels, uniformly (the default, exact
                 NCSNv2; the reference's anneal_dsm_score_estimation)
    log-uniform  any sigma in [sigma_L, sigma_1], uniform in log sigma (the score SDE's VE
                 "continuous" models, Song et al. 2021)
    log-normal   log sigma ~ N(p_mean, p_std^2), clipped to [sigma_L, sigma_1] (EDM, Karras et al.
                 2022, with its P_mean and P_std)

A network trained on levels knows those sigmas only when its sigma input does not interpolate
(the U-Net's Fourier features of log sigma: ScoreModel.round_sigma), so its samplers keep to them; one
trained on a continuum knows every sigma between sigma_L and sigma_1, and every sampler walks its
own grid. EDM weights its loss by lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2
on a preconditioned network whose target then has unit variance at every sigma: the same as
NCSNv2's sigma^2 weighting of a network whose target is -z (objectives/dsm.py), so the log-normal
option changes where sigma is drawn and keeps the loss.
"""

from __future__ import annotations

import math

import torch

from pegasus.noise.schedule import nearest_levels

KINDS = ("levels", "log-uniform", "log-normal")
# EDM's P_mean = -1.2 is for images in [-1, 1]; pegasus's are in [0, 1], where every sigma is
# half as large: -1.2 - log 2. P_std = 1.2 is EDM's.
P_MEAN, P_STD = -1.2 - math.log(2), 1.2
# ECT's t ~ log-normal(P_mean = -1.1, P_std = 2.0) for consistency tuning (objectives/ect.py),
# halved in the same way.
ECT_P_MEAN, ECT_P_STD = -1.1 - math.log(2), 2.0


class SigmaDraw:
    """Each image's sigma and the index of the nearest level (for the loss log per range)."""

    def __init__(self, kind: str, sigmas: torch.Tensor, p_mean: float = P_MEAN,
                 p_std: float = P_STD) -> None:
        if kind not in KINDS:
            raise ValueError(f"noise.training must be one of {', '.join(KINDS)}, got {kind!r}")
        self.kind, self.sigmas, self.p_mean, self.p_std = kind, sigmas, p_mean, p_std
        # Read once, when training starts: no host read inside a step.
        self.log_top, self.log_bottom = math.log(float(sigmas[0])), math.log(float(sigmas[-1]))

    def __call__(self, batch: int, generator: torch.Generator | None,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "levels":
            levels = torch.randint(len(self.sigmas), (batch,), device=device, generator=generator)
            return self.sigmas[levels], levels
        if self.kind == "log-uniform":
            u = torch.rand(batch, device=device, generator=generator, dtype=torch.float64)
            log_sigma = self.log_top + u * (self.log_bottom - self.log_top)
        else:
            z = torch.randn(batch, device=device, generator=generator, dtype=torch.float64)
            log_sigma = (self.p_mean + self.p_std * z).clamp(self.log_bottom, self.log_top)
        sigma = log_sigma.exp()
        return sigma.float(), nearest_levels(self.sigmas, sigma)
