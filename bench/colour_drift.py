"""Colour drift along training, from runs' TensorBoard logs: at every sample grid, each channel's
mean gap to the training images', the largest, the largest std gap and their distance
(pegasus/colour.py logs them), one table per run, in one call.

    python bench/colour_drift.py --runs levels=runs/long-levels,edm=runs/long-edm

Train the runs with grids as often as the curve needs, e.g. `pegasus train --config
sprites-demo --iters 20000 --set train.sample_every=1000 --set train.grid=64`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def curve(folder: Path) -> list[dict[str, float]]:
    """One row per logged grid: step and each colour/* scalar."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not (folder / "logs").is_dir():
        raise SystemExit(f"error: {folder} holds no logs/ folder: not a run that trained with "
                         f"TensorBoard")
    events = EventAccumulator(str(folder / "logs")).Reload()
    tags = [t for t in events.Tags()["scalars"] if t.startswith("colour/")]
    if not tags:
        raise SystemExit(f"error: {folder} logged no colour figures (no sample grids, or a run "
                         f"older than the colour monitor)")
    rows: dict[int, dict[str, float]] = {}
    for tag in tags:
        for scalar in events.Scalars(tag):
            rows.setdefault(scalar.step, {"step": scalar.step})[tag.removeprefix("colour/")] = \
                scalar.value
    return [rows[step] for step in sorted(rows)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="kind=DIR,... runs to read")
    args = parser.parse_args()
    for part in args.runs.split(","):
        kind, _, folder = part.partition("=")
        rows = curve(Path(folder))
        print(f"\n{kind} ({folder}): channel mean gaps (R G B), largest, largest std gap, distance")
        for r in rows:
            gaps = " ".join(f"{r.get(f'mean_gap_{c}', float('nan')):+.4f}" for c in range(3))
            print(f"  step {int(r['step']):6d}  {gaps}  {r['largest_mean_gap']:.4f}  "
                  f"{max(abs(r.get(f'std_gap_{c}', 0.0)) for c in range(3)):.4f}  "
                  f"{r['distance']:.4f}")
        late = [r["largest_mean_gap"] for r in rows[len(rows) // 2:]]
        print(f"  largest mean gap over the second half of the run: {max(late):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
