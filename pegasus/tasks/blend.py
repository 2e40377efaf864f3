"""Blending a trained run: strips of eq. 4 noise interpolation (interpolation.py), optional class
guidance toward a class at each end, a mask that keeps a given picture outside it, and the
judge's report of where the strips start and end."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus.errors import FieldError, UserError
from pegasus.fastpath import Execution, chain_graphs, fast_log_prob
from pegasus.model.classifier import Classifier
from pegasus.model.guides import ClassGuide, Guide, guided
from pegasus.noise.streams import ImageStreams
from pegasus.run.job import MAX_IMAGES, SamplingJob, fitting_batch
from pegasus.samplers import sampler_spec
from pegasus.samplers.plan import EQ4, MASKED_EQ4, SLERP, SamplerPlan
from pegasus.signatures import Callback
from pegasus.tasks.blend_files import save_blend
from pegasus.tasks.features import Extractor, JudgeFeatures, scores
from pegasus.tasks.hybrid import hybrid_scores
from pegasus.tasks.inpaint import masked_score, paste
from pegasus.tasks.inputs import given_image, resolve_image, resolve_mask
from pegasus.tasks.interpolation import blend_strips, endpoint_class_weights, slerp_strips
from pegasus.tasks.neighbours import Reference
from pegasus.tasks.novelty import memorisation
from pegasus.tasks.regions import above_back, silhouette
from pegasus.tasks.steering import check_classes, check_guidance, classifier
from pegasus.tasks.strips import AUTO, StripScores, crossing_columns, resolve_column

Q_STREAM = 1  # the per-image streams of q; p uses stream 0, the streams `pegasus sample` draws
MODES = ("eq4", "slerp")


@dataclass(frozen=True)
class BlendRequest:
    n: int = 15
    # The column written: 0 .. N + 1, "auto" (each strip's own, by the judge) or None for the
    # default, 9 at N = 15 (strips.py).
    k: int | str | None = None
    strips: int = 8
    seed: int = 0
    source: str | None = None  # the class at k = 0 (guided only)
    target: str | None = None  # the class at k = N + 1 (guided only)
    guidance: float = 0.0
    sampler: str | None = None  # None: the run's own (TrainedRun.plan)
    steps: int | None = None  # evaluation budget; None: the sampler's default
    mode: str = "eq4"  # eq4: interpolate injected noise; slerp: interpolate the starting noise
    # A masked blend keeps `image` (a file or sample:SEED) where `mask` is black and blends where
    # it is white (inputs.py reads both).
    image: str | None = None
    mask: str | None = None

    def validate(self, classes: list[str]) -> None:
        if self.mode not in MODES:
            raise FieldError("mode", f"must be {' or '.join(MODES)}, got {self.mode!r}")
        if self.sampler is not None:
            sampler_spec(self.sampler)  # an unknown name is refused here
        if self.n < 1:
            raise FieldError("n", f"must be at least 1, got {self.n}")
        resolve_column(self.k, self.n)  # a column outside 0 .. N + 1 is refused here
        if self.strips < 1:
            raise FieldError("strips", f"must be at least 1, got {self.strips}")
        check_guidance(self.guidance)
        if (self.image is None) != (self.mask is None):
            raise UserError("a masked blend needs both an image and a mask")
        check_classes(classes, self.source, self.target)

    @property
    def column(self) -> int | str:
        """The column written: a number, or "auto" (strips.py)."""
        return resolve_column(self.k, self.n)

    def plan(self, trained) -> SamplerPlan:
        """The sampler this blend runs, through the run's one door: `mode` needs its kind (eq.
        4 interpolates injected noise, slerp a deterministic start), and a masked blend fits
        the blended region to the kept one by Langevin or consistency steps."""
        use = SLERP if self.mode == "slerp" else MASKED_EQ4 if self.mask is not None else EQ4
        return trained.plan(self.sampler, self.steps, use=use)

    def runs(self, report: bool) -> list[BlendRequest]:
        """What is blended: this request and, for a report of a guided one, the unguided blend
        of the same seed beside it, so the report shows what guidance changes."""
        unguided = [dataclasses.replace(self, guidance=0.0)] if report and self.guidance > 0 else []
        return [self, *unguided]


def endpoints(request, classes: list[str]) -> tuple[int, int]:
    """The indices of the classes at k = 0 and k = N + 1: those asked for (validated by
    check_classes), else the run's first and the next."""
    if len(classes) < 2:
        raise UserError("guidance needs a run trained on at least two classes")
    source = request.source or classes[0]
    target = request.target or next(c for c in classes if c != source)
    return classes.index(source), classes.index(target)


