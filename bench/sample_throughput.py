"""Sampling throughput: the sampler against the raw network, and (on CUDA) the graph-captured
sampler against the eager one, in one run.

The figure on CPU is the sampler's overhead: the wall time of annealed Langevin over the wall
time of the same number of bare network evaluations on the same batch (target: at most 5%).
On a GPU it is also the speed-up of CUDA-graph replay over eager sampling.

    python bench/sample_throughput.py --case refinenet-cifar10 --images 100   # 1161 evaluations
    python bench/sample_throughput.py --case small --levels 20 --steps-per-level 5
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import (
    build,
    device_name,
    peak_memory_gib,
    peak_tflops,
    precision_of,
    reset_peak,
    seconds_of_one_call,
)
from pegasus.samplers.langevin import annealed_langevin, cuda_graph_capture
from pegasus.schedule import geometric_sigmas

CASES = {
    "refinenet-cifar10": ("refinenet", 32, {"ngf": 128}),
    "unet-64": ("unet", 64, {"width": 128}),  # the winged-horses-stl10-64 preset
    "small": ("unet", 32, {"width": 32}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=CASES, default="small")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--levels", type=int, default=232)
    parser.add_argument("--steps-per-level", type=int, default=5)
    parser.add_argument("--bf16", action="store_true", help="run the network under bf16 autocast")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repeats; the best counts, so use 2 or more")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone, res, options = CASES[args.case]
    model = build(backbone, res, options, device).eval().requires_grad_(False)
    if args.bf16:
        net = model

        def model(x, sigma):  # noqa: F811 - the same network, under autocast
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return net(x, sigma)

    sigmas = geometric_sigmas(50.0, 0.01, args.levels, device=device)
    evaluations = args.levels * args.steps_per_level + 1
    x0 = torch.rand(args.images, 3, res, res, device=device)
    print(f"{args.case}: {backbone} {options} at {res} px, {args.images} images, "
          f"{evaluations} evaluations, on {device_name(device)}")

    sigma = sigmas[-1].expand(args.images)

    @torch.no_grad()
    def bare():
        for _ in range(evaluations):
            model(x0, sigma)

    def run(capture):
        g = torch.Generator(device=device).manual_seed(0)
        return lambda: annealed_langevin(model, x0, sigmas, steps_per_level=args.steps_per_level,
                                         eps=6.2e-6, generator=g, capture=capture)

    rows = [("bare network", bare), ("eager sampler", run(None))]
    if device.type == "cuda":
        rows.append(("graphed sampler", run(cuda_graph_capture)))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x0, sigma)
    flops = counter.get_total_flops() * evaluations
    peak, source = peak_tflops(device, precision_of(device, args.bf16))
    # Interleaved repeats, best of each: a machine's slow moments hit every row alike, and the
    # first round doubles as the warm-up (a whole chain is too long to run once more untimed).
    seconds = {name: float("inf") for name, _ in rows}
    memory = {}
    for _ in range(args.repeats):
        for name, fn in rows:
            reset_peak(device)
            seconds[name] = min(seconds[name], seconds_of_one_call(fn, device))
            memory[name] = peak_memory_gib(device)
    for name, _ in rows:
        rate = evaluations * args.images / seconds[name]
        util = flops / seconds[name] / 1e12 / peak
        mem = memory[name]
        print(f"  {name:16s} {seconds[name]:8.2f} s  {rate:10.1f} evaluations x images / s  "
              f"{100 * util:5.1f}% of {peak:.3g} TFLOP/s ({source})"
              + (f"  peak memory {mem:.2f} GiB" if mem is not None else ""))
    overhead = seconds["eager sampler"] / seconds["bare network"] - 1
    print(f"  sampler overhead over the bare network: {100 * overhead:+.1f}%")
    if "graphed sampler" in seconds:
        print(f"  speed-up (graphed / eager): {seconds['eager sampler'] / seconds['graphed sampler']:.2f}x")


if __name__ == "__main__":
    main()
