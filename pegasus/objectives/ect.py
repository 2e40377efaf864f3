"""Consistency functions and their tuning: the objective `ect` (ECT: Geng et al., ICLR 2025,
"Consistency models made easy"; docs/science.md, "Consistency tuning").

A consistency function f(x, sigma) maps any point of a probability-flow trajectory to its end,
with the boundary condition f(x, e) = x at a sigma e near 0. A run's network gives a denoiser,
D(x, sigma) = x + sigma^2 s(x, sigma) (Tweedie), for either parameterisation (output / sigma or
EDM's) and any backbone. A tuned run's f is

    f(x, sigma) = c_skip(sigma) x + c_out(sigma) D(x, sigma),
    c_out = (sigma - e) / sigma,   c_skip = 1 - c_out = e / sigma,

so c_out(e) = 0 exactly and the boundary condition holds for any weights. On EDM's network F
this is Song et al. 2023's parameterisation (consistency models, eq. 9) in its output term: F's
weight in f is (sigma - e) sigma_data / sqrt(sigma^2 + sigma_data^2), their c_out; on NCSNv2's
it is f = x + (sigma - e) F. Away from e, f is the network's denoiser, so tuning starts from
what the run already knows, and the network's output keeps its scale down to a few e (a c_out
that vanished faster would ask it to grow as 1 / c_out).

The boundary e is the run's sigma_L unless the run sets another (objective.boundary; ECT's and
EDM's sigma_min is 0.002 on [-1, 1] images, 0.001 on pegasus's [0, 1] ones). It is no detail:
the two points of ECT's pairs share one z, so a term b z in f costs nothing in any pair above
the boundary, and what pins b is the boundary, where f(x_e, e) = x + e z, and the pairs that
denoise (r = 0): at e = sigma_L = 0.01 about 2.5 grey levels of noise in a sample. ECT's e
nonetheless measured far worse on the demo's run (bench/README.md, "Two evaluations"): with
c_out(sigma_L) = 0.9 instead of 0, f starts far from the trained denoiser near sigma_L. The
network itself is never asked below the run's sigma_L.
Written as a score, f = x + sigma^2 c_out s: a tuned run's ScoreModel returns c_out times its
network's score (`ConsistencyOutput`, the objective's parameterisation), and every sampler,
guide and blend keeps talking to a score function.

ECT's loss compares f at two points of one noising path: x_t = x + t z and x_r = x + r z, r < t,
one z. t is drawn log-normally; r = t (1 - q^-(s+1) (1 + k sigmoid(-b t))) moves toward t as the
stage s rises (every `stage_every` iterations), so the pairs tighten from denoising (r = 0: the
clean image is the target) to neighbouring points of one trajectory. As the stages rise, fewer
pairs denoise, and less pins the term b z above: a tuned run's samples grew grainy. So a share
of the pairs (objective.denoise) keeps r = 0 at every stage. The distance is
sqrt(||f(x_t, t) - sg f(x_r, r)||^2 + c^2) - c (c = 0: the L2 norm; iCT's c = 0.00054 sqrt(d)
for d numbers an image, halved for pegasus's [0, 1] images), weighted by 1 / (t - r), ECT's
CIFAR-10 weight, which keeps the loss's scale as the pairs close in, or by EDM's
(t^2 + sigma_data^2) / (t sigma_data)^2. A network with dropout evaluates both points of a pair
with one mask, as ECT's reference code does by restoring the random state between them. No
teacher, no ODE solve, no Jacobian-vector product. The loss of a consistency function's pairs
moves with the stage, so a held-out value says nothing from one log step to the next: the
objective declares none.
"""

from __future__ import annotations

import torch

from pegasus.hookspecs import Loss
from pegasus.noise.draws import SigmaDraw
from pegasus.signatures import ScoreFn


