"""bf16 sampling quality: the same seed drawn with the network in float32 and under bf16
autocast (the fast path's `amp`), on one trained run, in one run.

    python bench/bf16_quality.py --run runs/demo --num 1000 --sampler cas --steps 32
    python bench/bf16_quality.py --run RUN --num 512 --device cuda --fp32-below 0.1

Printed: the mean |difference| per pixel and the share of images whose mean difference exceeds
0.05; per-channel means of the data and both sets; the brightness shift (bf16 - fp32, per image,
paired: same seed) with its standard error, called systematic when it is more than 3 standard
errors from 0; the judge's recognition share (top class with p >= 0.9) of each set; KID x 1e3 on
judge features of each set against the training images, and of bf16 against fp32.

`--fp32-below SIGMA[,SIGMA...]` runs the levels with sigma < SIGMA in float32 (the remedy the
fast-path issue names for a systematic shift) and reports each such set beside the others. The switch reads
each call's sigma on the host, so it is a measuring device here, not a fast path.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

from pegasus.data import load_images
from pegasus.errors import UserError
from pegasus.fastpath import Execution
from pegasus.run.job import SamplingJob
from pegasus.run.load import load_trained_run
from pegasus.tasks.evaluate import measure
from pegasus.tasks.features import feature_extractor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run with a judge")
    parser.add_argument("--num", type=int, default=512, help="samples per set")
    parser.add_argument("--real", type=int, default=2000, help="training images to compare with")
    parser.add_argument("--sampler", default="als")
    parser.add_argument("--steps", type=int, default=None, help="evaluation budget per image")
    parser.add_argument("--fp32-below", default="", metavar="SIGMA[,SIGMA...]",
                        help="also draw a set with the levels below each SIGMA in float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    try:
        run = load_trained_run(args.run, device=args.device)
        feature = feature_extractor("judge", args.run, run.device)
        plan = run.plan(args.sampler, args.steps)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    judge = feature.judge
    data = load_images(run.config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[: args.real]
    real = data[pick].to(run.device).float() / 255
    fp32_path = SamplingJob.make(run, plan, num=args.num, execution=Execution(compile="off", amp="off")).path
    bf16_path = SamplingJob.make(run, plan, num=args.num, execution=Execution(compile="off", amp="on")).path
    print(f"{args.run}: {run.config.model.backbone} at {run.config.data.res} px, step {run.step}, "
          f"on {run.device}; {args.sampler} at {plan.evaluations} evaluations, {args.num} samples "
          f"per set, seed {args.seed}")

    def draw(name: str, score) -> torch.Tensor:
        start = time.perf_counter()
        images = SamplingJob(run, plan, args.num, args.num, fp32_path, score).images(args.seed)
        print(f"  drew {name} in {time.perf_counter() - start:.1f} s", flush=True)
        return images

    fp32, bf16 = (run.scores[path] for path in (fp32_path, bf16_path))  # made by the jobs above
    sets = {"fp32": draw("fp32", fp32), "bf16": draw("bf16", bf16)}
    for threshold in [float(t) for t in args.fp32_below.split(",") if t.strip()]:
        name = f"bf16, fp32 below {threshold:g}"
        sets[name] = draw(name, mixed_precision(fp32, bf16, threshold))

    reference = sets["fp32"]
    print(f"\n  {'set':28s} {'mean |diff|':>11s} {'images > 0.05':>13s} {'R, G, B means':>22s} "
          f"{'brightness shift (paired)':>27s} {'judge p>=0.9':>12s} {'KID x 1e3 vs data':>18s}")
    print(f"  {'data':28s} {'':>11s} {'':>13s} {channel_means(real):>22s}")
    for name, images in sets.items():
        diff = (images - reference).abs().flatten(1).mean(1)
        shift = (images - reference).flatten(1).mean(1)  # per image, same seed
        mean, se = shift.mean().item(), shift.std().item() / math.sqrt(len(shift))
        verdict = "systematic" if name != "fp32" and abs(mean) > 3 * se else ""
        kid, std, _ = measure(real, images, feature, seed=args.seed)
        print(f"  {name:28s} {diff.mean().item():11.4f} {100 * (diff > 0.05).float().mean().item():12.1f}% "
              f"{channel_means(images):>22s} {mean:+9.5f} ± {se:.5f} {verdict:>10s} "
              f"{100 * recognised(judge, images):11.1f}% {1e3 * kid:9.2f} ± {1e3 * std:5.2f}")
    for name, images in list(sets.items())[1:]:
        kid, std, _ = measure(reference, images, feature, seed=args.seed)
        print(f"  KID x 1e3, {name} against fp32: {1e3 * kid:.2f} ± {1e3 * std:.2f}")
    kid, std, _ = measure(real[: len(real) // 2], real[len(real) // 2:], feature, seed=args.seed)
    print(f"  KID x 1e3, data against data (two halves, the estimate's floor): {1e3 * kid:.2f} ± "
          f"{1e3 * std:.2f}")
    return 0


def mixed_precision(fp32, bf16, threshold: float):
    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (fp32 if sigma[0].item() < threshold else bf16)(x, sigma)

    return score


def channel_means(images: torch.Tensor) -> str:
    return ", ".join(f"{m:.4f}" for m in images.mean(dim=(0, 2, 3)).tolist())


@torch.no_grad()
def recognised(judge, images: torch.Tensor) -> float:
    """The share of images whose top class the judge gives p >= 0.9."""
    probs = torch.cat([judge.log_prob(chunk).exp() for chunk in images.split(256)])
    return (probs.max(dim=1).values >= 0.9).float().mean().item()


if __name__ == "__main__":
    sys.exit(main())
