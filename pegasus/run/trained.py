"""A trained run ready to use: its config, EMA weights, schedule and the data's centre, and the
one door through which every verb plans its sampler (`TrainedRun.plan`). Sampling jobs (job.py)
draw from it."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus.config import Config
from pegasus.errors import FieldError, UserError
from pegasus.model.score import ScoreModel
from pegasus.noise.schedule import Schedule
from pegasus.registry import get_objective
from pegasus.run.layout import RunDir
from pegasus.run.sigmas import SearchedSigmas
from pegasus.samplers import SAMPLERS, sampler_spec, split_sampler
from pegasus.samplers.plan import ODE, SAMPLE, SamplerPlan, Use, plan_sampler

# A run trained on a continuum of sigmas draws by cas in 32 evaluations unless told: the
# cleanest of the few-step samplers on the demo's run, at a ninth of annealed Langevin's 280
# evaluations and a tenth of its KID (bench/README.md, "The demo's samples").
CONTINUUM_SAMPLER = ("cas", 32)


def default_sampler(config: Config) -> tuple[str, int | None]:
    """The sampler and budget a run draws with unless told, by how it was trained: its
    objective's where it names one (a consistency-tuned run: consistency in 2 evaluations),
    else annealed Langevin on the run's own schedule for NCSNv2's levels (the reference's
    sampler), else CONTINUUM_SAMPLER. The one owner of this rule: the CLI, Model and the
    training grids all plan through TrainedRun.plan."""
    named = get_objective(config.objective.name)[0].sampler
    if named is not None:
        return named
    return ("als", None) if config.noise.training == "levels" else CONTINUUM_SAMPLER


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

    def weights_digest(self) -> str:
        """A digest of the EMA weights, bit for bit: what says two files hold one network (a
        sample folder's manifest, a latent's record). Read from the weights each time: a caller
        may change them."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
        return digest.hexdigest()[:16]

    def plan(self, sampler: str | None = None, steps: int | None = None, *, use: Use = SAMPLE,
             schedule: Schedule | None = None) -> SamplerPlan:
        """The one door to a sampler for this run, for every verb and Model method: `sampler`
        (options in brackets allowed) within `steps` evaluations, or by default the run's own
        (default_sampler) where it serves `use`, else `use`'s fallback; fitted to the run's
        schedule (or `schedule`, a part of it) on the sigmas its network knows
        (ScoreModel.round_sigma); refused in one line unless it samples what the network
        learns and does what `use` needs."""
        schedule = schedule or self.schedule
        if sampler is None:
            plan = self._default(use, steps, schedule)
        else:
            plan = self._fit(sampler, steps, schedule)
        self._check_learns(plan, use)
        use.check(plan)
        if not use.denoise and plan.options.get("denoise", False):
            plan = dataclasses.replace(plan, options={**plan.options, "denoise": False},
                                       evaluations=plan.evaluations - 1)
        if plan.start == "normal" and not self.centre_recorded and self.notify is not None:
            self.notify(f"{plan.name} starts at 0.5 + sigma_1 z: {self.source} records no mean "
                        f"of its training images (imported, or written before pegasus kept one)")
        return plan

    def _default(self, use: Use, steps: int | None, schedule: Schedule) -> SamplerPlan:
        """The run's default sampler where it serves `use` (a budget given is kept), else
        `use`'s fallback for what the network learns."""
        name, budget = default_sampler(self.config)
        fallback = use.fallback.get(self.model.learns)
        try:
            plan = self._fit(name, budget if steps is None else steps, schedule)
            if fallback is None or use.serves(plan):
                return plan
        except FieldError:
            if fallback is None:
                raise
        name, budget = fallback
        return self._fit(name, budget if steps is None else steps, schedule)

    def _fit(self, sampler: str, steps: int | None, schedule: Schedule) -> SamplerPlan:
        known = None if self.model.knows_every_sigma else self.model.round_sigma
        searched = self._searched(sampler, steps) if schedule is self.schedule else {}
        return plan_sampler(sampler, schedule, steps, round_sigma=known, **searched)

    def _searched(self, sampler: str, steps: int | None) -> dict:
        """The consistency sampler's sigmas searched for this run at `steps` evaluations
        (run/sigmas.py), where none are given: nothing for a run never searched (Karras's grid)
        or one evaluation; a budget it was not searched for is refused."""
        name, written = split_sampler(sampler)
        if name != "consistency" or "sigmas" in written or self.run_dir is None:
            return {}
        steps = sampler_spec(name).default_steps if steps is None else steps
        searched = SearchedSigmas.read(self.run_dir.searched_sigmas)
        if steps == 1 or searched is None:
            return {}
        if steps not in searched.by_steps:
            counts = " and ".join(map(str, sorted(searched.by_steps)))
            raise FieldError("steps", f"{steps} evaluations of consistency: the sigmas of "
                                      f"{self.run_dir.path} were searched for {counts}; search "
                                      f"them for {steps} (pegasus search-sigmas --steps "
                                      f"{steps}), or give them as consistency[sigmas=[...]]")
        return {"sigmas": list(searched.by_steps[steps].sigmas)}

    def _check_learns(self, plan: SamplerPlan, use: Use) -> None:
        """A sampler samples what the network learns: a diffusion model's score, or a
        consistency function (hookspecs.Objective.learns)."""
        learns, objective = self.model.learns, self.config.objective
        if plan.spec.learns == learns:
            return
        if plan.spec.learns == "consistency":
            raise FieldError("sampler", f"{plan.name} samples consistency-tuned runs only, and "
                                        f"{self.source} is not one (its objective is "
                                        f"{objective.name}); tune it into a new run first "
                                        f"(pegasus tune)")
        kind = f"consistency-tuned ({objective.name}, from {objective.source or 'its base run'})"
        if use is ODE:
            raise UserError(f"{self.source} is {kind}: its network maps each point to the end of "
                            f"its trajectory, so it has no probability-flow ODE to run either "
                            f"way; encode and measure likelihoods with the run it was tuned "
                            f"from ({objective.source or 'its base run'})")
        samplers = [n for n in SAMPLERS if sampler_spec(n).learns == learns]
        raise FieldError("sampler", f"{plan.name} integrates a diffusion model's score, and "
                                    f"{self.source} is {kind}, whose network gives a consistency "
                                    f"function instead; sample it with {' or '.join(samplers)}")