class ConsistencyOutput:
    """The parameterisation of a consistency function, applied last by the score model: the
    network's score times c_out, so that x + sigma^2 s is f (module docstring)."""

    def __init__(self, boundary: float) -> None:
        self.boundary = boundary

    def __call__(self, score: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return score * c_out(sigma.float(), self.boundary).view(-1, *([1] * (score.dim() - 1)))


def boundary(config) -> float:
    """The sigma at which a tuned run's f is the identity (module docstring)."""
    chosen = config.objective.options.get("boundary", "sigma_L")
    return config.noise.sigma_min if chosen == "sigma_L" else float(chosen)


class ConsistencyTuning:
    """The `ect` objective of a run (hookspecs.Objective's factory): t drawn log-normally, on
    the levels alone for a network that knows only those (ScoreModel.round_sigma), and r's
    stage raised every `stage_every` steps."""

    def __init__(self, options, *, config, sigmas: torch.Tensor, model) -> None:
        self.options = options
        self.draw = SigmaDraw("log-normal", sigmas, options.p_mean, options.p_std)
        self.round_sigma = None if model.knows_every_sigma else model.round_sigma
        self.sigma_min, self.sigma_data = config.noise.sigma_min, config.noise.sigma_data
        self.boundary = boundary(config)

    def stage(self, step: int) -> int:
        """The stage of r's schedule that training step `step` is in."""
        return step // self.options.stage_every

    def __call__(self, net: ScoreFn, x: torch.Tensor, *, step: int,
                 generator: torch.Generator | None = None) -> Loss:
        o = self.options
        c = ict_c(x[0].numel()) if o.c == "auto" else o.c
        return ect_loss(net, x, draw=self.draw, stage=self.stage(step), q=o.q, k=o.k, b=o.b,
                        c=c, weight=o.weight, sigma_min=self.sigma_min, boundary=self.boundary,
                        sigma_data=self.sigma_data, snap=self.round_sigma, denoise=o.denoise,
                        generator=generator)


def ict_c(numbers: int) -> float:
    """iCT's pseudo-Huber constant for images of `numbers` values, 0.00054 sqrt(d) on [-1, 1]
    data, halved for the distances of pegasus's [0, 1] images."""
    return 0.00054 * numbers**0.5 / 2


def c_out(sigma: torch.Tensor, boundary: float) -> torch.Tensor:
    """D's weight in f: 0 at the boundary exactly, towards 1 above it."""
    return (sigma - boundary) / sigma


def consistency(score_fn: ScoreFn, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """f(x, sigma) = x + sigma^2 s(x, sigma) of a tuned run's score (s already carries c_out),
    in float32, for (B,) sigma."""
    s = sigma.float().view(-1, *([1] * (x.dim() - 1)))
    return x.float() + s.square() * score_fn(x, sigma).float()


def partner(t: torch.Tensor, stage: int, *, q: float, k: float, b: float) -> torch.Tensor:
    """ECT's r for t at `stage`: t (1 - q^-(stage+1) (1 + k sigmoid(-b t))), at least 0. b acts
    on t in EDM's units (pegasus's doubled), so the public settings keep their meaning."""
    shrink = q ** -(stage + 1) * (1 + k * torch.sigmoid(-b * 2 * t))
    return (t * (1 - shrink)).clamp_min(0)


def ect_loss(score_fn: ScoreFn, x: torch.Tensor, *, draw, stage: int, q: float, k: float,
             b: float, c: float, sigma_min: float, sigma_data: float, weight: str = "gap",
             boundary: float | None = None, snap=None, denoise: float = 0.0,
             generator: torch.Generator | None = None) -> Loss:
    """ECT's loss on clean images x (module docstring). `draw` gives each image's t and the
    index of its nearest level (noise/draws.py); `snap` moves t and r onto the levels a network
    knows, where its sigma input does not interpolate (ScoreModel.round_sigma; None: every
    sigma). f is the identity at `boundary` (None: sigma_min, the run's sigma_L), and the
    network is asked at sigma_min and above only. A share `denoise` of the pairs, drawn after
    the noise, is kept at r = 0 whatever the stage."""
    boundary = sigma_min if boundary is None else boundary
    t, nearest = draw(len(x), generator, x.device)
    r = partner(t, stage, q=q, k=k, b=b)
    if snap is not None:
        t, r = snap(t), torch.where(r < sigma_min, r, snap(r))
        r = torch.minimum(r, t)
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    if denoise > 0:
        r = r.masked_fill(torch.rand(len(x), device=x.device, generator=generator) < denoise, 0.0)
    view = (-1, *([1] * (x.dim() - 1)))
    x_t = x + t.view(view) * noise
    masks = random_state(x.device)  # dropout's masks: the same for both points of each pair
    with torch.no_grad():
        x_r = x + r.view(view) * noise
        # At or below the boundary f is the identity (the boundary condition): x_r is the
        # target (the clean image where r = 0).
        on = r > boundary
        target = torch.where(on.view(view), consistency(score_fn, x_r, r.clamp_min(sigma_min)),
                             x_r.float())
    set_random_state(x.device, masks)
    gap = (consistency(score_fn, x_t, t) - target).flatten(1).square().sum(dim=1)
    # Clamped: sqrt's gradient at 0 is infinite, and snapped pairs (r = t) give a gap of 0.
    distance = (gap + c * c).clamp_min(1e-12).sqrt() - c
    per_sample = distance * pair_weight(t.float(), r.float(), weight, sigma_data)
    return Loss(loss=per_sample.mean(), per_sample=per_sample, nearest=nearest)


def pair_weight(t: torch.Tensor, r: torch.Tensor, weight: str, sigma_data: float) -> torch.Tensor:
    """Each pair's weight (module docstring). A pair snapped onto one level (r = t) holds no
    signal and weighs 0 under 1 / (t - r)."""
    if weight == "edm":
        return (t.square() + sigma_data**2) / (t * sigma_data).square()
    apart = t > r
    return torch.where(apart, 1 / torch.where(apart, t - r, 1.0), 0.0)


def random_state(device: torch.device) -> torch.Tensor:
    """The generator state that dropout on `device` draws its masks from."""
    return torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.get_rng_state()


def set_random_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cuda":
        torch.cuda.set_rng_state(state, device)
    else:
        torch.set_rng_state(state)
