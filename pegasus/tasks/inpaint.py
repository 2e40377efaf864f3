"""Inpainting: keep the pixels a mask marks as known, regenerate the rest (NCSN, Song & Ermon
2019, and the reference code's inpainting sampler), with any of the samplers.

The reference re-noises the known pixels from the given image y at every level, y + sigma_i z,
and lets Langevin fill in the others. Here the score does the re-noising: on known pixels it is
the exact score of that perturbation, -(x - y) / sigma^2, and on unknown ones the model's. A
sampler then carries the known pixels as y + sigma z by its own rule (Technique 4 chooses eps so
that Langevin keeps a Gaussian's variance at each level; consistent annealed sampling and the
probability-flow ODE are exact for it), and the unknown pixels see at each level the known ones
at that level's noise, as in the reference. The last step (Tweedie) lands the known pixels on
y; they are pasted back exactly all the same.

Conditioning this way is an approximation (also in the reference, and in Song et al. 2021's
imputation): the unknown pixels adapt to the known ones by Langevin mixing, at levels where the
known ones are still noisy. It needs Langevin steps: annealed Langevin (als) or the
predictor-corrector (pc). A deterministic ODE (heun) or one ancestral step per level (cas) has
none, and leaves the regenerated pixels close to unconditional samples; they are refused.
Multistep consistency sampling of a tuned run inpaints the other way (Song et al. 2023,
"Consistency models", Algorithm 4): with this score each step's f lands the known pixels on y
and maps the unknown ones from the whole noisy image, and the next step renoises both, so the
regenerated pixels are redrawn from a point that holds the kept ones.

A guide (model/guides.py) steers the regenerated pixels: toward a class of the run's guide
classifier, say (`toward` and `guidance`), so that the top of a horse grows a bird's wings.
Outside the mask it has no effect: the kept pixels follow their exact score.

Masks are 1 where pixels are regenerated and 0 where the given image is kept (inputs.py reads
pictures and masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pegasus.errors import FieldError
from pegasus.fastpath import Execution, fast_log_prob
from pegasus.fastpath.graphs import chain_graphs
from pegasus.model.guides import ClassGuide, Guide, guided
from pegasus.noise.streams import ImageStreams
from pegasus.run.job import MAX_IMAGES, SamplingJob, fitting_batch
from pegasus.samplers.plan import INPAINT, SamplerPlan
from pegasus.signatures import Callback, ScoreFn
from pegasus.tasks.inputs import check_mask, given_image, resolve_image, resolve_mask
from pegasus.tasks.steering import check_classes, check_guidance, classifier


def masked_score(score_fn: ScoreFn, image: torch.Tensor, mask: torch.Tensor) -> ScoreFn:
    """The model's score where `mask` is 1, the exact score of y + sigma z where it is 0."""

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        s = sigma.view(-1, *([1] * (x.dim() - 1)))
        known = (image - x) / s.square()
        return torch.lerp(known, score_fn(x, sigma), mask)

    return score


