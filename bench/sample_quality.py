"""Sample quality against network evaluations, for every sampler, on one or more trained runs
(one per training kind: noise.training), in one run: KID on one judge's features (the number of
images stated), a table, and a plot with one line per sampler and one panel per run.

    python bench/sample_quality.py --run runs/demo --num 1000 --plot out/sample-quality.png
    python bench/sample_quality.py --runs levels=runs/demo,log-uniform=runs/demo-lu --num 1000
    python bench/sample_quality.py --run runs/demo --tuned runs/demo-ct --num 1000 \
        --budgets "ipndm=5,10,20;dpmpp-2m=10;cas=32"

Each run's baseline is annealed Langevin at its full schedule (L*T + 1 evaluations). A budget is
"within noise" of the baseline when its KID exceeds the baseline's by at most twice the combined
standard error (KID's spread over subsets of half the samples, a conservative one). The figure
to report: the smallest budget at which each fast sampler is within noise, and its ratio to the
baseline's evaluations. Every run is scored by the first run's judge (`--judge` names another),
so the panels share one yardstick.

`--budgets` takes sampler=evaluations,... separated by ';'; a sampler's options go in brackets,
heun[churn=10,s_min=0.05]=15,29. `--centres` compares where the samplers that start at the
noisiest level begin: centre + sigma_1 z with the centre the training images' per-channel mean
("data"), or a number (0.5; 0 is the start pegasus used before it knew the centre).

`--tuned DIR` adds a consistency-tuned run of `--run` (`pegasus tune`) to its panel, sampled by
`--tuned-budgets` (default consistency=1,2,4), and prints each run's training steps and wall
time (from its TensorBoard log) beside the other's: what the tuning cost against the training.

Each row also gives the samples' texture (pegasus/texture.py): their neighbour-pixel difference
over the training images' and their high-frequency power gap in dB, each with its bootstrap
spread.

`--rows FILE.jsonl` keeps every measured row there as it is measured; a later call with the same
file measures only the rows it lacks (same run, sampler, evaluations, samples and seed), so a
study stopped part way (als at 280 evaluations takes 16 minutes for 1000 samples on the CPU
machine) is continued, and the summary and plot cover every row.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import torch

from common import training_time
from pegasus.data import load_images
from pegasus.errors import UserError
from pegasus.run.job import SamplingJob
from pegasus.run.load import load_trained_run
from pegasus.samplers import split_sampler
from pegasus.tasks.evaluate import measure
from pegasus.tasks.features import feature_extractor
from pegasus.texture import TextureTally, compare

DEFAULT_BUDGETS = ("heun=5,9,15,21,35;pc=8,16,32,64,128;cas=8,16,32,64,128;"
                   "dpmpp-2m=8,14,20,28;dpmpp-2m-sde=8,14,20,28;ipndm=5,10,20;als=31,61,121")
_PART = re.compile(r"^([a-z0-9-]+)(?:\[(.*)\])?$")


def parse_budgets(text: str) -> list[tuple[str, dict, list[int]]]:
    """[(sampler, options, budgets)] from "heun[churn=10]=15,29;cas=16"."""
    out = []
    for part in filter(str.strip, text.split(";")):
        head, _, values = part.strip().rpartition("=") if "]" in part else part.strip().partition("=")
        if _PART.match(head.strip()) is None:
            raise SystemExit(f"error: cannot read the budget {part!r}")
        name, options = split_sampler(head.strip())
        out.append((name, options, [int(v) for v in values.split(",") if v.strip()]))
    return out


def label(sampler: str, options: dict) -> str:
    return sampler + ("[" + ",".join(f"{k}={v}" for k, v in options.items()) + "]" if options else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run with a judge")
    parser.add_argument("--runs", default="", help="kind=DIR,... several runs, one panel each")
    parser.add_argument("--judge", type=Path, help="the run whose judge scores (default: the first)")
    parser.add_argument("--num", type=int, default=300, help="samples per measurement")
    parser.add_argument("--real", type=int, default=2000, help="training images to compare with")
    parser.add_argument("--budgets", default=DEFAULT_BUDGETS,
                        help="sampler[options]=evaluations,...;... (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--plot", type=Path, default=Path("sample-quality.png"))
    parser.add_argument("--tuned", type=Path, help="a consistency-tuned run of --run, same panel")
    parser.add_argument("--tuned-budgets", default="consistency=1,2,4",
                        help="sampler=evaluations,... for --tuned (default: %(default)s)")
    parser.add_argument("--rows", type=Path, help="a .jsonl file of measured rows to continue")
    parser.add_argument("--centres", default="data",
                        help="where the samplers that start at the noisiest level start: data "
                             "(the training images' mean) or numbers, comma-separated")
    args = parser.parse_args()
    runs = dict(part.split("=", 1) for part in args.runs.split(",") if part) or {"": str(args.run)}
    if runs == {"": "None"}:
        parser.error("give --run DIR or --runs kind=DIR,...")
    if args.tuned is not None and len(runs) > 1:
        parser.error("--tuned goes with one --run")
    budgets = parse_budgets(args.budgets)
    rows = []
    try:
        judge = args.judge or Path(next(iter(runs.values())))
        for kind, folder in runs.items():
            rows += measure_run(kind, Path(folder), judge, budgets, args)
        if args.tuned is not None:
            for folder in (Path(next(iter(runs.values()))), args.tuned):
                timing = training_time(folder)
                if timing is not None:
                    print(f"{folder}: {timing[0]} steps in {timing[1]:.0f} s of wall time")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summarise(rows)
    plot(rows, args.plot, args.num)
    print(f"plot: {args.plot}")
    return 0


def measure_run(kind: str, folder: Path, judge: Path, budgets, args) -> list[dict]:
    run = load_trained_run(folder, device=args.device)
    feature = feature_extractor("judge", judge, run.device)
    data = load_images(run.config.data).images
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(args.seed))[: args.real]
    real = data[pick].to(run.device).float() / 255
    data_mean = data.mean(dim=(0, 2, 3), dtype=torch.float64).div(255).float()
    centres = {c: (data_mean if c == "data" else torch.full_like(data_mean, float(c)))
               for c in args.centres.split(",")}
    real_texture = TextureTally().add(real).table()
    print(f"training images' neighbour-pixel difference {real_texture[:, 0].mean():.4f}")
    print(f"{folder}{f' ({kind})' if kind else ''}: {run.config.model.backbone} at "
          f"{run.config.data.res} px, step {run.step}, noise.training "
          f"{run.config.noise.training}; KID x 1e3 on {judge}'s judge features, {args.num} samples "
          f"against {len(real)} training images", flush=True)

    kept = _kept_rows(args.rows)

    def score(sampler: str, options: dict, steps: int | None, centre: str, run=run,
              folder=folder) -> dict:
        plan = run.plan(sampler, steps, **options)
        name = label(sampler, options) + (" (tuned)" if run.model.learns == "consistency" else "")
        if plan.start != "uniform" and len(centres) > 1:
            name += f"@{centre}"
        key = (str(folder), name, plan.evaluations, args.num, args.seed)
        if key in kept:
            row = kept[key] | {"kind": kind}
            print(f"  {name:24s} {plan.evaluations:5d} evaluations  KID {1e3 * row['kid']:8.2f} ± "
                  f"{1e3 * row['std']:5.2f}  FID {row['fid']:8.3f}  (measured earlier)", flush=True)
            return row
        run.centre = centres[centre].view(-1, 1, 1).to(run.device)
        start = time.perf_counter()
        fake = SamplingJob.make(run, plan, num=args.num).images(args.seed)
        seconds = time.perf_counter() - start
        kid, std, fid = measure(real, fake, feature, seed=args.seed)
        texture = compare(TextureTally().add(fake).table(), real_texture, run.config.data.res,
                          seed=args.seed)
        row = {"kind": kind, "sampler": name, "evaluations": plan.evaluations, "kid": kid,
               "std": std, "fid": fid, "seconds": seconds, "mean": fake.mean().item(),
               "grain": texture.grain, "grain_std": texture.grain_std,
               "high_db": texture.high_gap_db, "high_db_std": texture.high_gap_std}
        print(f"  {name:24s} {plan.evaluations:5d} evaluations  KID {1e3 * kid:8.2f} ± "
              f"{1e3 * std:5.2f}  FID {fid:8.3f}  pixel mean {row['mean']:.4f}  grain "
              f"{texture.grain:.3f}x ± {texture.grain_std:.3f}  high frequencies "
              f"{texture.high_gap_db:+.2f} ± {texture.high_gap_std:.2f} dB  {seconds:7.1f} s",
              flush=True)
        if args.rows is not None:
            with args.rows.open("a") as f:
                f.write(json.dumps({"run": str(folder), "num": args.num, "seed": args.seed,
                                    **row}) + "\n")
        return row

    first = next(iter(centres))
    base = score("als", {}, None, first) | {"base": True}
    rows = [base]
    for sampler, options, steps_list in budgets:
        for centre in (centres if sampler != "als" else [first]):
            rows += [score(sampler, options, steps, centre) for steps in steps_list]
    if args.tuned is not None:
        tuned = load_trained_run(args.tuned, device=args.device)
        for sampler, options, steps_list in parse_budgets(args.tuned_budgets):
            rows += [score(sampler, options, steps, first, tuned, args.tuned)
                     for steps in steps_list]
    return rows


def _kept_rows(path: Path | None) -> dict[tuple, dict]:
    """The rows an earlier call measured into `path`, by (run, sampler, evaluations, num, seed)."""
    if path is None or not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {(r["run"], r["sampler"], r["evaluations"], r["num"], r["seed"]): r for r in rows}


def summarise(rows: list[dict]) -> None:
    for kind in dict.fromkeys(r["kind"] for r in rows):
        mine = [r for r in rows if r["kind"] == kind]
        base = next(r for r in mine if r.get("base"))
        print(f"\n{kind + ': ' if kind else ''}smallest budget within noise of als at its full "
              f"budget ({base['evaluations']} evaluations, KID {1e3 * base['kid']:.2f} ± "
              f"{1e3 * base['std']:.2f}):")
        for name in dict.fromkeys(r["sampler"] for r in mine if not r.get("base")):
            ok = [r for r in mine if r["sampler"] == name and not r.get("base")
                  and r["kid"] - base["kid"] <= 2 * math.hypot(r["std"], base["std"])]
            if ok:
                best = min(ok, key=lambda r: r["evaluations"])
                print(f"  {name:24s} {best['evaluations']:5d} evaluations = 1/"
                      f"{base['evaluations'] / best['evaluations']:.1f} of als")
            else:
                print(f"  {name:24s} none of its budgets")


def plot(rows: list[dict], path: Path, num: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.0 * len(kinds), 4.2), dpi=120,
                             sharey=True, squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        mine = [r for r in rows if r["kind"] == kind]
        base = next(r for r in mine if r.get("base"))
        for name in dict.fromkeys(r["sampler"] for r in mine if not r.get("base")):
            line = sorted((r for r in mine if r["sampler"] == name and not r.get("base")),
                          key=lambda r: r["evaluations"])
            ax.errorbar([r["evaluations"] for r in line], [1e3 * r["kid"] for r in line],
                        yerr=[1e3 * r["std"] for r in line], marker="o", capsize=3, label=name)
        ax.axhline(1e3 * base["kid"], color="black", lw=1,
                   label=f"als, {base['evaluations']} evaluations")
        ax.axhspan(1e3 * (base["kid"] - 2 * base["std"]), 1e3 * (base["kid"] + 2 * base["std"]),
                   color="black", alpha=0.1)
        ax.set_xscale("log")
        ax.set_xlabel("network evaluations per image")
        ax.set_title(f"training: {kind}" if kind else "")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"KID x 1e3 (judge features, {num} samples)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
