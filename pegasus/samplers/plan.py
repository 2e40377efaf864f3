"""A sampler fitted to a run's schedule and an evaluation budget: its grid, options and cost,
and the one place a plan's chain is started and run; and what each kind of work needs of the
sampler it runs (`Use`). A run's plans are made through one door, TrainedRun.plan
(run/trained.py), which adds the run's own rules: its default sampler, what its network knows
and learns."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pegasus.errors import FieldError, SamplingError
from pegasus.noise.schedule import Schedule
from pegasus.samplers import sampler_spec, split_sampler
from pegasus.samplers.spec import SamplerSpec
from pegasus.signatures import Callback, Capture, NoiseSampler, ScoreFn

# The largest budget a plan takes: far above the published CIFAR-10 schedule's L T + 1, and
# beyond what any sampler gains from (bench/README.md's KID against evaluations).
MAX_STEPS = 100_000


@dataclass(frozen=True)
class SamplerPlan:
    """One sampler fitted to a schedule: its sigma grid, options and cost."""

    spec: SamplerSpec = field(repr=False)
    sigmas: torch.Tensor  # the grid it walks, largest first (CPU, float32)
    evaluations: int  # network evaluations per image
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def start(self) -> str:
        """"uniform" (annealed Langevin's prior) or "normal" (centre + sigma_1 z)."""
        return self.spec.start

    @property
    def stochastic(self) -> bool:
        """Whether the chain injects noise at its steps (so eq. 4 can blend its chains)."""
        return self.spec.stochastic(self.options, self.sigmas)

    @property
    def captures_steps(self) -> bool:
        """Whether the sampler captures its own step, update included, when given a `capture`
        (annealed Langevin); the others are given a graphed score function (fastpath/graphs.py)."""
        return self.spec.captures_steps

    def start_point(self, uniform: torch.Tensor, normal: torch.Tensor,
                    centre: float | torch.Tensor = 0.5) -> torch.Tensor:
        """Where a chain starts: annealed Langevin's uniform noise, or a draw from the noisiest
        marginal p_sigma_1, the data blurred by N(0, sigma_1^2), approximated as
        centre + sigma_1 z. `centre` is the data's mean (per channel, broadcastable to one
        image; TrainedRun.centre): p_sigma_1 is centred there, not on 0, and an ODE carries a
        start that is off by it to the end (bench/README.md, "Where the samplers start")."""
        if self.start == "uniform":
            return uniform
        return normal.mul(float(self.sigmas[0])).add_(centre)

    def run(self, score_fn: ScoreFn, x: torch.Tensor, *, generator: torch.Generator | None = None,
            noise_sampler: NoiseSampler | None = None, callback: Callback | None = None,
            capture: Capture | None = None) -> torch.Tensor:
        """The chain from `x`; `capture` reaches a sampler that captures its own step. Images
        that are not finite (a chain pushed out of range: an absurd guidance weight or step
        size) are refused here, once per chain, for every verb: a picture of them would be
        black or white without saying why."""
        extra = {"capture": capture} if self.captures_steps else {}
        out = self.spec.function(score_fn, x, self.sigmas.to(x.device), generator=generator,
                                 noise_sampler=noise_sampler, callback=callback,
                                 **self.options, **extra)
        if not bool(torch.isfinite(out).all()):
            raise SamplingError(f"{self.name}'s chain gave images that are not finite numbers "
                                f"(nan or inf), so none was written: lower the guidance weight "
                                f"or the sampler's step options, or check the run's weights")
        return out


def plan_sampler(name: str, schedule: Schedule, steps: int | None = None, *,
                 round_sigma: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 **options: Any) -> SamplerPlan:
    """Fit sampler `name` to `schedule` within `steps` evaluations (None: its default).

    `round_sigma` is the network's rounding of a sigma to one it knows (ScoreModel.round_sigma:
    the nearest trained level for a network that knows those alone); every grid is laid on
    what it returns, grid points that fall on one sigma merged, so a plan may then use fewer
    evaluations than its budget. None: the network knows every sigma, and each sampler walks
    its own grid."""
    name, written = split_sampler(name)
    spec = sampler_spec(name)
    options = {**written, **options}
    _check_options(spec, options)
    most = spec.max_steps or MAX_STEPS
    if steps is not None and not 1 <= steps <= most:
        raise FieldError("steps", f"must be between 1 and {most:,} network evaluations per "
                                  f"image for {spec.name}, got {steps:,}")
    snap = ((lambda grid: torch.unique_consecutive(round_sigma(grid))) if round_sigma is not None
            else (lambda grid: grid))
    fitted = spec.fit(schedule, steps, {"denoise": schedule.denoise, **options}, snap)
    return SamplerPlan(spec, fitted.sigmas, fitted.evaluations, fitted.options)


@dataclass(frozen=True)
class Use:
    """What a piece of work needs of the sampler it runs, checked on every plan made for it
    (TrainedRun.plan), and the sampler it takes when the run's own default does not serve."""

    work: str  # what the work is, for its errors: "an eq. 4 blend", "encoding", ...
    noise: bool | None = None  # True: injects noise at its steps (eq. 4); False: injects none
    normal_start: bool = False  # starts at centre + sigma_1 z (a slerp of the starting noise)
    inpaints: bool = False  # fits regenerated pixels to kept ones
    reversible: bool = False  # an ODE solver that runs both ways
    denoise: bool = True  # ends with the denoising step (an ODE that encodes has none)
    # Why it needs injected noise (with `noise`), and what to do instead, for its error.
    noise_because: str = "interpolates injected noise"
    otherwise: str = ", or blend by slerp of the starting noise"
    # The sampler (and budget: None, its default) when the run's default does not serve, per
    # what the run's network learns.
    fallback: dict[str, tuple[str, int | None]] = field(default_factory=dict)

    def serves(self, plan: SamplerPlan) -> bool:
        try:
            self.check(plan)
        except FieldError:
            return False
        return True

    def check(self, plan: SamplerPlan) -> None:
        """Refuse a plan this work cannot use, naming the samplers that can."""
        from pegasus.samplers import SAMPLERS

        fits = [n for n in SAMPLERS if self._serves(sampler_spec(n))]
        if self.reversible and not (plan.spec.reversible and not plan.stochastic):
            raise FieldError("sampler", f"{plan.name} is not an ODE solver that runs both ways; "
                                        f"{self.work} needs one: {' or '.join(fits)}")
        if self.inpaints and not plan.spec.inpaints:
            raise FieldError("sampler", f"{plan.name} takes no Langevin or consistency steps, "
                                        f"which is how the regenerated pixels adapt to the kept "
                                        f"ones; {self.work} needs {' or '.join(fits)}")
        if self.noise and not plan.stochastic:
            raise FieldError("sampler", f"{plan.name} is deterministic here (it injects no noise), "
                                        f"and {self.work} {self.noise_because}: use a sampler "
                                        f"that injects it ({', '.join(fits)}; heun with "
                                        f"churn){self.otherwise}")
        if self.noise is False and (plan.stochastic or (self.normal_start and plan.start != "normal")):
            raise FieldError("mode", f"{self.work} blends a deterministic sampler's starting "
                                     f"noise; {plan.name} injects noise here, so use eq4")

    def _serves(self, spec: SamplerSpec) -> bool:
        """Whether a sampler can serve this work with some options (a rough cut, for messages)."""
        if self.reversible:
            return spec.reversible
        if self.inpaints and not spec.inpaints:
            return False
        return self.noise is None or spec.stochastic({}, torch.ones(3)) == self.noise


SAMPLE = Use("sampling")
EQ4 = Use("an eq. 4 blend", noise=True)
SLERP = Use("a slerp blend", noise=False, normal_start=True,
            fallback={"score": ("heun", None), "consistency": ("consistency", 1)})
INPAINT = Use("inpainting", inpaints=True, fallback={"score": ("als", None)})
MASKED_EQ4 = Use("a masked blend", noise=True, inpaints=True, fallback={"score": ("als", None)})
# A hybrid regenerates a region of a base image (tasks/hybrid.py): the region adapts to the kept
# body through the noise each step injects, which a deterministic ODE has none of.
HYBRID = Use("a hybrid", noise=True, fallback={"score": ("als", None)},
             noise_because="fits its regenerated region to the kept body by the noise each step "
                           "injects", otherwise="")
ODE = Use("encoding", reversible=True, noise=False, denoise=False,
          fallback={"score": ("heun", None)})


def sampler_options(spec: SamplerSpec) -> dict[str, str]:
    """The options a user may give `spec`'s sampler, each with its kind ("number", "whole
    number", "flag" or "word"): its function's keyword-only parameters, less what every chain
    is handed (plan.run) and what its fit takes from the run's schedule (SamplerSpec.fixed)."""
    given = {"generator", "noise_sampler", "callback", "capture", *spec.fixed}

    def kind(annotation) -> str:
        text = annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)
        types = {t.strip() for t in text.split("|")}
        if "float" in types:
            return "number"
        return "whole number" if "int" in types else "flag" if "bool" in types else "word"

    return {**{p.name: kind(p.annotation)
               for p in inspect.signature(spec.function).parameters.values()
               if p.kind is p.KEYWORD_ONLY and p.name not in given}, **dict(spec.grid_options)}


def _check_options(spec: SamplerSpec, options: dict[str, Any]) -> None:
    """Each option one `spec`'s sampler takes, of its kind, and 0 or more where a number."""
    allowed = sampler_options(spec)
    for key, value in options.items():
        if key not in allowed:
            raise FieldError("sampler", f"{spec.name} takes no option {key!r}; its options: "
                                        f"{', '.join(sorted(allowed)) or 'none'}")
        if allowed[key] not in _kinds(value):
            raise FieldError("sampler", f"{spec.name}'s option {key} must be a {allowed[key]}"
                                        f"{' (true or false)' if allowed[key] == 'flag' else ''}, "
                                        f"got {value!r}")
        if "number" in _kinds(value) and not value >= 0:  # every one is a level, rate or count
            raise FieldError("sampler", f"{spec.name}'s option {key} must be 0 or more, got "
                                        f"{value!r}")


def _kinds(value) -> set[str]:
    """The kinds of option `value` fits (a whole number is a number too)."""
    if isinstance(value, bool):
        return {"flag"}
    if isinstance(value, int):
        return {"whole number", "number", "numbers"}
    if isinstance(value, list) and value and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return {"numbers"}
    return {"number", "numbers"} if isinstance(value, float) else {"word"}
