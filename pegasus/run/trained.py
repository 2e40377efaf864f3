"""A trained run ready to use: its config, EMA weights, schedule and the data's centre, and the
sampler plans fitted to it. Sampling jobs (job.py) draw from it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus.config import Config
from pegasus.errors import FieldError
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.run.layout import RunDir
from pegasus.samplers.plan import SamplerPlan, plan_sampler


def knows_every_sigma(config: Config) -> bool:
    """Whether a run's network is right between its schedule's levels: trained on continuous
    sigmas (noise.training), or a backbone whose sigma input interpolates."""
    from pegasus.registry import get_backbone

    return config.noise.training != "levels" or get_backbone(config.model.backbone)[0].interpolates


@dataclass
class TrainedRun:
    """A trained score model ready to sample: its config, its EMA weights and its schedule."""

    config: Config
    model: ScoreModel  # the EMA weights, in eval mode, on `device`
    schedule: Schedule
    step: int
    source: Path  # the checkpoint or weights file it came from
    device: torch.device
    run_dir: RunDir | None = None  # the run folder, when it came from one
    notify: Callable[[str], None] | None = None  # hears of a fast path's compiles and timings
    # The training images' per-channel mean (C, 1, 1) on `device`, where the samplers that start
    # at the noisiest level begin (SamplerPlan.start_point); 0.5 where no mean was recorded.
    centre: torch.Tensor | None = None
    centre_recorded: bool = False
    scores: dict = field(default_factory=dict, repr=False, compare=False)  # per fast path (job.py)

    def __post_init__(self) -> None:
        if self.centre is None:
            self.centre = torch.full((3, 1, 1), 0.5, device=self.device)

    @property
    def sigmas(self) -> torch.Tensor:
        return self.schedule.sigmas(self.device)

    @property
    def classes(self) -> list[str]:
        return self.config.data.classes

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, res, res) of one image."""
        return (3, self.config.data.res, self.config.data.res)

    @property
    def knows_every_sigma(self) -> bool:
        """Whether the network is right between its schedule's levels: trained on continuous
        sigmas (noise.training), or a backbone whose sigma input interpolates."""
        return knows_every_sigma(self.config)

    @property
    def tuned(self) -> bool:
        """Whether the network is a consistency function (model/consistency.py)."""
        return self.config.consistency.tuned

    def weights_digest(self) -> str:
        """A digest of the EMA weights, bit for bit: what says two files hold one network (a
        sample folder's manifest, a latent's record). Read from the weights each time: a caller
        may change them."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return digest.hexdigest()[:16]

    def plan(self, sampler: str = "als", steps: int | None = None, **options) -> SamplerPlan:
        """A sampler fitted to this run's schedule within `steps` evaluations (pegasus.samplers),
        its grid on the trained levels unless the network knows every sigma."""
        plan = plan_sampler(sampler, self.schedule, steps,
                            trained_levels=not self.knows_every_sigma, **options)
        if plan.spec.tuned_only and not self.tuned:
            raise FieldError("sampler", f"{plan.name} samples consistency-tuned runs only, and "
                                        f"{self.source} is not one (consistency.tuned is false); "
                                        f"tune it into a new run first (pegasus tune)")
        if plan.start == "normal" and not self.centre_recorded and self.notify is not None:
            self.notify(f"{sampler} starts at 0.5 + sigma_1 z: {self.source} records no mean of "
                        f"its training images (imported, or written before pegasus kept one)")
        return plan
