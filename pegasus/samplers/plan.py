"""A sampler fitted to a run's schedule and an evaluation budget: its grid, options, cost."""


from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pegasus.errors import FieldError
from pegasus.planner import choose_eps
from pegasus.samplers import DEFAULT_STEPS, SAMPLERS
from pegasus.samplers.cas import consistent_annealed
from pegasus.samplers.heun import heun_sampler, karras_sigmas
from pegasus.samplers.langevin import Capture, annealed_langevin
from pegasus.samplers.pc import predictor_corrector
from pegasus.schedule import Schedule, geometric_sigmas
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


@dataclass(frozen=True)
class SamplerPlan:
    """One sampler fitted to a schedule: its sigma grid, options and cost."""

    name: str
    sigmas: torch.Tensor  # the grid it walks, largest first (CPU, float32)
    evaluations: int  # network evaluations per image
    start: str  # "uniform" (annealed Langevin's prior) or "normal" (sigma_1 z)
    stochastic: bool  # injects noise at each step (so eq. 4 can blend its chains)
    options: dict[str, Any] = field(default_factory=dict)

    def start_point(self, uniform: torch.Tensor, normal: torch.Tensor) -> torch.Tensor:
        return uniform if self.start == "uniform" else normal * float(self.sigmas[0])

    def run(self, score_fn: ScoreFn, x: torch.Tensor, *, generator: torch.Generator | None = None,
            noise_sampler: NoiseSampler | None = None, callback: Callback | None = None,
            capture: Capture | None = None) -> torch.Tensor:
        fn: Callable[..., torch.Tensor] = {
            "als": functools.partial(annealed_langevin, capture=capture),
            "heun": heun_sampler, "pc": predictor_corrector, "cas": consistent_annealed,
        }[self.name]
        return fn(score_fn, x, self.sigmas.to(x.device), generator=generator,
                  noise_sampler=noise_sampler, callback=callback, **self.options)


def plan_sampler(name: str, schedule: Schedule, steps: int | None = None,
                 **options: Any) -> SamplerPlan:
    """Fit sampler `name` to `schedule` within `steps` evaluations (None: its default)."""
    if name not in SAMPLERS:
        raise FieldError("sampler", f"{name!r} is not one of {', '.join(SAMPLERS)}")
    if steps is not None and steps < 1:
        raise FieldError("steps", f"must be at least 1, got {steps}")
    top, bottom, denoise = schedule.sigma_max, schedule.sigma_min, schedule.denoise
    options = {"denoise": denoise, **options}
    if name == "als":
        t = schedule.steps_per_level
        if steps is None:
            return SamplerPlan(name, schedule.sigmas(), schedule.evaluations, "uniform", True,
                               {"steps_per_level": t, "eps": schedule.eps, **options})
        levels = (steps - int(denoise)) // t
        _enough(name, levels, 2 * t + int(denoise), steps)
        coarse = Schedule(top, bottom, levels, t, 1.0, denoise)
        eps = choose_eps(coarse.gamma, bottom, t)
        return SamplerPlan(name, coarse.sigmas(), levels * t + int(denoise), "uniform", True,
                           {"steps_per_level": t, "eps": eps, **options})
    steps = DEFAULT_STEPS[name] if steps is None else steps
    if name == "heun":
        n = (steps + 1) // 2 if denoise else steps // 2 + 1
        _enough(name, n, 3, steps)
        return SamplerPlan(name, karras_sigmas(top, bottom, n), 2 * (n - 1) + int(denoise),
                           "normal", options.get("churn", 0.0) > 0, options)
    if name == "pc":
        per_level = options.get("corrector_steps", 1) + 1
        n = (steps + 1 - int(denoise)) // per_level if not denoise else steps // per_level
        _enough(name, n, 2 * per_level, steps)
        return SamplerPlan(name, geometric_sigmas(top, bottom, n), n * per_level - (not denoise),
                           "normal", True, options)
    n = steps - int(denoise)
    _enough(name, n, 2 + int(denoise), steps)
    return SamplerPlan(name, geometric_sigmas(top, bottom, n), n + int(denoise), "normal", True,
                       options)


def _enough(name: str, levels: int, least: int, steps: int) -> None:
    if levels < 2:
        raise FieldError("steps", f"{steps} is too few for {name}: it needs at least {least} "
                         f"evaluations")

