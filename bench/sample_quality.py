"""Sample quality against network evaluations, for every sampler, on one trained run: KID on the
run's judge features (the number of images stated), a table and a PNG plot, in one run.

    python bench/sample_quality.py --run runs/demo --num 300 --plot out/sample-quality.png

The baseline is annealed Langevin at the run's full schedule (L*T + 1 evaluations). A budget is
"within noise" of it when its KID exceeds the baseline's by at most twice the combined standard
error (KID's spread over subsets of half the samples, a conservative one). The figure to report:
the smallest budget at which each fast sampler is within noise, and its ratio to the baseline's
evaluations.

`--centres` compares where the samplers that start at the noisiest level begin: centre +
sigma_1 z with the centre the training images' per-channel mean ("data"), or a number (0.5; 0 is
the start pegasus used before it knew the centre). Each fast sampler runs once per centre;
annealed Langevin starts from uniform noise and runs once.
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
from pegasus.run.load import load_trained_run
from pegasus.tasks.evaluate import feature_extractor, measure

DEFAULT_BUDGETS = "heun=5,9,15,21,35;pc=8,16,32,64,128;cas=8,16,32,64,128;als=31,61,121"


def parse_budgets(text: str) -> dict[str, list[int]]:
    budgets = {}
    for part in text.split(";"):
        name, _, values = part.partition("=")
        budgets[name.strip()] = [int(v) for v in values.split(",") if v.strip()]
    return budgets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run with a judge")
    parser.add_argument("--num", type=int, default=300, help="samples per measurement")
    parser.add_argument("--real", type=int, default=2000, help="training images to compare with")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS,
                        help="sampler=evaluations,...;... (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", type=Path, default=Path("sample-quality.png"))
    parser.add_argument("--centres", default="data",
                        help="where heun, pc and cas start: data (the training images' mean) "
                             "or numbers, comma-separated (default: %(default)s)")
    args = parser.parse_args()
    try:
        run = load_trained_run(args.run, device=args.device)
        feature = feature_extractor("judge", args.run, run.device)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = load_images(run.config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[: args.real]
    real = data[pick].to(run.device).float() / 255
    data_mean = data.mean(dim=(0, 2, 3), dtype=torch.float64).div(255).float()
    centres = {c: (data_mean if c == "data" else torch.full_like(data_mean, float(c)))
               for c in args.centres.split(",")}
    print(f"{args.run}: {run.config.model.backbone} at {run.config.data.res} px, step {run.step}; "
          f"KID x 1e3 on judge features, {args.num} samples against {len(real)} training images; "
          f"data mean (R, G, B) {', '.join(f'{v:.4f}' for v in data_mean.tolist())}")

    def score(sampler: str, steps: int | None, centre: str) -> dict:
        plan = run.plan(sampler, steps)
        run.centre = centres[centre].view(-1, 1, 1).to(run.device)
        start = time.perf_counter()
        fake = run.sample(args.num, args.seed, sampler=plan)
        seconds = time.perf_counter() - start
        kid, std, fid = measure(real, fake, feature, seed=args.seed)
        name = sampler if plan.start == "uniform" or len(centres) == 1 else f"{sampler}@{centre}"
        row = {"sampler": name, "evaluations": plan.evaluations, "kid": kid, "std": std,
               "fid": fid, "seconds": seconds, "mean": fake.mean().item()}
        print(f"  {name:9s} {plan.evaluations:5d} evaluations  KID {1e3 * kid:8.2f} ± "
              f"{1e3 * std:5.2f}  FID {fid:8.3f}  pixel mean {row['mean']:.4f}  {seconds:7.1f} s",
              flush=True)
        return row

    base = score("als", None, next(iter(centres)))
    rows = [score(name, steps, centre) for name, budget in parse_budgets(args.budgets).items()
            for centre in (centres if name != "als" else list(centres)[:1]) for steps in budget]
    print("\nsmallest budget within noise of als at its full budget "
          f"({base['evaluations']} evaluations, KID {1e3 * base['kid']:.2f} ± {1e3 * base['std']:.2f}):")
    for name in dict.fromkeys(r["sampler"] for r in rows):
        ok = [r for r in rows if r["sampler"] == name
              and r["kid"] - base["kid"] <= 2 * math.hypot(r["std"], base["std"])]
        if ok:
            best = min(ok, key=lambda r: r["evaluations"])
            print(f"  {name:9s} {best['evaluations']:5d} evaluations = 1/"
                  f"{base['evaluations'] / best['evaluations']:.1f} of als")
        else:
            print(f"  {name:9s} none of its budgets")
    plot(rows, base, args.plot, args.num)
    print(f"plot: {args.plot}")
    return 0


def plot(rows: list[dict], base: dict, path: Path, num: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in dict.fromkeys(r["sampler"] for r in rows):
        mine = sorted((r for r in rows if r["sampler"] == name), key=lambda r: r["evaluations"])
        ax.errorbar([r["evaluations"] for r in mine], [1e3 * r["kid"] for r in mine],
                    yerr=[1e3 * r["std"] for r in mine], marker="o", capsize=3, label=name)
    ax.axhline(1e3 * base["kid"], color="black", lw=1, label=f"als, {base['evaluations']} evaluations")
    ax.axhspan(1e3 * (base["kid"] - 2 * base["std"]), 1e3 * (base["kid"] + 2 * base["std"]),
               color="black", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xlabel("network evaluations per image")
    ax.set_ylabel(f"KID x 1e3 (judge features, {num} samples)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
