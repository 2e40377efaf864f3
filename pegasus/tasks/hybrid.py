"""Hybrids: images of one class (the base, a horse) that grow the parts of another (a bird's
wings), from a model that saw only the two classes, never a hybrid.

An eq. 4 blend's middle columns are mostly halfway morphs: guidance toward both classes at once
pulls toward the guide's decision boundary, an image it cannot tell apart, which is as often a
cross-fade as a hybrid (Composable Diffusion, Liu et al. 2022, composes concepts a two-way
classifier cannot tell apart from each other's absence). A hybrid here is made by masked
composition instead, in three steps per image:

1. the base: a sample guided toward the base class (stream 0 of its seed, the one `pegasus
   sample` draws with);
2. the region above the base's back, from its own silhouette (regions.py);
3. candidates: the region regenerated under guidance toward the other class, the body kept
   exactly (the kept pixels follow the exact score of the base plus each step's noise, as in
   inpainting, inpaint.py), each candidate from its own stream, and only the parts that grew
   there pasted onto the base; the best is kept by the run's
   own guide classifier at its cleanest sigma (hybrid_scores), where the winged-horses text's
   author chose by eye.

Image i depends on its seed and index only, whatever the number of images and the batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.errors import FieldError, UserError
from pegasus.fastpath import Execution, fast_log_prob
from pegasus.images import save_grid
from pegasus.model.guides import ClassGuide, guided
from pegasus.noise.streams import ImageStreams
from pegasus.run.job import MAX_IMAGES, SamplingJob, draw_block
from pegasus.samplers.plan import HYBRID, SamplerPlan
from pegasus.tasks.inpaint import masked_score, paste
from pegasus.tasks.regions import above_back, background, silhouette
from pegasus.tasks.steering import check_classes, check_guidance, classifier

# Candidate c of an image is drawn from stream HYBRID_STREAM + c of its seed (0 is the base's,
# 1 eq. 4's q: blend.py).
HYBRID_STREAM = 2
MAX_CANDIDATES = 64
# A region the object fills to this share counts as full: wings cover about a third of the
# region above the back; an empty region (no parts grown) scores 0.
FULL_COVERAGE = 0.25


@dataclass(frozen=True, kw_only=True)
class HybridRequest:
    """What `pegasus hybrid` and Model.hybrid ask for, with the defaults of both."""

    base: str | None = None  # the class of the body; None: the run's first
    parts: str | None = None  # the class whose parts grow on it; None: the run's other
    num: int = 16
    seed: int = 0
    sampler: str | None = None  # None: the run's own if it can, else als (TrainedRun.plan)
    steps: int | None = None
    guidance: float = 10.0  # W toward the base for the body, toward the parts in the region
    candidates: int = 4  # regenerations of each image's region; the best by hybrid_scores
    batch_size: int | None = None

    def validate(self, trained) -> SamplerPlan:
        """The sampler's plan on the run, once every field is known to be usable."""
        check_guidance(self.guidance)
        if self.guidance == 0:
            raise FieldError("guidance", "must be above 0: the body is guided toward its class "
                                         "and the region toward the other")
        if not 1 <= self.candidates <= MAX_CANDIDATES:
            raise FieldError("candidates", f"must be from 1 to {MAX_CANDIDATES}, got "
                                           f"{self.candidates}")
        if not 1 <= self.num <= MAX_IMAGES:
            raise FieldError("num", f"must be between 1 and {MAX_IMAGES:,} images, got {self.num:,}")
        check_classes(trained.classes, self.base, self.parts)
        self.classes(trained.classes)
        if trained.run_dir is None:
            raise UserError("a hybrid needs a run folder (its guide classifier); exported "
                            "weights carry none")
        return trained.plan(self.sampler, self.steps, use=HYBRID)

    def classes(self, classes: list[str]) -> tuple[int, int]:
        """The indices of the base class and the parts' class."""
        if len(classes) < 2:
            raise UserError("a hybrid needs a run trained on at least two classes")
        base = self.base or (classes[0] if self.parts != classes[0] else classes[1])
        parts = self.parts or next(c for c in classes if c != base)
        return classes.index(base), classes.index(parts)


@dataclass
class HybridScores:
    """How hybrid each image is, by the run's own guide at its cleanest sigma: p(base) of the
    body alone (the image outside the region, over its background), p(parts) of the region
    alone, and the share of the region the object fills."""

    body: torch.Tensor  # (B,)
    parts: torch.Tensor  # (B,)
    coverage: torch.Tensor  # (B,)

    @property
    def hybrid(self) -> torch.Tensor:
        """sqrt(p_body p_parts), scaled down where the region is less than FULL_COVERAGE full:
        1 for a body and parts each recognised, with parts that fill their place."""
        return (self.body * self.parts).sqrt() * (self.coverage / FULL_COVERAGE).clamp(max=1)


