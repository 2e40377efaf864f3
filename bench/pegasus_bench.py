"""A pegasus benchmark on sprites, for measuring only: how many of a method's images are winged
horses, how many cross-fades, and whether the horse is still a horse.

    python bench/pegasus_bench.py --run runs/demo --tuned runs/demo-ct --num 64 \\
        --cases "hybrid:cas=32;hybrid:als=94;hybrid@tuned:consistency=2,4;blend:cas=32;sample:cas=32"

An evaluator of four classes (horse, bird, winged horse, cross-fade) is trained here, on sprites
drawn here: the dataset's horses and birds, horses with wings of this script's own drawing
(triangles rising from the back, in a bird's colours), and pixel cross-fades of a horse and a
bird. Nothing of pegasus's package draws or sees a winged horse: the wings live in this file
only, and the evaluator scores images, it trains no model that makes them.

Each case is METHOD[@tuned]:SAMPLER=BUDGET,...: `hybrid` (pegasus hybrid, default candidates and
guidance), `blend` (the k = 9 column of guided eq. 4 strips from horse to bird at W = 10, N =
15: the image blend writes) or `sample` (plain samples). Shares come with their binomial
standard error, sqrt(p (1 - p) / n).
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from pegasus.data import sprites
from pegasus.errors import UserError
from pegasus.model.classifier import Classifier, ClassifierSpec
from pegasus.run.load import load_trained_run
from pegasus.tasks.blend import BlendRequest, blend
from pegasus.tasks.hybrid import HybridRequest, hybrid

KINDS = ("horse", "bird", "winged horse", "cross-fade")


def draw_winged_horses(count: int, res: int, seed: int) -> torch.Tensor:
    """Sprite horses (the dataset's drawing) with two wings on the back, (count, 3, res, res)
    in [0, 1]. The wings follow the sprites' birds: long triangles rising from the back, the
    far one darker, in a saturated colour, at a random lift."""
    g = torch.Generator().manual_seed(10_007 * seed + 17)
    # The dataset's own canvas and horse (sprites.py); only the wings are new.
    canvas = sprites._Canvas(count, res, g, 1.0)
    sprites._draw_horse(canvas)
    colour = sprites._hsv(torch.rand(count, generator=g), 0.6 + 0.4 * torch.rand(count, generator=g),
                          0.45 + 0.45 * torch.rand(count, generator=g))
    for offset, shade in ((0.15, 0.6), (-0.1, 0.85)):
        lift = canvas.uniform(0.7, 1.4)
        length = canvas.uniform(0.8, 1.1)
        tip_x = offset - length * 0.3 * torch.cos(lift) - 0.1
        tip_y = -0.2 - length * torch.sin(lift)
        canvas.paint(sprites._triangle(canvas, [(offset - 0.3, -0.15), (tip_x, tip_y),
                                                (offset + 0.22, -0.18)]), colour * shade)
    return canvas.image.clamp(0, 1)


def drawn(name: str, count: int, res: int, seed: int) -> torch.Tensor:
    return sprites.draw_sprites(name, count, res, seed=seed).float() / 255


def cross_fades(count: int, res: int, seed: int) -> torch.Tensor:
    """Pixel cross-fades a h + (1 - a) b of a horse and a bird, a in [0.35, 0.65]."""
    g = torch.Generator().manual_seed(7919 * seed + 3)
    a = 0.35 + 0.3 * torch.rand(count, 1, 1, 1, generator=g)
    return a * drawn("horse", count, res, 100 + seed) + (1 - a) * drawn("bird", count, res, 200 + seed)


def kinds_dataset(per_kind: int, res: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([drawn("horse", per_kind, res, 300 + seed), drawn("bird", per_kind, res, 400 + seed),
                        draw_winged_horses(per_kind, res, seed), cross_fades(per_kind, res, seed)])
    labels = torch.arange(len(KINDS)).repeat_interleave(per_kind)
    return images, labels


def roughen(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Drawings made to look like a model's samples rather than a renderer's: mirrored (the
    sprites face either way), some blurred, with pixel noise of up to 0.15 (grainier than the
    grainiest samples), so that the evaluator judges shapes, not the crispness of a drawing."""
    n = len(x)
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    kernel = torch.tensor([1.0, 2.0, 1.0])
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, groups=3)
    amount = torch.rand(n, 1, 1, 1, generator=g) * (torch.rand(n, 1, 1, 1, generator=g) < 0.5)
    x = torch.lerp(x, blurred, amount)
    noise = 0.15 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(x.shape, generator=g)
    return (x + noise).clamp(0, 1)


