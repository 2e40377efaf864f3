"""What a sampler declares (`SPEC` in its own module) and how a plan reads it.

A sampler module holds its pure function and a `SamplerSpec`: the function, its default budget,
how it fits a run's schedule within a budget (its grid and what that grid costs), where its
chains start, whether they inject noise (what eq. 4 blends need), whether they fit regenerated
pixels to kept ones (what inpainting and masked blends need), whether it captures its own step
in a CUDA graph, and what the model it samples must learn. `plan.plan_sampler` and the uses
it checks a plan against (`plan.Use`), the CLI and `pegasus samplers` read these fields;
nothing else knows a sampler by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from pegasus.errors import FieldError
from pegasus.noise.schedule import Schedule

# A grid laid on the sigmas the network knows (plan.py: each grid sigma rounded by the model,
# ScoreModel.round_sigma, duplicates merged), or left as it is for a network that knows every
# sigma.
Snap = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Fitted:
    """A sampler fitted to a schedule and a budget."""

    sigmas: torch.Tensor  # the grid it walks, largest first (CPU, float32)
    evaluations: int  # network evaluations per image on that grid
    options: dict[str, Any]  # the options its function is called with


@dataclass(frozen=True)
class SamplerSpec:
    name: str
    summary: str  # one line for `pegasus samplers`: what it is, after which paper
    # (score_fn, x, sigmas, *, generator, noise_sampler, callback, **options) -> x
    function: Callable[..., torch.Tensor]
    # (schedule, budget of evaluations or None for the default, options, snap) -> Fitted
    fit: Callable[[Schedule, int | None, dict[str, Any], Snap], Fitted]
    default_steps: int | None  # the default budget; None: the run's own schedule
    start: str  # "uniform" (annealed Langevin's prior) or "normal" (centre + sigma_1 z)
    # Whether its chains inject noise, given its options and grid (what eq. 4 blends need).
    stochastic: Callable[[dict[str, Any], torch.Tensor], bool] = lambda options, sigmas: True
    # Fits regenerated pixels to kept ones (tasks/inpaint.py): by Langevin steps, or by
    # consistency steps that restart from the kept pixels.
    inpaints: bool = False
    captures_steps: bool = False  # given a capture, graphs its whole step (update included)
    # An ODE solver that walks its grid either way: from an image up to its latent noise and
    # back (tasks/encode.py), when it injects no noise.
    reversible: bool = False
    # Options its fit takes from the run's schedule, which decide what a plan costs: not the
    # user's to give (als's T steps per level).
    fixed: tuple[str, ...] = ()
    # Options its fit alone takes, to lay its grid, with their kinds ("numbers": one number or
    # a list of them): the consistency sampler's chosen sigmas.
    grid_options: tuple[tuple[str, str], ...] = ()
    # What the model it samples must learn (hookspecs.Objective.learns): "score", a diffusion
    # model's score, or "consistency", a consistency function's (objectives/ect.py).
    learns: str = "score"
    # The largest budget it takes, where more evaluations stop meaning anything (None: the
    # plan's own bound).
    max_steps: int | None = None


def enough(name: str, points: int, least: int, steps: int) -> None:
    """Refuse a budget that leaves a sampler fewer than two grid points."""
    if points < 2:
        raise FieldError("steps", f"{steps} is too few for {name}: it needs at least {least} "
                         f"evaluations")
