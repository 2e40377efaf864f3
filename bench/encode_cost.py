"""What encoding an image by the probability-flow ODE costs against drawing one with the same
solver: network evaluations (counted by a forward hook on the network, not taken from the plan)
and wall time, one image at a time, on a run trained for one step (the cost does not depend on
the weights).

    python bench/encode_cost.py --res 32 --sampler heun --steps 29
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import pegasus  # noqa: E402
from common import device_name, sync  # noqa: E402
from pegasus.config import build_config  # noqa: E402
from pegasus.training import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--res", type=int, default=32)
    parser.add_argument("--sampler", default="heun", choices=["heun", "dpmpp-2m"])
    parser.add_argument("--steps", type=int, default=29)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="A config override for the run, e.g. model.width=16.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        config = build_config("sprites-demo", overrides=[
            f"data.res={args.res}", "data.size=16", "train.iters=1", "train.batch_size=4",
            "train.sample_every=0", f'train.device="{args.device}"', *args.overrides])
        train(config, Path(folder) / "run", tensorboard=False)
        model = pegasus.load(Path(folder) / "run", args.device)
        calls = [0]
        model.trained.model.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        image = model.job(num=1, sampler=args.sampler, steps=args.steps).images(0)

        def measured(fn):
            calls[0], best = 0, float("inf")
            for _ in range(args.repeats):
                sync(model.device)
                start = time.perf_counter()
                fn()
                sync(model.device)
                best = min(best, time.perf_counter() - start)
            return calls[0] // args.repeats, best

        draw_calls, draw_s = measured(lambda: model.job(num=1, sampler=args.sampler,
                                                            steps=args.steps).images(0))
        encode_calls, encode_s = measured(lambda: model.encode(image, sampler=args.sampler,
                                                               steps=args.steps))
    print(f"{device_name(torch.device(args.device))}; {args.res} px, {args.sampler}, "
          f"--steps {args.steps}, one image, best of {args.repeats}")
    print(f"  draw one image    {draw_calls:4d} evaluations  {1e3 * draw_s:8.1f} ms")
    print(f"  encode one image  {encode_calls:4d} evaluations  {1e3 * encode_s:8.1f} ms")
    print(f"encode / draw: {encode_calls / draw_calls:.2f}x the evaluations, "
          f"{encode_s / draw_s:.2f}x the time")


if __name__ == "__main__":
    main()