def paste(x: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The known pixels exactly as given, the regenerated ones as sampled."""
    return torch.where(mask > 0.5, x, image.expand_as(x))


def inpaint(score_fn: ScoreFn, image: torch.Tensor, mask: torch.Tensor, plan: SamplerPlan, *,
            num: int, seed: int, callback: Callback | None = None,
            centre: float | torch.Tensor = 0.5, guide: Guide | None = None) -> torch.Tensor:
    """`num` completions (num, C, H, W) of `image` (C, H, W) where `mask` (1 or C, H, W) is 1,
    each image from its own seeded stream, as a sampling job draws them (run/job.py; from
    `centre` for a sampler that starts at the noisiest level), the regenerated pixels steered
    by `guide`."""
    check_mask(mask)
    INPAINT.check(plan)
    device, shape = image.device, tuple(image.shape)
    streams = ImageStreams(seed, 0, num, device)
    start = plan.start_point(*streams.starting_draws(shape), centre)
    if plan.start == "normal":
        # centre + sigma_1 z, with the known pixels at y + sigma_1 z: the point the masked score
        # describes, and all a one-step consistency sampler sees of them.
        start = start + (image - centre) * (1 - mask)
    # A few completions are a small batch, where launching kernels one by one would bound the
    # GPU: the chain replays a CUDA graph there (fastpath/graphs.py).
    score = masked_score(guided(score_fn, guide), image, mask)
    score, capture = chain_graphs(plan, score, device) if guide is None else (score, None)
    out = plan.run(score, start, noise_sampler=streams.noise_sampler(shape), callback=callback,
                   capture=capture)
    return paste(out.clamp_(0, 1), image, mask)


@dataclass
class Inpainting:
    given: torch.Tensor  # (3, res, res), the image as read (or drawn)
    mask: torch.Tensor  # (1, res, res), 1 where regenerated
    completions: torch.Tensor  # (num, 3, res, res)
    sampler: str
    evaluations: int

    def row(self) -> torch.Tensor:
        """The image, the mask, what is kept (grey where regenerated) and the completions."""
        shown = self.given * (1 - self.mask) + 0.5 * self.mask
        return torch.cat([self.given[None], self.mask.expand_as(self.given)[None], shown[None],
                          self.completions])


@dataclass(frozen=True, kw_only=True)
class InpaintRequest:
    """What `pegasus inpaint` and Model.inpaint ask for, with the defaults of both."""

    image: str  # a file, or sample:SEED (inputs.py)
    mask: str = "right-half"  # a name, box:..., or a mask file: white is regenerated
    num: int = 8  # completions
    seed: int = 0
    sampler: str | None = None  # None: the run's own if it inpaints, else als (TrainedRun.plan)
    steps: int | None = None  # evaluation budget; None: the sampler's default
    toward: str | None = None  # a class the guide classifier steers the regenerated pixels to
    guidance: float = 0.0  # its weight W (blend.py's bound)

    def validate(self, trained) -> SamplerPlan:
        """The sampler's plan on the run, once every field is known to be usable."""
        check_guidance(self.guidance)
        check_classes(trained.classes, self.toward)
        if (self.toward is None) != (self.guidance == 0):
            raise FieldError("toward", "and guidance go together: name the class the regenerated "
                                       "pixels are guided toward and a weight above 0")
        if self.guidance > 0 and trained.run_dir is None:
            raise FieldError("guidance", "needs a run folder (its guide); exported weights carry "
                                         "none")
        if self.num < 1:
            raise FieldError("num", f"must be at least 1, got {self.num}")
        if self.num > MAX_IMAGES or fitting_batch(trained, self.num, None) < self.num:
            raise FieldError("num", f"{self.num:,} completions do not fit in the free memory at "
                                    f"once; the most that fit are about "
                                    f"{fitting_batch(trained, MAX_IMAGES, None):,}")
        return trained.plan(self.sampler, self.steps, use=INPAINT)


def inpaint_run(trained, request: InpaintRequest, *,
                execution: Execution = Execution()) -> Inpainting:
    """`request.num` completions of an image by a TrainedRun, everything the user gave checked
    before any sampling (a file read, a sample not drawn)."""
    plan = request.validate(trained)
    given = given_image(request.image, trained.config.data.res)
    region = resolve_mask(request.mask, trained.config.data.res, request.image).to(trained.device)
    steer = classifier(trained, "guide") if request.guidance > 0 else None
    job = SamplingJob.make(trained, plan, num=request.num, batch_size=request.num,
                           execution=execution)
    guide = None
    if steer is not None:
        toward = torch.zeros(len(trained.classes), device=trained.device)
        toward[trained.classes.index(request.toward)] = 1
        guide = request.guidance * ClassGuide(fast_log_prob(steer, job.path), toward)
    given = resolve_image(trained, given)
    callback = execution.bar(f"inpaint ({plan.name})", plan.evaluations)
    completions = inpaint(job.score, given, region, plan, num=request.num, seed=request.seed,
                          callback=callback, centre=trained.centre, guide=guide)
    return Inpainting(given, region, completions, plan.name, plan.evaluations)
