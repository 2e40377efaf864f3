"""A sampler fitted to a run's schedule and an evaluation budget: its grid, options and cost,
and the one place a plan's chain is started and run."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch

from pegasus.errors import FieldError
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
        """The chain from `x`; `capture` reaches a sampler that captures its own step."""
        extra = {"capture": capture} if self.captures_steps else {}
        return self.spec.function(score_fn, x, self.sigmas.to(x.device), generator=generator,
                                  noise_sampler=noise_sampler, callback=callback,
                                  **self.options, **extra)


def plan_sampler(name: str, schedule: Schedule, steps: int | None = None, *,
                 trained_levels: bool = True, **options: Any) -> SamplerPlan:
    """Fit sampler `name` to `schedule` within `steps` evaluations (None: its default).

    With `trained_levels` (a network that knows the run's discrete levels only), every grid is
    snapped to them: a noise-conditional network trained at those sigmas alone, whose sigma
    input does not interpolate, is wrong between them; the U-Net's Fourier features of log sigma
    (scale 16) turn over several radians between neighbouring levels (annealed Langevin on 40
    evenly re-spaced levels of the demo run scored KID 339e-3 against 16e-3 on its own 93).
    Snapping merges grid points that fall on one level, so a plan may then use fewer evaluations
    than its budget. A network trained on continuous sigmas, or one whose sigma input
    interpolates (TrainedRun.knows_every_sigma), walks each sampler's own grid."""
    name, written = split_sampler(name)
    spec = sampler_spec(name)
    options = {**written, **options}
    _check_options(spec, options)
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise FieldError("steps", f"must be between 1 and {MAX_STEPS:,} network evaluations per "
                                  f"image, got {steps:,}")
    trained = schedule.sigmas()
    snap = (lambda grid: on_levels(grid, trained)) if trained_levels else (lambda grid: grid)
    fitted = spec.fit(schedule, steps, {"denoise": schedule.denoise, **options}, snap)
    return SamplerPlan(spec, fitted.sigmas, fitted.evaluations, fitted.options)


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

    return {p.name: kind(p.annotation) for p in inspect.signature(spec.function).parameters.values()
            if p.kind is p.KEYWORD_ONLY and p.name not in given}


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
        return {"whole number", "number"}
    return {"number"} if isinstance(value, float) else {"word"}


def on_levels(grid: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Each grid sigma replaced by the nearest of `levels` (largest first; nearest in log
    sigma), duplicates merged, order kept: a binary search per point, so even a grid of the
    largest budget costs milliseconds."""
    ascending = levels.double().log().flip(0)
    x = grid.double().log()
    right = torch.searchsorted(ascending, x).clamp(1, len(ascending) - 1)
    left = right - 1
    nearer = torch.where((x - ascending[left]).abs() <= (ascending[right] - x).abs(), left, right)
    index = torch.unique(len(levels) - 1 - nearer)  # sorted ascending: largest sigma first
    return levels[index]
