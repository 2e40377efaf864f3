"""Blending two given pictures (a horse of the user's and a bird, say), in two modes.

ode     Both pictures are encoded by the probability-flow ODE to their latents at sigma_1
        (encode.py); strip column k decodes the latents' spherical interpolation at
        t = k / (N + 1) about the data's centre. The end columns are the pictures again, up to
        the ODE's reconstruction error (their PSNR is reported).
sdedit  SDEdit (Meng et al. 2022): both pictures noised to a level S (a fraction of the schedule
        or a sigma), column k starting from (1 - w_k) A + w_k B + S z with w_k = sin^2 theta_k
        and one z per strip, and eq. 4's noise interpolation running from there with any
        stochastic sampler on the schedule's levels below S. The ends keep each picture's
        layout; their distance to A and B (mean absolute pixel difference) says how much.

Both modes take class guidance toward a class at each end and a mask (the first picture kept
where it is black), as noise blends do (blend.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from pegasus.errors import FieldError, UserError
from pegasus.fastpath import Execution, chain_graphs
from pegasus.noise.schedule import Schedule
from pegasus.noise.streams import ImageStreams
from pegasus.run.job import SamplingJob
from pegasus.samplers.plan import EQ4, SamplerPlan
from pegasus.tasks.blend import Q_STREAM, Kept, column_guide, column_score
from pegasus.tasks.encode import integrate, ode_plan, psnr
from pegasus.tasks.inpaint import paste
from pegasus.tasks.inputs import given_image, resolve_image, resolve_mask
from pegasus.tasks.interpolation import blend_strips, interpolation_angles
from pegasus.tasks.steering import check_classes, check_guidance, classifier
from pegasus.tasks.strips import AUTO, resolve_column

MODES = ("ode", "sdedit")


@dataclass(frozen=True)
class PictureRequest:
    image_a: str  # a file or sample:SEED
    image_b: str
    mode: str = "ode"
    n: int = 15
    k: int | None = None  # the column written; None: 9 at N = 15 (strips.py)
    # None: 1 for ode, which is deterministic, and 4 strips of other noise for sdedit
    strips: int | None = None
    seed: int = 0
    strength: str = "0.5"  # sdedit: a fraction of the schedule, or sigma=VALUE
    sampler: str | None = None  # None: the run's own where it serves the mode (TrainedRun.plan)
    steps: int | None = None
    source: str | None = None
    target: str | None = None
    guidance: float = 0.0
    mask: str | None = None

    def __post_init__(self) -> None:
        if self.strips is None:
            object.__setattr__(self, "strips", 1 if self.mode == "ode" else 4)

    @property
    def column(self) -> int | str:
        return resolve_column(self.k, self.n)


@dataclass
class PictureBlend:
    strips: torch.Tensor  # (M, N + 2, C, H, W) in [0, 1]
    a: torch.Tensor
    b: torch.Tensor
    ends: dict[str, float] = field(default_factory=dict)  # how near the end columns are A and B

    def describe(self) -> str:
        return "; ".join(f"{name} {value:.4g}" for name, value in self.ends.items())


def strength_sigma(schedule: Schedule, strength: str) -> float:
    """SDEdit's level: a fraction f of the schedule in log sigma (0: sigma_L, 1: sigma_1), or
    sigma=VALUE, inside [sigma_L, sigma_1]."""
    text = str(strength).strip()
    low, high = schedule.sigma_min, schedule.sigma_max
    try:
        value = float(text.removeprefix("sigma="))
    except ValueError:
        raise FieldError("strength", f"{text!r} is neither a fraction in [0, 1] nor "
                                     f"sigma=VALUE") from None
    if text.startswith("sigma="):
        sigma = value
    elif 0 <= value <= 1:
        sigma = math.exp(math.log(low) + value * (math.log(high) - math.log(low)))
    else:
        raise FieldError("strength", f"is {value:g}; a fraction of the schedule lies in [0, 1] "
                                     f"(or give sigma=VALUE)")
    if not low * (1 - 1e-6) <= sigma <= high * (1 + 1e-6):
        raise FieldError("strength", f"sigma {sigma:g} lies outside the run's schedule, "
                                     f"[{low:g}, {high:g}]")
    return sigma


def below(schedule: Schedule, sigma: float) -> Schedule:
    """The part of the schedule from its level nearest `sigma` down to sigma_L (at least two
    levels), with the same ratio, T and eps."""
    logs = schedule.sigmas().double().log()
    top = int((logs - math.log(sigma)).abs().argmin())
    top = min(top, schedule.levels - 2)
    return Schedule(float(schedule.sigmas()[top]), schedule.sigma_min, schedule.levels - top,
                    schedule.steps_per_level, schedule.eps, schedule.denoise)


def blend_pictures(trained, request: PictureRequest, *,
                   execution: Execution = Execution()) -> PictureBlend:
    """Strips between two given pictures, every input checked before any chain runs."""
    _check(request, trained)
    res = trained.config.data.res
    given = [given_image(request.image_a, res, "image_a"), given_image(request.image_b, res, "image_b")]
    mask = resolve_mask(request.mask, res, request.image_a).to(trained.device) if request.mask else None
    guide = classifier(trained, "guide") if request.guidance > 0 else None
    if request.mode == "ode":
        plan = ode_plan(trained, request.sampler, request.steps)
    else:
        plan = _sdedit_plan(trained, request)
    columns = request.strips * (request.n + 2)
    job = SamplingJob.make(trained, plan, num=columns, batch_size=columns, execution=execution)
    a, b = (resolve_image(trained, g) for g in given)
    kept = Kept(a, mask) if mask is not None else None
    steer = column_guide(job, request, guide)
    score = column_score(job, steer, kept)
    progress = execution.bar
    if request.mode == "ode":
        strips = _ode_strips(trained, job, request, score, a, b, progress)
        ends = {"PSNR of k=0 to A (dB)": psnr(strips[0, 0], a),
                f"PSNR of k={request.n + 1} to B (dB)": psnr(strips[0, -1], b)}
    else:
        strips = _sdedit_strips(trained, job, request, score, a, b, progress)
        ends = {"mean |k=0 - A|": float((strips[:, 0] - a).abs().mean()),
                f"mean |k={request.n + 1} - B|": float((strips[:, -1] - b).abs().mean())}
    if kept is not None:
        strips = paste(strips, a, mask)
    return PictureBlend(strips, a, b, ends)


def _check(request: PictureRequest, trained) -> None:
    if request.mode not in MODES:
        raise FieldError("mode", f"must be {' or '.join(MODES)} for two given pictures, got "
                                 f"{request.mode!r}")
    if request.n < 1:
        raise FieldError("n", f"must be at least 1, got {request.n}")
    if request.column == AUTO:
        raise FieldError("k", "auto picks a column by the classes along a strip; two pictures "
                              "take a column number")
    if request.strips < 1:
        raise FieldError("strips", f"must be at least 1, got {request.strips}")
    if request.mode == "ode" and request.strips != 1:
        raise FieldError("strips", "is 1 in mode ode: decoding the two pictures' latents is "
                                   "deterministic")
    check_guidance(request.guidance)
    if (request.guidance > 0) and trained.run_dir is None:
        raise UserError("guidance needs a run folder (its guide); exported weights carry none")
    check_classes(trained.classes, request.source, request.target)


def _sdedit_plan(trained, request: PictureRequest) -> SamplerPlan:
    """SDEdit's sampler on the part of the schedule below its strength, through the run's one
    door: one that injects noise, for eq. 4 from there (the kept picture is where every chain
    starts, so a masked SDEdit needs no Langevin steps to fit it)."""
    sub = below(trained.schedule, strength_sigma(trained.schedule, request.strength))
    return trained.plan(request.sampler, request.steps, use=EQ4, schedule=sub)


def _slerp(u: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    """The spherical interpolation of two vectors (each flattened), their norms interpolated too."""
    uf, vf = u.flatten(), v.flatten()
    cos = torch.dot(uf, vf) / (uf.norm() * vf.norm())
    omega = torch.arccos(cos.clamp(-1, 1))
    if float(omega) < 1e-6:
        return (1 - t) * u + t * v
    return (torch.sin((1 - t) * omega) * u + torch.sin(t * omega) * v) / torch.sin(omega)


def _ode_strips(trained, job, request, score, a, b, progress) -> torch.Tensor:
    plan = job.plan
    encode_score, _ = chain_graphs(plan, job.score, trained.device)
    callback = progress("encode (A and B)", plan.evaluations)
    z = integrate(encode_score, torch.stack([a, b]), plan, upward=True, callback=callback)
    u, v = z[0] - trained.centre, z[1] - trained.centre
    ts = [k / (request.n + 1) for k in range(request.n + 2)]
    latents = torch.stack([trained.centre + _slerp(u, v, t) for t in ts])
    score, _ = chain_graphs(plan, score, trained.device) if request.guidance == 0 else (score, None)
    callback = progress(f"decode W={request.guidance:g}", plan.evaluations)
    out = integrate(score, latents, plan, upward=False, callback=callback).clamp_(0, 1)
    return out[None]


def _sdedit_strips(trained, job, request, score, a, b, progress) -> torch.Tensor:
    plan, shape, device = job.plan, trained.image_shape, trained.device
    sigma = float(plan.sigmas[0])
    p = ImageStreams(request.seed, 0, request.strips, device)
    q = ImageStreams(request.seed, 0, request.strips, device, stream=Q_STREAM)
    z = p.normal(shape)
    w = interpolation_angles(request.n).sin().square().to(device, torch.float32)
    w = w.view(1, -1, *([1] * len(shape)))
    starts = (1 - w) * a + w * b + sigma * z[:, None]
    score, capture = chain_graphs(plan, score, device) if request.guidance == 0 else (score, None)
    callback = progress(f"sdedit from sigma {sigma:.3g}", plan.evaluations)
    out = blend_strips(score, starts, plan, n=request.n, noise_p=p.noise_sampler(shape),
                       noise_q=q.noise_sampler(shape), callback=callback, capture=capture,
                       per_column=True)
    return out.clamp(0, 1)
