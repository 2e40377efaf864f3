"""Blend quality over guidance weight x sampler x budget, in one call, on the run's judge: the
share of strips from the source class at the left to the target at the right, monotonicity,
balance at the columns written, smoothness and its spread, copies of training images, and the
KID of the columns written against the training images (`blend --report`'s figures:
pegasus/tasks/strips.py).

    python bench/blend_quality.py --run runs/demo --strips 60 --weights 0,3,10,30 \\
        --samplers "cas=32;als=94" --tuned runs/demo-ct --tuned-samplers "consistency=2,4"

The run needs its guide and judge (`pegasus train-guide`, `train-judge`). A tuned run (`pegasus
tune`) holds copies of those its source had when it was tuned; `make demo` trains no judge, so
copy the source's `judge.pt` into it after `train-judge`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pegasus.errors import UserError
from pegasus.run.load import load_trained_run
from pegasus.tasks.blend import BlendRequest, blend


def parse(text: str) -> list[tuple[str, int]]:
    """[(sampler, evaluations)] from "cas=32;consistency=2,4"."""
    out = []
    for part in filter(str.strip, text.split(";")):
        name, _, budgets = part.partition("=")
        out += [(name.strip(), int(b)) for b in budgets.split(",") if b.strip()]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--tuned", type=Path, help="a consistency-tuned run of --run")
    parser.add_argument("--samplers", default="cas=32", help="sampler=evaluations,...;...")
    parser.add_argument("--tuned-samplers", default="consistency=2,4")
    parser.add_argument("--weights", default="0,3,10,30", help="guidance weights W")
    parser.add_argument("--strips", type=int, default=60)
    parser.add_argument("--n", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source", default="horse")
    parser.add_argument("--target", default="bird")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    studies = [(args.run, s) for s in parse(args.samplers)]
    studies += [(args.tuned, s) for s in parse(args.tuned_samplers)] if args.tuned else []
    weights = [float(w) for w in args.weights.split(",")]
    print(f"{args.strips} strips of N = {args.n}, seed {args.seed}, {args.source} to "
          f"{args.target}; the columns are each strip's own (k auto)")
    print("| run | sampler | evaluations | W | ends | monotonicity | balance | smoothness ± "
          "spread | copies | KID x 1e3 | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    try:
        for folder, (sampler, steps) in studies:
            run = load_trained_run(folder, device=args.device)
            for w in weights:
                request = BlendRequest(n=args.n, k="auto", strips=args.strips, seed=args.seed,
                                       source=args.source, target=args.target, guidance=w,
                                       sampler=sampler, steps=steps)
                start = time.perf_counter()
                report = blend(run, request, report=True).reports[0]
                s = report.scores
                kid = ("-" if report.kid is None  # one strip: KID needs two images
                       else f"{1e3 * report.kid:.1f} ± {1e3 * report.kid_std:.1f}")
                print(f"| {folder.name} | {sampler} | {steps} | {w:g} | "
                      f"{100 * report.ends_correct:.1f}% | {s.monotonicity:.2f} | "
                      f"{s.balance:.2f} | {s.smoothness:.3g} ± {s.smoothness_spread:.2g} | "
                      f"{100 * report.memorised:.1f}% | {kid} | "
                      f"{time.perf_counter() - start:.1f} |",
                      flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
