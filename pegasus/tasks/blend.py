"""Blending a trained run: strips of eq. 4 noise interpolation, optional class guidance, the
labelled PNGs, and the judge's report."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pegasus.errors import FieldError, UserError
from pegasus.fastpath.compile import FastPath, fast_log_prob
from pegasus.fastpath.graphs import chain_graphs
from pegasus.images import image_format, save_grid, save_image_atomic
from pegasus.model.classifier import Classifier
from pegasus.noise.schedule import Schedule
from pegasus.noise.streams import ImageStreams
from pegasus.run.trained import TrainedRun
from pegasus.samplers import SAMPLERS
from pegasus.samplers.plan import plan_sampler
from pegasus.signatures import Callback
from pegasus.tasks.inpaint import INPAINT_SAMPLERS, masked_score, paste
from pegasus.tasks.interpolation import blend_strips, endpoint_class_weights, guided_score, slerp_strips

Q_STREAM = 1  # the per-image streams of q; p uses stream 0, the streams `pegasus sample` draws


@dataclass(frozen=True)
class BlendRequest:
    n: int = 15
    k: int = 9
    strips: int = 8
    seed: int = 0
    source: str | None = None  # the class at k = 0 (guided only)
    target: str | None = None  # the class at k = N + 1 (guided only)
    guidance: float = 0.0
    sampler: str = "als"
    steps: int | None = None  # evaluation budget; None: the sampler's default
    mode: str = "eq4"  # eq4: interpolate injected noise; slerp: interpolate the starting noise
    # A masked blend keeps `image` (C, H, W) where `mask` (1, H, W) is 0 and blends where it is 1.
    image: torch.Tensor | None = field(default=None, compare=False)
    mask: torch.Tensor | None = field(default=None, compare=False)

    def validate(self, classes: list[str]) -> None:
        if self.mode not in ("eq4", "slerp"):
            raise FieldError("mode", f"must be eq4 or slerp, got {self.mode!r}")
        if self.sampler not in SAMPLERS:
            raise FieldError("sampler", f"{self.sampler!r} is not one of {', '.join(SAMPLERS)}")
        if self.n < 1:
            raise FieldError("n", f"must be at least 1, got {self.n}")
        if not 0 <= self.k <= self.n + 1:
            raise FieldError("k", f"must be between 0 and N+1 = {self.n + 1}, got {self.k}")
        if self.strips < 1:
            raise FieldError("strips", f"must be at least 1, got {self.strips}")
        if self.guidance < 0:
            raise FieldError("guidance", f"must be 0 or more, got {self.guidance}")
        for name in (self.source, self.target):
            if name is not None and name not in classes:
                raise UserError(f"unknown class {name!r} for this run; its classes: {', '.join(classes)}")


    def plan(self, schedule: Schedule):
        """The sampler this blend runs, fitted to `schedule` within `steps` evaluations; `mode`
        needs its kind: eq. 4 interpolates injected noise, slerp a deterministic start."""
        plan = plan_sampler(self.sampler, schedule, self.steps)
        if self.mode == "eq4" and not plan.stochastic:
            raise FieldError("sampler", f"{self.sampler} without churn is deterministic and eq. 4 "
                                        f"needs injected noise: blend with mode slerp, or add churn")
        if self.mode == "slerp" and plan.stochastic:
            raise FieldError("mode", f"slerp blends a deterministic sampler's starting noise; "
                                     f"{self.sampler} injects noise here, so use eq4")
        return plan


def endpoints(request: BlendRequest, classes: list[str]) -> tuple[int, int]:
    if len(classes) < 2:
        raise UserError("guidance needs a run trained on at least two classes")
    source = request.source or classes[0]
    target = request.target or next(c for c in classes if c != source)
    if source == target:
        raise UserError(f"the source and target classes are both {source!r}; pick two different "
                        f"classes")
    return classes.index(source), classes.index(target)


def blend_run(
    run: TrainedRun,
    request: BlendRequest,
    guide: Classifier | None = None,
    callback: Callback | None = None,
    fast: FastPath | None = None,
) -> torch.Tensor:
    """Strips (M, N + 2, C, H, W) in [0, 1]. Column 0 is exactly what `pegasus sample` draws
    with the same seed (x0 and noise from stream p). `fast` runs the networks on a fast path
    (TrainedRun.fast_path); None runs them eagerly in float32."""
    classes = run.classes
    request.validate(classes)
    plan = request.plan(run.schedule)
    device, shape = run.device, (3, run.config.data.res, run.config.data.res)
    p = ImageStreams(request.seed, 0, request.strips, device)
    q = ImageStreams(request.seed, 0, request.strips, device, stream=Q_STREAM)
    # The same draws, in the same order, as `sample_images`: column 0 is `pegasus sample`'s image.
    uniform_p, normal_p = p.prior(shape), p.normal(shape)
    _, normal_q = q.prior(shape), q.normal(shape)  # q's noise then follows as in a plain chain
    score = run.score_fn(fast)
    if request.guidance > 0:
        if guide is None:
            raise UserError("guidance needs the run's guide classifier; train the guide first")
        source, target = endpoints(request, classes)
        weights = endpoint_class_weights(request.n, source, target, len(classes))
        weights = weights.repeat(request.strips, 1).to(device)
        score = guided_score(score, fast_log_prob(guide, fast), weights, request.guidance)
    if request.mask is not None:
        # Outside the mask every column keeps the image; guidance acts inside it only.
        if plan.name not in INPAINT_SAMPLERS:
            raise FieldError("sampler", f"a masked blend needs Langevin steps to fit the blended "
                                        f"region to the kept one: use {' or '.join(INPAINT_SAMPLERS)}")
        score = masked_score(score, request.image, request.mask)
    # On a GPU a chain replays a CUDA graph (graphs.py). A guided step differentiates the
    # classifier: torch can capture that backward pass too, but no GPU has checked it against
    # the eager chain yet (the check is test_graphed_guided_blend_matches_eager_on_cuda), so
    # guided chains launch their (compiled) kernels step by step.
    score, capture = (chain_graphs(plan, score, device) if request.guidance == 0
                      else (score, None))
    if request.mode == "slerp":
        strips = slerp_strips(score, normal_p, normal_q, plan, n=request.n, callback=callback,
                              centre=run.centre)
        return _kept(strips.clamp(0, 1), request)
    strips = blend_strips(
        score, plan.start_point(uniform_p, normal_p, run.centre), plan, n=request.n,
        noise_p=p.noise_sampler(shape), noise_q=q.noise_sampler(shape), callback=callback,
        capture=capture)
    return _kept(strips.clamp(0, 1), request)


def _kept(strips: torch.Tensor, request: BlendRequest) -> torch.Tensor:
    return strips if request.mask is None else paste(strips, request.image, request.mask)


def save_blend(strips: torch.Tensor, k: int, out: Path) -> tuple[Path, Path]:
    """The k-th image of every strip as `out`, and all strips as `<out>-strips<suffix>` with a
    header row naming each column and a frame around column k."""
    out = Path(out)
    kth = save_grid(strips[:, k], out)
    strips_path = strips_file(out)
    _save_labelled_strips(strips, k, strips_path)
    return kth, strips_path


def strips_file(out: Path) -> Path:
    return Path(out).with_name(f"{Path(out).stem}-strips{Path(out).suffix}")


def check_blend_output(out: Path) -> None:
    """Both files a blend writes have a writable name and format, checked before sampling."""
    image_format(out)
    image_format(strips_file(out))


def _save_labelled_strips(strips: torch.Tensor, k: int, path: Path) -> None:
    from PIL import Image, ImageDraw

    m, cols, _, res, _ = strips.shape
    scale = max(1, 48 // res)  # small images are enlarged so that the labels fit above them
    cell, pad, header = res * scale, 2, 16
    canvas = Image.new("RGB", (cols * (cell + pad) + pad, header + m * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    pixels = (strips.float().cpu() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    for c in range(cols):
        x = pad + c * (cell + pad)
        draw.text((x + 2, 2), f"k={c}", fill="red" if c == k else "black")
        for r in range(m):
            y = header + pad + r * (cell + pad)
            tile = Image.fromarray(pixels[r, c]).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (x, y))
        if c == k:
            draw.rectangle([x - 1, header, x + cell, canvas.height - 1], outline="red")
    save_image_atomic(canvas, path)


@dataclass
class JudgeReport:
    guidance: float
    strips: int
    source: str
    target: str
    ends_correct: float  # share of strips whose left end is the source and right end the target
    source_probability: list[float] = field(default_factory=list)  # mean p(source) per column


@torch.no_grad()
def judge_strips(strips: torch.Tensor, judge: Classifier, source: str, target: str,
                 guidance: float) -> JudgeReport:
    classes = judge.spec.classes
    m, cols = strips.shape[:2]
    probs = judge.log_prob(strips.flatten(0, 1).to(next(judge.parameters()).device)).exp()
    probs = probs.view(m, cols, -1).cpu()
    labels = probs.argmax(-1)
    src, tgt = classes.index(source), classes.index(target)
    ends = ((labels[:, 0] == src) & (labels[:, -1] == tgt)).double().mean().item()
    return JudgeReport(guidance, m, source, target, ends, probs[..., src].mean(0).tolist())


def blend_and_report(
    run: TrainedRun,
    request: BlendRequest,
    guide: Classifier | None = None,
    judge: Classifier | None = None,
    callback_for: Callable[[BlendRequest], Callback | None] = lambda request: None,
    fast: FastPath | None = None,
) -> tuple[torch.Tensor, list[JudgeReport]]:
    """Blend as asked and, with a judge, score the strips. A guided request is compared with
    the unguided one of the same seed, so the report shows what guidance changes. Returns the
    asked-for strips and one report per run (guided first)."""
    classes = run.config.data.classes
    runs = [request]
    if judge is not None and request.guidance > 0:
        runs.append(dataclasses.replace(request, guidance=0.0))
    results = [blend_run(run, r, guide, callback_for(r), fast) for r in runs]
    reports = []
    if judge is not None:
        source, target = (classes[i] for i in endpoints(request, classes))
        reports = [judge_strips(strips, judge, source, target, r.guidance)
                   for r, strips in zip(runs, results, strict=True)]
    return results[0], reports
