"""Consistency tuning, recipe by recipe: each tuned run's samples at 1, 2 and 4 evaluations on
Karras's grid and on the sigmas `pegasus search-sigmas` chooses, against the base run's own
samplers, in one table.

    python bench/ect_study.py --base runs/demo --runs old-300=runs/study/old-300,... \\
        --num 400 --base-samplers "cas=32;heun=15"

Every row is scored by the base run's judge (each tuned run holds a copy of it): KID x 1e3
against the training images with its spread over subsets, the share the judge recognises
(p >= 0.9), and the texture figures (pegasus/texture.py): the neighbour-pixel difference over
the data's and the high-frequency power gap, each with its bootstrap spread. `--search` runs
the sigma search on each tuned run first (2 .. 4 evaluations; written into the run), with
`--search-num` samples a probe. Tuning wall times come from each run's TensorBoard log.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pegasus
from common import training_time
from pegasus.errors import UserError
from pegasus.run.sigmas import SearchedSigmas


def row(name: str, model, sampler: str, steps: int, num: int, seed: int,
        grid: str = "") -> str:
    start = time.perf_counter()
    q = model.evaluate(num=num, seed=seed, sampler=sampler, steps=steps)
    t = q.texture
    return (f"| {name} | {q.sampler}{grid} | {q.evaluations} | {1e3 * q.kid:.1f} ± "
            f"{1e3 * q.kid_std:.1f} "
            f"| {100 * q.recognised:.1f}% | {t.grain:.2f} ± {t.grain_std:.2f} | "
            f"{t.high_gap_db:+.2f} ± {t.high_gap_std:.2f} | {time.perf_counter() - start:.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--runs", required=True, help="name=folder,... of tuned runs of --base")
    parser.add_argument("--base-samplers", default="cas=32;heun=15")
    parser.add_argument("--num", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--search-num", type=int, default=256)
    parser.add_argument("--probes", type=int, default=6)
    args = parser.parse_args()
    runs = [tuple(item.split("=", 1)) for item in args.runs.split(",")]
    print(f"{args.num} samples a row, seed {args.seed}; KID x 1e3 on {args.base}'s judge")
    print("| run | sampler | evaluations | KID x 1e3 | recognised | neighbour difference / "
          "data's | high-frequency gap (dB) | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    try:
        base = pegasus.load(args.base)
        for item in args.base_samplers.split(";"):
            sampler, steps = item.split("=")
            print(row(args.base.name, base, sampler, int(steps), args.num, args.seed), flush=True)
        for name, folder in runs:
            folder = Path(folder)
            tuned = pegasus.load(folder)
            timing = training_time(folder)
            label = f"{name} ({timing[1]:.0f} s)" if timing else name
            if args.search:
                tuned.search_sigmas(steps=4, num=args.search_num, probes=args.probes,
                                    seed=args.seed)
            found = SearchedSigmas.read(folder / "consistency-sigmas.toml")
            print(row(label, tuned, "consistency", 1, args.num, args.seed), flush=True)
            for steps in (2, 4):
                if found is not None and steps in found.by_steps:
                    karras = "consistency[sigmas=" + str(karras_below(tuned, steps)) + "]"
                    print(row(label, tuned, karras, steps, args.num, args.seed, " (Karras)"),
                          flush=True)
                grid = " (searched)" if found is not None and steps in found.by_steps else ""
                print(row(label, tuned, "consistency", steps, args.num, args.seed, grid),
                      flush=True)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def karras_below(model, steps: int) -> list[float]:
    """Karras's sigmas below sigma_1 for `steps` evaluations: the grid before any search."""
    from pegasus.noise.schedule import karras_sigmas

    s = model.trained.schedule
    return [round(float(v), 5) for v in karras_sigmas(s.sigma_max, s.sigma_min, steps + 1)[1:-1]]


if __name__ == "__main__":
    sys.exit(main())