@torch.no_grad()
def hybrid_scores(images: torch.Tensor, regions: torch.Tensor, log_prob, base: int,
                  parts: int) -> HybridScores:
    """The scores of images (B, C, H, W) whose parts grew in `regions` (B, 1, H, W), by a
    classifier's log_prob(x) -> (B, classes) of clean images."""
    behind = background(images).expand_as(images)
    body = torch.lerp(images, behind, regions)
    grown = torch.lerp(behind, images, regions)
    filled = (silhouette(images) * regions).flatten(1).sum(1)
    coverage = filled / regions.flatten(1).sum(1).clamp(min=1)
    return HybridScores(log_prob(body)[:, base].exp(), log_prob(grown)[:, parts].exp(), coverage)


@dataclass
class Hybrids:
    images: torch.Tensor  # (num, C, H, W) in [0, 1]: each image's best candidate
    bases: torch.Tensor  # (num, C, H, W): the base images they grew on
    regions: torch.Tensor  # (num, 1, H, W): 1 where the parts grew
    scores: HybridScores  # of the images
    base: str  # the class of the body
    parts: str  # the class whose parts grew
    sampler: str
    evaluations: int  # network evaluations per image, its base and candidates together

    def save(self, out) -> Path:
        """The hybrids as one grid, enlarged so that small images can be seen."""
        return save_grid(self.images, Path(out), upscale=True)


def hybrid(trained, request: HybridRequest, *, execution: Execution = Execution()) -> Hybrids:
    """`request.num` hybrids by a TrainedRun, every input checked before any sampling."""
    plan = request.validate(trained)
    steer = classifier(trained, "guide")
    chains = 1 + request.candidates
    job = SamplingJob.make(trained, plan, num=request.num, batch_size=request.batch_size,
                           execution=execution, chains=chains)
    grower = _Grower(job, request, steer,
                     execution.bar(f"hybrid ({plan.name})", job.evaluations * chains))
    made = [grower.block(first, size) for first, size in job.blocks(0, request.num)]
    images, bases, regions = (torch.cat([m[i] for m in made])[: request.num].cpu()
                              for i in range(3))
    scores = HybridScores(*(torch.cat([getattr(m[3], name) for m in made])[: request.num].cpu()
                            for name in ("body", "parts", "coverage")))
    return Hybrids(images, bases, regions, scores, trained.classes[grower.base],
                   trained.classes[grower.parts],
                   plan.name, plan.evaluations * chains)


class _Grower:
    """A hybrid job's chains for one block of images: the bases, then each candidate."""

    def __init__(self, job: SamplingJob, request: HybridRequest, steer, callback) -> None:
        trained = job.trained
        self.job, self.request, self.callback = job, request, callback
        self.base, self.parts = request.classes(trained.classes)
        log_prob = fast_log_prob(steer, job.path)
        cleanest = torch.tensor(trained.schedule.sigma_min, device=trained.device)
        self.clean_log_prob = lambda x: steer.log_prob(x, cleanest.expand(len(x)))

        def toward(index: int) -> ClassGuide:
            weights = torch.zeros(len(trained.classes), device=trained.device)
            weights[index] = 1
            return ClassGuide(log_prob, weights)

        self.body_guide = request.guidance * toward(self.base)
        self.parts_guide = request.guidance * toward(self.parts)

    def block(self, first: int, size: int):
        """(hybrids, bases, regions, scores) of images first .. first + size - 1."""
        trained, plan, request = self.job.trained, self.job.plan, self.request
        device, shape = trained.device, trained.image_shape
        body = draw_block(guided(self.job.score, self.body_guide), plan, first=first, size=size,
                          shape=shape, seed=request.seed, device=device, centre=trained.centre,
                          callback=self.callback)
        region = above_back(silhouette(body))
        score = masked_score(guided(self.job.score, self.parts_guide.masked(region)), body, region)
        best = best_scores = None
        for c in range(request.candidates):
            streams = ImageStreams(request.seed, first, size, device, stream=HYBRID_STREAM + c)
            start = plan.start_point(*streams.starting_draws(shape), trained.centre)
            if plan.start == "normal":
                # The kept pixels at base + sigma_1 z: the point the masked score describes.
                start = start + (body - trained.centre) * (1 - region)
            grown = plan.run(score, start, noise_sampler=streams.noise_sampler(shape),
                             callback=self.callback).clamp_(0, 1)
            # Of the region, only what grew there (pixels that stand out from the base's
            # background) replaces the base: its sky stays its own, with no seam around the
            # region and none of the regenerated background's grain.
            grown = paste(grown, body, region * silhouette(grown, background(body)))
            judged = hybrid_scores(grown, region, self.clean_log_prob, self.base, self.parts)
            if best is None:
                best, best_scores = grown, judged
                continue
            better = judged.hybrid > best_scores.hybrid
            best = torch.where(better.view(-1, 1, 1, 1), grown, best)
            best_scores = HybridScores(*(torch.where(better, new, old) for new, old in (
                (judged.body, best_scores.body), (judged.parts, best_scores.parts),
                (judged.coverage, best_scores.coverage))))
        return best, body, region, best_scores
