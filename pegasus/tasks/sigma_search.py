"""The consistency sampler's sigmas, chosen on a tuned run by measurement (`pegasus
search-sigmas`): where multistep consistency sampling renoises between its evaluations.

openai/consistency_models chooses its 2-step sampler's intermediate sigma by a ternary search
on the metric; a too small one is a known cause of poor 2-step images. Here the metric is the
held-out KID on the run's judge features: `num` samples against images the run never trained
on (its training images where it has none), every candidate drawn from the same seed, so that
the candidates differ by their sigmas alone and not by their luck. Each sigma is found by a
golden-section search of the log sigma (a ternary search that reuses one probe per step),
begun from the best of a coarse grid over the whole bracket: the figure need not have one
minimum (at 32 px the grain of 2 evaluations has two, bench/README.md, "Two evaluations"),
and a golden section alone follows whichever its first two probes point to. Greedily: the
sigma below sigma_1 for 2 evaluations, then, keeping it, the next one down for 3, and so on up
to the number of evaluations asked for; each count's sigmas are written into the run
(run/sigmas.py) and used by the consistency sampler at that count unless it is given
others (consistency[sigmas=[...]]).

KID on a classifier's features does not see grain, and alone it chose sigmas whose samples were
grainy (bench/README.md, "Two evaluations"). So a candidate's figure is its KID while its
neighbour-pixel difference (pegasus/texture.py) stays within `grain` times the held-out
images'; past that, every candidate ranks after all that keep within it, the less grainy first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from pegasus.data import load_held_out
from pegasus.errors import FieldError, UserError
from pegasus.fastpath import Execution
from pegasus.run.job import SamplingJob
from pegasus.run.sigmas import Searched, SearchedSigmas
from pegasus.samplers.consistency import MAX_STEPS
from pegasus.tasks.evaluate import real_images
from pegasus.tasks.features import Extractor, feature_extractor, scores
from pegasus.texture import neighbour_difference

GOLDEN = (math.sqrt(5) - 1) / 2
HELD_OUT = 1000  # images the samples are compared with, at most
# The search's bracket for each sigma: from a little above sigma_L (f is the identity there)
# to the sigma above it, less a little (two equal sigmas would merge into one evaluation).
FLOOR, GAP = 2.0, 0.95


@dataclass(frozen=True, kw_only=True)
class SearchRequest:
    """What `pegasus search-sigmas` and Model.search_sigmas ask for."""

    steps: int = 4  # search for 2 .. steps evaluations
    num: int = 256  # samples each candidate is scored on
    seed: int = 0
    probes: int = 8  # each sigma's probes number this + 2: half on a grid, then a golden section
    # The most neighbour-pixel difference a candidate may have, over the held-out images' (None:
    # KID alone): the bar of 10% above the data's.
    grain: float | None = 1.1
    batch_size: int | None = None

    def validate(self) -> None:
        if not 2 <= self.steps <= MAX_STEPS:
            raise FieldError("steps", f"must be between 2 and {MAX_STEPS} evaluations (one has "
                                      f"no sigma below sigma_1 to choose), got {self.steps}")
        if self.num < 4:
            raise FieldError("num", f"must be at least 4 samples for KID, got {self.num}")
        if not 1 <= self.probes <= 40:
            raise FieldError("probes", f"must be between 1 and 40, got {self.probes}")
        if self.grain is not None and not self.grain > 0:
            raise FieldError("grain", f"must be above 0 (a ratio to the data's), got {self.grain}")


@dataclass(frozen=True)
class Probe:
    steps: int
    sigmas: tuple[float, ...]  # below sigma_1
    kid: float
    kid_std: float
    grain: float = 1.0  # neighbour-pixel difference over the held-out images'
    limit: float | None = None  # the request's grain bound

    @property
    def figure(self) -> float:
        """What the search minimises: KID within the grain bound, and past it 1 + the excess,
        above any KID (KID x 1e3 runs to hundreds at worst, so a KID stays below 1)."""
        if self.limit is None or self.grain <= self.limit:
            return self.kid
        return 1.0 + self.grain - self.limit


def search_sigmas(trained, request: SearchRequest, *, execution: Execution = Execution(),
                  heard: Callable[[Probe], None] | None = None) -> SearchedSigmas:
    """Search the consistency sampler's sigmas of a tuned TrainedRun for 2 .. request.steps
    evaluations (module docstring), write them into its run folder, and return them; `heard`
    hears each probe as it is scored."""
    request.validate()
    if trained.model.learns != "consistency":
        raise UserError(f"{trained.source} is not consistency-tuned: its samplers walk the "
                        f"run's schedule; tune it first (pegasus tune), then search the new run")
    if trained.run_dir is None:
        raise UserError("searching sigmas writes them into a run folder: load the tuned run "
                        "from its folder, not from exported weights")
    score = _Scorer(trained, request, execution)
    top, bottom = trained.schedule.sigma_max, trained.schedule.sigma_min
    found, above = {}, []
    for steps in range(2, request.steps + 1):
        high = (above[-1] if above else top) * GAP
        probes = _search(lambda s, n=steps, kept=tuple(above): score(n, (*kept, s)), FLOOR * bottom, high,
                         request.probes, heard)
        best = min(probes, key=lambda p: p.figure)
        found[steps] = Searched(best.sigmas, best.kid, best.kid_std)
        above = list(best.sigmas)
    searched = SearchedSigmas(trained.step, request.num, request.seed, found)
    searched.write(trained.run_dir.searched_sigmas)
    return searched


def _search(figure: Callable[[float], Probe], low: float, high: float, probes: int,
            heard) -> list[Probe]:
    """`probes` + 2 probes of `figure` over log sigma in [low, high]: half of them on an even
    grid inside the bracket, the rest a golden section between the best grid point's two
    neighbours (or the bracket's ends)."""
    if not low < high:
        raise UserError(f"no room for another sigma between {low:.3g} and {high:.3g}: search "
                        f"fewer evaluations")
    a, b = math.log(low), math.log(high)
    points = (probes + 2) // 2
    edges = [a + (b - a) * i / (points + 1) for i in range(points + 2)]
    done = [_heard(figure, math.exp(u), heard) for u in edges[1:-1]]
    best = min(range(points), key=lambda i: done[i].figure)
    return done + _golden(figure, edges[best], edges[best + 2], probes - points, heard)


def _heard(figure: Callable[[float], Probe], sigma: float, heard) -> Probe:
    result = figure(sigma)
    if heard is not None:
        heard(result)
    return result


def _golden(figure: Callable[[float], Probe], a: float, b: float, probes: int,
            heard) -> list[Probe]:
    """Golden-section probes of `figure` over log sigma in [a, b]: the bracket's two inner
    points, then one new point a step (`probes` of them), toward the lower figure."""
    done: list[Probe] = []

    def probe(u: float) -> Probe:
        done.append(_heard(figure, math.exp(u), heard))
        return done[-1]

    c, d = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
    fc, fd = probe(c).figure, probe(d).figure
    for _ in range(probes):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - GOLDEN * (b - a)
            fc = probe(c).figure
        else:
            a, c, fc = c, d, fd
            d = a + GOLDEN * (b - a)
            fd = probe(d).figure
    return done


class _Scorer:
    """Held-out KID of a tuned run's samples at given sigmas: the real images' features once,
    every candidate's samples from one seed."""

    def __init__(self, trained, request: SearchRequest, execution: Execution) -> None:
        folder = trained.run_dir.path
        if not trained.run_dir.classifier("judge").is_file():
            raise UserError(f"searching sigmas scores samples with the run's judge, and "
                            f"{folder} has none: train it with pegasus train-judge --run "
                            f"{folder}")
        self.trained, self.request, self.execution = trained, request, execution
        self.extract = Extractor(feature_extractor("judge", folder, trained.device), None,
                                 trained.device)
        held = load_held_out(trained.config.data,
                             per_class=HELD_OUT // len(trained.config.data.classes)).images
        real = (held.to(trained.device).float() / 255 if len(held) else
                real_images(trained.config, trained.device, HELD_OUT, request.seed))
        self.real = self.extract.of(real[:HELD_OUT])
        self.real_grain = neighbour_difference(real[:HELD_OUT]).mean().item()

    def __call__(self, steps: int, sigmas: tuple[float, ...]) -> Probe:
        r = self.request
        plan = self.trained.plan(f"consistency[sigmas=[{', '.join(map(repr, sigmas))}]]", steps)
        job = SamplingJob.make(self.trained, plan, num=r.num, batch_size=r.batch_size,
                               execution=self.execution)
        with torch.no_grad():
            images = job.images(r.seed)
            fake = self.extract.of(images)
        kid, kid_std, _ = scores(self.real, fake, seed=r.seed, device=self.trained.device)
        grain = neighbour_difference(images).mean().item() / self.real_grain
        # The sigmas asked for: a network that knows its levels alone walks the levels nearest
        # them, at use as here (ScoreModel.round_sigma).
        return Probe(steps, sigmas, kid, kid_std, grain, r.grain)