@dataclass
class Blend:
    request: BlendRequest
    strips: torch.Tensor  # (M, N + 2, C, H, W) in [0, 1], the request's
    columns: list[int]  # each strip's column: the request's k, or the judge's choice with auto
    reports: list[JudgeReport] = field(default_factory=list)  # guided first, with a judge

    def save(self, out: Path) -> tuple[Path, Path]:
        """Each strip's column as `out`, and the labelled strips beside it (blend_files.py),
        with the judge's numbers under each image when the blend was scored."""
        report = self.reports[0] if self.reports else None
        return save_blend(self.strips, self.columns, out, report)


@dataclass
class Kept:
    """A masked blend's picture (C, H, W) and mask (1, H, W), 1 where it blends."""

    image: torch.Tensor
    mask: torch.Tensor


def blend(trained, request: BlendRequest, *, report: bool = False,
          execution: Execution = Execution()) -> Blend:
    """Blend as asked, every input checked before any chain runs. With `report`, the run's judge
    scores the strips (and a guided request is compared with the unguided one of its seed); a
    column `auto` is the judge's choice, and comes with the report."""
    request.validate(trained.classes)
    plan = request.plan(trained)
    report = report or request.column == AUTO
    if (request.guidance > 0 or report) and trained.run_dir is None:
        raise UserError("guidance, reports and k auto need a run folder (its guide and judge); "
                        "exported weights carry neither")
    if request.guidance > 0 or report:
        endpoints(request, trained.classes)  # two classes to go between, before any work
    guide = classifier(trained, "guide") if request.guidance > 0 else None
    judge = classifier(trained, "judge") if report else None
    kept = None
    if request.mask is not None:
        given = given_image(request.image, trained.config.data.res)
        mask = resolve_mask(request.mask, trained.config.data.res, request.image).to(trained.device)
    runs = request.runs(report)
    images = request.strips * (request.n + 2)
    check_fits(trained, request, images)
    job = SamplingJob.make(trained, plan, num=images, chains=len(runs), batch_size=images,
                           execution=execution)
    if request.mask is not None:
        kept = Kept(resolve_image(trained, given), mask)
    results = [blend_strips_of(job, r, column_guide(job, r, guide), kept,
                               execution.bar(f"blend W={r.guidance:g}", plan.evaluations))
               for r in runs]
    if judge is None:
        return Blend(request, results[0], [request.column] * request.strips)
    source, target = (trained.classes[i] for i in endpoints(request, trained.classes))
    extract = Extractor(JudgeFeatures(judge).eval(), None, trained.device)
    reference = Reference.of(trained.config, extract.of, request.seed)
    reports = []
    for r, strips in zip(runs, results, strict=True):
        scored = judge_strips(strips, judge, extract, source, target, r.guidance, request.column)
        chosen = strips[torch.arange(len(strips)), torch.tensor(scored.scores.columns)]
        features = extract.of(chosen).cpu()
        scored.memorised = memorisation(features, reference.features, reference.held)[0]
        # Realism of the blends: their KID against the training images of every class (a
        # blend is neither class, so the reference is both together), on the judge's features.
        # KID's subsets need two images.
        if len(features) >= 2:
            scored.kid, scored.kid_std, _ = scores(reference.features, features, seed=request.seed)
        reports.append(scored)
    return Blend(request, results[0], reports[0].scores.columns, reports)


def check_fits(trained, request: BlendRequest, images: int) -> None:
    """A blend runs all its strips at once: they must fit the device's free memory."""
    if request.n + 2 > MAX_IMAGES:
        raise FieldError("n", f"is {request.n:,}: a strip of N + 2 images may hold at most "
                              f"{MAX_IMAGES:,}")
    if images > MAX_IMAGES:
        raise FieldError("strips", f"{request.strips:,} strips of N + 2 = {request.n + 2:,} images "
                                   f"are {images:,} images; a blend draws at most {MAX_IMAGES:,}")
    fits = fitting_batch(trained, images, None)
    if fits >= images:
        return
    if fits < request.n + 2:
        raise FieldError("n", f"is {request.n:,}: one strip of N + 2 images does not fit in the "
                              f"free memory; the largest N that fits is about {max(fits - 2, 1):,}")
    raise FieldError("strips", f"{request.strips:,} strips of N + 2 = {request.n + 2} images do not "
                               f"fit in the free memory at once; the most that fit are about "
                               f"{fits // (request.n + 2):,}")


def column_guide(job, request, classifier: Classifier | None) -> Guide | None:
    """The guide of a strip's columns: W times the guide classifier's pull toward the source
    class at k = 0 and the target at k = N + 1, its class weights moving with the noise angle
    (interpolation.py); None unguided. `request` holds n, strips, guidance, source and
    target."""
    if request.guidance == 0:
        return None
    if classifier is None:
        raise UserError("guidance needs the run's guide classifier; train the guide first")
    trained = job.trained
    source, target = endpoints(request, trained.classes)
    weights = endpoint_class_weights(request.n, source, target, len(trained.classes))
    weights = weights.repeat(request.strips, 1).to(trained.device)
    return request.guidance * ClassGuide(fast_log_prob(classifier, job.path), weights)


