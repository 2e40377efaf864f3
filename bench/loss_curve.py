"""Does the fast path learn like fp32? Trains the same config twice from the same seed, once with
the fast path (bf16 autocast, channels_last) and once in plain fp32, and compares the logged loss
curves: the mean absolute gap between them against the step-to-step noise of the fp32 curve.

    python bench/loss_curve.py --preset cifar10 --steps 2000     # on a GPU (the issue's check)
    python bench/loss_curve.py --preset sprites-demo --steps 200 --amp bf16   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pegasus.config import build_config
from pegasus.training import train


def curve(preset: str, steps: int, log_every: int, amp: str, channels_last: bool,
          extra: list[str]) -> list[float]:
    config = build_config(preset, overrides=[
        f"train.iters={steps}", f"train.log_every={log_every}", "train.sample_every=0",
        f"train.checkpoint_every={steps}", f'train.amp="{amp}"',
        f"train.channels_last={'true' if channels_last else 'false'}", *extra])
    with tempfile.TemporaryDirectory() as run:
        start = time.perf_counter()
        result = train(config, Path(run), tensorboard=False)
        print(f"  {amp:4s}: {steps} steps in {time.perf_counter() - start:.0f} s, "
              f"final logged loss {result.losses[-1][1]:.2f}")
    return [loss for _, loss in result.losses]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="cifar10")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--amp", default="bf16", help="the fast path's autocast (bf16 or auto)")
    parser.add_argument("--log-every", type=int, default=20, help="steps per logged (mean) loss")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()
    if args.log_every < 1 or args.steps < 6 * args.log_every:
        parser.error("the noise estimate needs at least 3 logged points in the second half: "
                     "--steps must be at least 6 x --log-every")
    print(f"{args.preset}, {args.steps} steps, loss logged every {args.log_every} steps")
    fast = curve(args.preset, args.steps, args.log_every, args.amp, True, args.set)
    fp32 = curve(args.preset, args.steps, args.log_every, "off", False, args.set)
    # Compare the second halves, where the curves are flat enough for noise to be measured: the
    # noise of one logged point is the spread of successive differences over sqrt(2).
    half = len(fp32) // 2
    gap = statistics.mean(abs(a - b) for a, b in zip(fast[half:], fp32[half:], strict=True))
    steps = [a - b for a, b in zip(fp32[half + 1 :], fp32[half:-1], strict=True)]
    noise = statistics.stdev(steps) / 2**0.5
    print(f"  second half: mean |fast - fp32| {gap:.3f}; noise of one fp32 point {noise:.3f}; "
          f"ratio {gap / noise:.2f} (about 1 or below: within noise)")


if __name__ == "__main__":
    main()
