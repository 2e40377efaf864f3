"""The built-in objectives, registered through the same hook a third-party plugin uses
(hookspecs.register_objectives). Only declarations live here; torch and the losses are imported
inside the factories."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pegasus.hookspecs import Objective, hookimpl
from pegasus.noise.draws import ECT_P_MEAN, ECT_P_STD

# Bounds that keep the options meaning something: the log-normal's mean within the sigmas any
# run uses (e^-12 to e^12), its spread below where almost every draw is clipped to an end.
P_MEAN_BOUND, P_STD_MOST = 12.0, 10.0


def _dsm(options, **run):
    from pegasus.objectives.dsm import DenoisingScoreMatching

    return DenoisingScoreMatching(options, **run)


@hookimpl
def register_objectives(register):
    register(Objective(
        name="dsm",
        description="denoising score matching (NCSNv2): each image at one of the levels or a "
                    "sigma of the run's noise draw",
        factory=_dsm,
    ))
    register(Objective(
        name="ect",
        description="easy consistency tuning (ECT, Geng et al. 2025) of a trained run into a "
                    "consistency function",
        factory=_ect,
        config=ECTConfig,
        learns="consistency",
        output=_consistency_output,
        tunes=True,
        held_out=False,
        sampler=("consistency", 2),
    ))


@dataclass(frozen=True)
class ECTConfig:
    """ECT's options (objectives/ect.py). r's schedule: r = t (1 - q^-(s+1) (1 + k sigmoid(-b t))),
    the stage s rising every `stage_every` iterations (k = 8, b = 1 as ECT's; q = 4, ECT's
    ImageNet value: `pegasus tune` spreads 4 stages over the tuning, training/tune.py). The
    distance sqrt(||.||^2 + c^2) - c: c = 0 is the L2 norm (ECT's CIFAR-10), "auto" iCT's rule
    by the image's dimension. The weight: "edm" is EDM's (t^2 + sigma_data^2) / (t sigma_data)^2,
    which ECT's ImageNet branch uses; "gap" is 1 / (t - r), its CIFAR-10 weight. The defaults
    are what measured best on the demo's run for tunings of 300 to 3000 steps, ECT's CIFAR-10
    recipe (q = 2 in 16 stages, the gap weight, dropout 0.2, no denoising share) and its
    boundary far worse there (bench/README.md, "Two evaluations")."""

    stage_every: int = 300
    q: float = 4.0
    k: float = 8.0
    b: float = 1.0
    c: float | Literal["auto"] = 0.0
    weight: Literal["gap", "edm"] = "edm"
    # The sigma at which f is the identity (the boundary condition): the run's sigma_L, or a
    # number (ECT's and EDM's sigma_min is 0.002 on [-1, 1] images: 0.001 on pegasus's [0, 1]
    # ones). Samples carry noise of about this size (objectives/ect.py).
    boundary: float | Literal["sigma_L"] = "sigma_L"
    p_mean: float = ECT_P_MEAN  # t ~ log-normal(p_mean, p_std^2), clipped to [sigma_L, sigma_1]
    p_std: float = ECT_P_STD
    # The share of each batch's pairs kept at r = 0 (the clean image their target) at every
    # stage, not only the first: they pin f's response to the noise of its input, which the
    # pairs that share one z leave free (objectives/ect.py). 0 is ECT's; 0.3 measured less
    # grainy at every budget on the demo's run (bench/README.md, "Two evaluations").
    denoise: float = 0.3

    def __post_init__(self) -> None:
        numbers = ("q", "k", "b", "p_mean", "p_std", "denoise") + (("c",) if self.c != "auto" else ()) + (
            ("boundary",) if self.boundary != "sigma_L" else ())
        for name in numbers:
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0 <= self.denoise <= 1:
            raise ValueError(f"denoise must be a share from 0 to 1, got {self.denoise}")
        if self.stage_every < 1:
            raise ValueError(f"stage_every must be at least 1 step, got {self.stage_every}")
        if not self.q > 1:
            raise ValueError(f"q must be above 1 (r must move toward t), got {self.q}")
        if self.k < 0 or self.b < 0 or (self.c != "auto" and self.c < 0):
            raise ValueError(f"k, b and c must be 0 or more, got {self.k}, {self.b} and {self.c}")
        if self.boundary != "sigma_L" and not self.boundary > 0:
            raise ValueError(f"boundary must be a sigma above 0, got {self.boundary}")
        if abs(self.p_mean) > P_MEAN_BOUND:
            raise ValueError(f"p_mean must be within +-{P_MEAN_BOUND:g} (log sigma), got "
                             f"{self.p_mean}")
        if not 0 < self.p_std <= P_STD_MOST:
            raise ValueError(f"p_std must be above 0 and at most {P_STD_MOST:g}, got {self.p_std}")


def _ect(options, **run):
    from pegasus.objectives.ect import ConsistencyTuning

    return ConsistencyTuning(options, **run)


def _consistency_output(config):
    from pegasus.objectives.ect import ConsistencyOutput, boundary

    return ConsistencyOutput(boundary(config))
