"""Memorisation against training steps, for one or more runs on a small training set, in one
run: every checkpoint each run kept, scored by `pegasus eval`'s figures (tasks/evaluate.py,
tasks/novelty.py) on one judge's features: KID against held-out images (which a copying model
does not win, unlike KID against the training images), the memorised share, the median distance
ratio, precision and recall.

    python bench/memorisation.py --runs base=runs/s20-base,shift=runs/s20-shift --num 500

Train the runs with train.keep large enough to keep every checkpoint the curve needs (each run
folder's checkpoints/). The runs share one yardstick, one judge: each run folder holds the same
judge.pt (train one with pegasus train-judge and copy it into the others). The summary compares
the runs at equal quality: the lowest held-out KID of all checkpoints is the best; each run's
first checkpoint within noise of it (held-out KID above the best by at most twice the combined
standard error) is where the run reaches that quality, and its memorised share there is what
the run costs in copies. The figures: README "Is it new?" and bench/README.md "Memorisation on
a small training set".
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from pegasus import load
from pegasus.run.checkpoint import list_checkpoints


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True,
                   help="name=RUN,... run folders trained alike but for what is compared")
    p.add_argument("--num", type=int, default=500, help="samples per checkpoint")
    p.add_argument("--sampler", default="cas")
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    runs = dict(part.split("=", 1) for part in args.runs.split(","))
    judges = {name: Path(folder) / "judge.pt" for name, folder in runs.items()}
    for name, judge in judges.items():
        if not judge.is_file():
            raise SystemExit(f"error: run {name} has no judge at {judge}: train one with "
                             f"pegasus train-judge, or copy another run's")
    first, judge = next(iter(judges.items()))
    for name, other in judges.items():
        if other.read_bytes() != judge.read_bytes():
            raise SystemExit(f"error: runs {first} and {name} have different judges: copy one "
                             f"judge.pt into every run, so that one yardstick scores them all")
    rows = []
    print(f"{args.num} samples per checkpoint by {args.sampler} at {args.steps} evaluations, "
          f"scored on the judge {judge}")
    print(f"{'run':<10} {'step':>6} {'KID held':>16} {'KID train':>16} {'memorised':>14} "
          f"{'ratio':>6} {'prec.':>6} {'recall':>6}")
    for name, folder in runs.items():
        for checkpoint in list_checkpoints(Path(folder) / "checkpoints"):
            model = load(checkpoint, args.device)
            q = model.evaluate(num=args.num, seed=args.seed, sampler=args.sampler, steps=args.steps)
            if q.held is None:
                raise SystemExit(f"error: run {folder} has no held-out images to score against: "
                                 f"train it with data.held_out (sprites have them always)")
            n = q.novelty
            rows.append((name, model.step, q))
            print(f"{name:<10} {model.step:>6} {q.held.kid:>8.4f} ± {q.held.kid_std:.4f} "
                  f"{q.kid:>8.4f} ± {q.kid_std:.4f} {100 * n.memorised:>6.1f} ± "
                  f"{100 * n.memorised_se:.1f}% {n.median_ratio:>6.2f} "
                  f"{n.scores['precision']:>6.3f} {n.scores['recall']:>6.3f}", flush=True)
    if not rows:
        raise SystemExit("error: no checkpoints in the runs named")
    best_name, best_step, best = min(rows, key=lambda r: r[2].held.kid)
    print(f"\nbest held-out KID {best.held.kid:.4f} ± {best.held.kid_std:.4f} ({best_name}, step "
          f"{best_step}); first checkpoint of each run within noise of it (2 combined SE):")
    for name in runs:
        within = [(step, q) for n_, step, q in rows if n_ == name
                  and q.held.kid - best.held.kid
                  <= 2 * math.hypot(q.held.kid_std, best.held.kid_std)]
        last_step, last = next((s, q) for n_, s, q in reversed(rows) if n_ == name)
        tail = (f"; last, step {last_step}: memorised {100 * last.novelty.memorised:.1f}%, "
                f"KID held {last.held.kid:.4f}")
        if not within:
            print(f"  {name:<10} never within noise{tail}")
            continue
        step, q = within[0]
        print(f"  {name:<10} step {step:>5}: memorised {100 * q.novelty.memorised:.1f} ± "
              f"{100 * q.novelty.memorised_se:.1f}%, ratio {q.novelty.median_ratio:.2f}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
