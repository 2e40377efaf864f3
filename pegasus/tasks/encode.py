"""The probability-flow ODE both ways: an image up to its latent noise at sigma_1 (encode) and a
latent back down to an image (decode), with a reversible ODE solver (heun or dpmpp-2m) on the
grid the run's plan lays (Song et al. 2021, "Score-based generative modeling through SDEs").

The ODE dx/dsigma = -sigma s(x, sigma) is integrated from sigma_L to sigma_1 and back, without the
final denoising step, so that decoding an encoding returns the image up to the solver's
discretisation error (reported as PSNR). A latent file records what made it (the weights, the
resolution, the schedule and the grid): another run's latent is refused.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.atomic import atomic_write
from pegasus.errors import CheckpointError, FieldError
from pegasus.run.checkpoint import read_torch_file
from pegasus.run.job import SamplingJob
from pegasus.samplers.plan import ODE, SamplerPlan
from pegasus.signatures import Callback

FORMAT = "pegasus-latent"


def ode_plan(trained, sampler: str | None, steps: int | None = None) -> SamplerPlan:
    """The run's plan for `sampler` (None: an ODE solver, heun, unless the run's own is one),
    through its one door: a reversible ODE without the denoising step. Encoding, decoding and
    likelihoods all come here."""
    return trained.plan(sampler, steps, use=ODE)


def integrate(score_fn, x: torch.Tensor, plan: SamplerPlan, *, upward: bool,
              callback: Callback | None = None) -> torch.Tensor:
    """The ODE along the plan's grid, from sigma_L up to sigma_1 (`upward`) or down."""
    grid = plan.sigmas.flip(0) if upward else plan.sigmas
    return dataclasses.replace(plan, sigmas=grid).run(score_fn, x, callback=callback)


@dataclass
class Latent:
    latent: torch.Tensor  # (N, C, H, W): the images' points at sigma_1
    sampler: str
    steps: int | None
    res: int
    schedule: str  # Schedule.describe() of the run that encoded it
    weights: str  # the run's weights digest
    source: str

    def save(self, path: Path) -> Path:
        payload = {"format": FORMAT, "version": 1, **dataclasses.asdict(self)}
        payload["latent"] = self.latent.detach().cpu()
        atomic_write(Path(path), lambda f: torch.save(payload, f))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Latent:
        path = Path(path)
        state = read_torch_file(path, "a pegasus latent")
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CheckpointError(f"{path} is not a pegasus latent (pegasus encode writes them)")
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})

    def check(self, trained) -> None:
        """A latent decodes only with the run that encoded it."""
        here = (trained.config.data.res, trained.schedule.describe(), trained.weights_digest())
        if (self.res, self.schedule, self.weights) != here:
            raise FieldError("latent", f"was encoded by another run ({self.source}: {self.res} px, "
                                       f"{self.schedule}); this run is at {here[0]} px with "
                                       f"{here[1]}; decode it with the run that encoded it")


@dataclass(frozen=True, kw_only=True)
class EncodeRequest:
    """What `pegasus encode` and Model.encode ask for, with the defaults of both."""

    sampler: str | None = None  # an ODE solver that runs both ways; None: heun (ode_plan)
    steps: int | None = None  # evaluation budget; None: the sampler's default

    def plan(self, trained) -> SamplerPlan:
        return ode_plan(trained, self.sampler, self.steps)


def encode(trained, images: torch.Tensor, request: EncodeRequest, *, score_fn=None,
           callback: Callback | None = None) -> Latent:
    """The latents of `images` ((N, C, H, W) in [0, 1]) at sigma_1."""
    plan = request.plan(trained)
    score = score_fn or SamplingJob.make(trained, plan, num=len(images), batch_size=len(images)).score
    z = integrate(score, images.to(trained.device), plan, upward=True, callback=callback)
    return Latent(z, request.sampler or plan.name, request.steps, trained.config.data.res,
                  trained.schedule.describe(), trained.weights_digest(), str(trained.source))


def decode(trained, latent: Latent, *, score_fn=None, callback: Callback | None = None) -> torch.Tensor:
    """The images of latents, (N, C, H, W) in [0, 1], after checking they are this run's."""
    latent.check(trained)
    plan = ode_plan(trained, latent.sampler, latent.steps)
    z = latent.latent.to(trained.device)
    score = score_fn or SamplingJob.make(trained, plan, num=len(z), batch_size=len(z)).score
    return integrate(score, z, plan, upward=False, callback=callback).clamp_(0, 1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]: 10 log10(1 / MSE)."""
    mse = float((a.float() - b.float()).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)