def column_score(job, guide: Guide | None, kept: Kept | None):
    """The score a strip's columns are drawn with: the job's network steered by `guide` and,
    with a mask, the exact score of the kept picture outside it (so the guide acts inside)."""
    score = guided(job.score, guide)
    return score if kept is None else masked_score(score, kept.image, kept.mask)


def blend_strips_of(job, request: BlendRequest, guide: Guide | None = None,
                    kept: Kept | None = None, callback: Callback | None = None) -> torch.Tensor:
    """Strips (M, N + 2, C, H, W) in [0, 1] of a sampling job's run by its plan (and network on
    its fast path). Column 0 is exactly what `pegasus sample` draws with the same seed (x0 and
    noise from stream p)."""
    trained, plan = job.trained, job.plan
    device, shape = trained.device, trained.image_shape
    p = ImageStreams(request.seed, 0, request.strips, device)
    q = ImageStreams(request.seed, 0, request.strips, device, stream=Q_STREAM)
    uniform_p, normal_p = p.starting_draws(shape)
    _, normal_q = q.starting_draws(shape)  # q's noise then follows as in a plain chain
    score = column_score(job, guide, kept)
    # On a GPU a chain replays a CUDA graph (fastpath/graphs.py). A guided step differentiates
    # the classifier: torch can capture that backward pass too, but no GPU has checked it against
    # the eager chain yet (the check is test_graphed_guided_blend_matches_eager_on_cuda), so
    # guided chains launch their (compiled) kernels step by step.
    score, capture = chain_graphs(plan, score, device) if guide is None else (score, None)
    if request.mode == "slerp":
        strips = slerp_strips(score, normal_p, normal_q, plan, n=request.n, callback=callback,
                              centre=trained.centre)
    else:
        strips = blend_strips(score, plan.start_point(uniform_p, normal_p, trained.centre), plan,
                              n=request.n, noise_p=p.noise_sampler(shape),
                              noise_q=q.noise_sampler(shape), callback=callback, capture=capture)
    strips = strips.clamp(0, 1)
    return strips if kept is None else paste(strips, kept.image, kept.mask)


@dataclass
class JudgeReport:
    guidance: float
    strips: int
    source: str
    target: str
    ends_correct: float  # share of strips whose left end is the source and right end the target
    source_probability: list[float]  # mean p(source) per column
    scores: StripScores  # each strip's column, monotonicity, balance, smoothness (strips.py)
    strip_probability: list[list[float]] = field(default_factory=list)  # p(source), per strip
    strip_ends: list[bool] = field(default_factory=list)  # each strip: source left, target right
    memorised: float | None = None  # the share of the columns' images that copy a training image
    kid: float | None = None  # the columns' images against the training images, judge features
    kid_std: float | None = None  # its spread over subsets
    # How hybrid the columns are, by the judge (hybrid.py's HybridScores.hybrid, 0 to 1): the
    # body of the source class outside the region above the back of the strip's own source end,
    # the target's parts inside it. The mean, and the share above 1/2.
    hybrid: float = 0.0
    hybrid_share: float = 0.0


@torch.no_grad()
def judge_strips(strips: torch.Tensor, judge: Classifier, extract: Extractor, source: str,
                 target: str, guidance: float, column: int | str) -> JudgeReport:
    """The judge's report on strips (M, N + 2, C, H, W), each strip's column `column` or, with
    "auto", where its p(source) crosses 1/2 (strips.py)."""
    classes = judge.spec.classes
    m, cols = strips.shape[:2]
    flat = strips.flatten(0, 1).to(next(judge.parameters()).device)
    probs = judge.log_prob(flat).exp().view(m, cols, -1).cpu()
    features = extract.of(flat).view(m, cols, -1).cpu()
    labels = probs.argmax(-1)
    src, tgt = classes.index(source), classes.index(target)
    strip_ends = (labels[:, 0] == src) & (labels[:, -1] == tgt)
    ends = strip_ends.double().mean().item()
    columns = (crossing_columns(probs[..., src]) if column == AUTO
               else torch.full((m,), column, dtype=torch.long))
    scores = StripScores.of(probs[..., src], probs[..., tgt], features, columns)
    chosen = strips[torch.arange(m), columns].to(flat.device)
    regions = above_back(silhouette(strips[:, 0].to(flat.device)))
    hybrid = hybrid_scores(chosen, regions, judge.log_prob, src, tgt).hybrid.cpu()
    return JudgeReport(guidance, m, source, target, ends, probs[..., src].mean(0).tolist(), scores,
                       probs[..., src].tolist(), strip_ends.tolist(), hybrid=hybrid.mean().item(),
                       hybrid_share=(hybrid > 0.5).float().mean().item())