def train_evaluator(res: int, per_kind: int, steps: int, seed: int) -> tuple[Classifier, float]:
    """The four-class evaluator and its accuracy on held-out drawings of every kind."""
    torch.manual_seed(seed)
    net = Classifier(ClassifierSpec(list(KINDS), res, noise_conditional=False))
    images, labels = kinds_dataset(per_kind, res, seed)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = torch.randint(len(images), (128,), generator=g)
        x = images[batch]
        x = roughen(x, g)
        loss = F.cross_entropy(net(x), labels[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    held, held_labels = kinds_dataset(250, res, seed + 1)
    with torch.no_grad():
        accuracy = (net(held).argmax(1) == held_labels).float().mean().item()
    return net, accuracy


def parse(text: str) -> list[tuple[str, bool, str, int]]:
    """[(method, on the tuned run, sampler, budget)] from "hybrid@tuned:consistency=2,4;..."."""
    out = []
    for part in filter(str.strip, text.split(";")):
        method, _, rest = part.strip().partition(":")
        name, _, budgets = rest.partition("=")
        method, _, where = method.partition("@")
        out += [(method, where == "tuned", name, int(b)) for b in budgets.split(",") if b.strip()]
    return out


def images_of(run, method: str, sampler: str, steps: int, num: int, seed: int,
              **options) -> torch.Tensor:
    if method == "hybrid":
        return hybrid(run, HybridRequest(base="horse", parts="bird", num=num, seed=seed,
                                         sampler=sampler, steps=steps, **options)).images
    if method == "blend":
        strips = -(-num // 1)
        made = blend(run, BlendRequest(n=15, k=9, strips=strips, seed=seed, source="horse",
                                       target="bird", guidance=10.0, sampler=sampler, steps=steps))
        return made.strips[:, 9]
    if method == "sample":
        plan = run.plan(sampler, steps)
        from pegasus.run.job import SamplingJob

        return SamplingJob.make(run, plan, num=num).images(seed)
    raise UserError(f"unknown method {method!r}: hybrid, blend or sample")


def share(per_evaluator: torch.Tensor, n: int) -> str:
    """The evaluators' mean share, its binomial standard error on n images, their range."""
    p = per_evaluator.mean().item()
    return (f"{100 * p:.1f}% ± {100 * math.sqrt(p * (1 - p) / n):.1f} "
            f"[{100 * per_evaluator.min():.0f}-{100 * per_evaluator.max():.0f}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, help="a consistency-tuned run of --run")
    parser.add_argument("--cases", default="hybrid:cas=32;blend:cas=32;sample:cas=32")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-kind", type=int, default=2000, help="evaluator training images")
    parser.add_argument("--evaluator-steps", type=int, default=1500)
    parser.add_argument("--guidance", default="10", help="hybrid cases: weights W, a,b,...")
    parser.add_argument("--candidates", default="4", help="hybrid cases: candidates, a,b,...")
    parser.add_argument("--evaluators", type=int, default=3,
                        help="evaluators trained from different seeds; the table gives their "
                             "mean and the spread between them")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        base = load_trained_run(args.run, device=args.device)
        tuned = load_trained_run(args.tuned, device=args.device) if args.tuned else None
        res = base.config.data.res
        start = time.perf_counter()
        evaluators = []
        for i in range(args.evaluators):
            evaluator, accuracy = train_evaluator(res, args.per_kind, args.evaluator_steps,
                                                  args.seed + 1000 * i)
            evaluators.append(evaluator)
            print(f"evaluator {i}: {len(KINDS)} kinds at {res} px, {accuracy:.1%} right on 1000 "
                  f"held-out drawings")
        print(f"({time.perf_counter() - start:.0f} s to train them); {args.num} images a case, "
              f"seed {args.seed}. Each share: the evaluators' mean ± its binomial standard "
              f"error, [the lowest and highest evaluator]. A horse body: horse or winged horse.")
        print("| run | method | sampler | evaluations | W | candidates | winged horse | "
              "cross-fade | horse body | bird | seconds |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        weights = [float(w) for w in args.guidance.split(",")]
        counts = [int(c) for c in args.candidates.split(",")]
        cases = [(case, {"guidance": w, "candidates": c} if case[0] == "hybrid" else {})
                 for case in parse(args.cases)
                 for w, c in (itertools.product(weights, counts) if case[0] == "hybrid"
                              else [(None, None)])]
        for (method, on_tuned, sampler, steps), options in cases:
            run = tuned if on_tuned else base
            if run is None:
                raise UserError("a case @tuned needs --tuned")
            start = time.perf_counter()
            images = images_of(run, method, sampler, steps, args.num, args.seed, **options)
            seconds = time.perf_counter() - start
            with torch.no_grad():
                kinds = torch.stack([e(images.float().cpu()).argmax(1) for e in evaluators])
            columns = [kinds == 2, kinds == 3, (kinds == 0) | (kinds == 2), kinds == 1]
            cells = " | ".join(share(c.float().mean(1), len(images)) for c in columns)
            w = options.get("guidance", 10.0 if method == "blend" else 0.0)
            print(f"| {run.run_dir.path.name if run.run_dir else '-'} | {method} | {sampler} | "
                  f"{steps} | {w:g} | {options.get('candidates', '-')} | {cells} | "
                  f"{seconds:.0f} |", flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
