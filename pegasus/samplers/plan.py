"""A sampler fitted to a run's schedule and an evaluation budget: its grid, options, cost."""


from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from pegasus.errors import FieldError
from pegasus.fastpath.graphs import Capture
from pegasus.noise.schedule import Schedule, geometric_sigmas
from pegasus.noise.techniques import choose_eps
from pegasus.samplers import DEFAULT_STEPS, SAMPLERS
from pegasus.samplers.als import annealed_langevin
from pegasus.samplers.cas import consistent_annealed
from pegasus.samplers.heun import heun_sampler, karras_sigmas
from pegasus.samplers.pc import predictor_corrector
from pegasus.signatures import Callback, NoiseSampler, ScoreFn


@dataclass(frozen=True)
class SamplerPlan:
    """One sampler fitted to a schedule: its sigma grid, options and cost."""

    name: str
    sigmas: torch.Tensor  # the grid it walks, largest first (CPU, float32)
    evaluations: int  # network evaluations per image
    start: str  # "uniform" (annealed Langevin's prior) or "normal" (centre + sigma_1 z)
    stochastic: bool  # injects noise at each step (so eq. 4 can blend its chains)
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def captures_steps(self) -> bool:
        """Whether the sampler captures its own step, update included, when given a `capture`
        (annealed Langevin); the others are given a graphed score function (graphs.py)."""
        return self.name == "als"

    def start_point(self, uniform: torch.Tensor, normal: torch.Tensor,
                    centre: float | torch.Tensor = 0.5) -> torch.Tensor:
        """Where a chain starts: annealed Langevin's uniform noise, or a draw from the noisiest
        marginal p_sigma_1, the data blurred by N(0, sigma_1^2), approximated as
        centre + sigma_1 z. `centre` is the data's mean (per channel, broadcastable to one
        image; TrainedRun.centre): p_sigma_1 is centred there, not on 0, and an ODE carries a
        start that is off by it to the end (bench/README.md, "The start")."""
        if self.start == "uniform":
            return uniform
        return normal.mul(float(self.sigmas[0])).add_(centre)

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
    """Fit sampler `name` to `schedule` within `steps` evaluations (None: its default).

    Every grid is snapped to the run's own trained levels: a noise-conditional network is
    trained at those sigmas only, and the U-Net's Fourier features of log sigma (scale 16) turn
    over several radians between neighbouring levels, so it does not interpolate between them
    (annealed Langevin on 40 evenly re-spaced levels of the demo run scored KID 339e-3 against
    16e-3 on its own 93). Snapping merges grid points that fall on one level, so a plan may use
    fewer evaluations than its budget."""
    if name not in SAMPLERS:
        raise FieldError("sampler", f"{name!r} is not one of {', '.join(SAMPLERS)}")
    if steps is not None and steps < 1:
        raise FieldError("steps", f"must be at least 1, got {steps}")
    trained, denoise = schedule.sigmas(), schedule.denoise
    top, bottom = schedule.sigma_max, schedule.sigma_min
    options = {"denoise": denoise, **options}
    if name == "als":
        t = schedule.steps_per_level
        if steps is None:
            return SamplerPlan(name, trained, schedule.evaluations, "uniform", True,
                               {"steps_per_level": t, "eps": schedule.eps, **options})
        levels = min((steps - int(denoise)) // t, schedule.levels)
        _enough(name, levels, 2 * t + int(denoise), steps)
        grid = _on_trained(geometric_sigmas(top, bottom, levels), trained)
        # Technique 4 for the coarser ratio between the levels kept.
        eps = choose_eps((top / bottom) ** (1 / (len(grid) - 1)), bottom, t)
        return SamplerPlan(name, grid, len(grid) * t + int(denoise), "uniform", True,
                           {"steps_per_level": t, "eps": eps, **options})
    steps = DEFAULT_STEPS[name] if steps is None else steps
    if name == "heun":
        n = (steps + 1) // 2 if denoise else steps // 2 + 1
        _enough(name, n, 3, steps)
        grid = _on_trained(karras_sigmas(top, bottom, n), trained)
        return SamplerPlan(name, grid, 2 * (len(grid) - 1) + int(denoise), "normal",
                           options.get("churn", 0.0) > 0, options)
    if name == "pc":
        per_level = options.get("corrector_steps", 1) + 1
        n = (steps + 1 - int(denoise)) // per_level if not denoise else steps // per_level
        _enough(name, n, 2 * per_level, steps)
        grid = _on_trained(geometric_sigmas(top, bottom, n), trained)
        return SamplerPlan(name, grid, len(grid) * per_level - (not denoise), "normal", True, options)
    n = steps - int(denoise)
    _enough(name, n, 2 + int(denoise), steps)
    grid = _on_trained(geometric_sigmas(top, bottom, n), trained)
    return SamplerPlan(name, grid, len(grid) + int(denoise), "normal", True, options)


def _on_trained(grid: torch.Tensor, trained: torch.Tensor) -> torch.Tensor:
    """Each grid sigma replaced by the nearest trained level (in log sigma), duplicates merged,
    order kept (largest first)."""
    distance = (grid.double().log()[:, None] - trained.double().log()[None, :]).abs()
    index = torch.unique(distance.argmin(dim=1))  # sorted ascending: largest sigma first
    return trained[index]


def _enough(name: str, levels: int, least: int, steps: int) -> None:
    if levels < 2:
        raise FieldError("steps", f"{steps} is too few for {name}: it needs at least {least} "
                         f"evaluations")

