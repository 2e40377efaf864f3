"""Sampling throughput, in one run: each fast mode of one network evaluation against eager
fp32, then whole annealed Langevin chains (the plain eager fp32 loop, the graph-captured one, and
pegasus's fast sampler: the fast path of pegasus.fastpath.compile replayed as a CUDA graph), and a heun
chain of the same length on the fast path, its network launched call by call and, on a GPU,
replayed from one graph (fastpath/graphs.GraphedScore, as `pegasus sample` runs heun, pc, cas).

Per evaluation, at each batch size: eager fp32, bf16 autocast, bf16 + channels_last, and the
fast path `pegasus sample` chooses with compile on (its first call, the compile, is reported
apart from the steady state), with the share of the device's peak (bf16 modes against the bf16
peak, fp32 against TF32 on a GPU). The chain's figure on CPU is the sampler's overhead over the
bare network (target: at most 5%); on a GPU it is the fast sampler's speed-up over the eager fp32
loop (target: at least 4x at batch 100).

    python bench/sample_throughput.py --case refinenet-cifar10 --images 100 --batches 100,1000
    python bench/sample_throughput.py --case small --levels 20 --steps-per-level 5
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools

import torch
from torch.utils.flop_counter import FlopCounterMode

from common import (
    build,
    device_name,
    failure,
    first_and_steady,
    peak_memory_gib,
    peak_tflops,
    precision_of,
    reset_peak,
    seconds_of_one_call,
)
from pegasus.fastpath.compile import fast_score
from pegasus.fastpath.graphs import GraphedScore, cuda_graph_capture
from pegasus.fastpath.rules import Execution, FastPath
from pegasus.noise.schedule import geometric_sigmas, karras_sigmas
from pegasus.registry import get_backbone
from pegasus.samplers.als import annealed_langevin
from pegasus.samplers.heun import heun_sampler

CASES = {
    "refinenet-cifar10": ("refinenet", 32, {"ngf": 128}),
    "unet-64": ("unet", 64, {"width": 128}),  # the winged-horses-stl10-64 preset
    "small": ("unet", 32, {"width": 32}),
    "small-refinenet": ("refinenet", 32, {"ngf": 32}),
}


def modes(channels_last: bool, backend: str) -> dict[str, FastPath | None]:
    """Each fast mode of one evaluation; the last is what `pegasus sample --compile on` runs."""
    return {
        "eager fp32": None,
        "bf16": FastPath(amp=True, channels_last=False, compile=False),
        "bf16 + channels_last": FastPath(amp=True, channels_last=True, compile=False),
        "fast path (compiled)": FastPath(amp=True, channels_last=channels_last, compile=True,
                                         backend=backend),
    }


def flops_of_one_evaluation(model, x, sigma) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x, sigma)
    return counter.get_total_flops()


def per_evaluation(model, device, batch: int, res: int, repeats: int, table: dict) -> None:
    x = torch.rand(batch, 3, res, res, device=device)
    sigma = torch.full((batch,), 0.5, device=device)
    flops = flops_of_one_evaluation(model, x, sigma)
    eager = None
    print(f"  per evaluation at batch {batch} ({flops / 1e9:.1f} GFLOP):")
    for name, path in table.items():
        # A copy each: channels_last converts the module it is given.
        score = model if path is None else fast_score(copy.deepcopy(model), device, path)
        try:
            with torch.no_grad():
                first, seconds = first_and_steady(functools.partial(score, x, sigma), device,
                                                  repeats)
        except Exception as e:  # noqa: BLE001 - the other modes' figures still count
            print(f"    {name:22s} {failure(e)}")
            continue
        eager = eager or seconds
        peak, source = peak_tflops(device, precision_of(device, bf16=path is not None and path.amp))
        util = flops / seconds / 1e12 / peak
        print(f"    {name:22s} {1e3 * seconds:9.2f} ms  {eager / seconds:5.2f}x eager fp32  "
              f"{100 * util:5.1f}% of {peak:.3g} TFLOP/s ({source})  first call {first:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=CASES, default="small")
    parser.add_argument("--images", type=int, default=16, help="the batch of the chains")
    parser.add_argument("--levels", type=int, default=232)
    parser.add_argument("--steps-per-level", type=int, default=5)
    parser.add_argument("--batches", default="",
                        help="batch sizes of the per-evaluation table, comma-separated "
                             "(default: --images)")
    parser.add_argument("--evaluations", type=int, default=20,
                        help="timed evaluations per mode in that table")
    parser.add_argument("--backend", default="inductor", help="torch.compile's backend")
    parser.add_argument("--repeats", type=int, default=2,
                        help="interleaved repeats of the chains; the best counts, so use 2 or more")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone, res, options = CASES[args.case]
    model = build(backbone, res, options, device).eval().requires_grad_(False)
    channels_last = get_backbone(backbone)[0].channels_last
    table = modes(channels_last, args.backend)
    evaluations = args.levels * args.steps_per_level + 1
    print(f"{args.case}: {backbone} {options} at {res} px, on {device_name(device)}")
    for batch in [int(b) for b in (args.batches or str(args.images)).split(",")]:
        per_evaluation(model, device, batch, res, args.evaluations, table)

    sigmas = geometric_sigmas(50.0, 0.01, args.levels, device=device)
    x0 = torch.rand(args.images, 3, res, res, device=device)
    sigma = sigmas[-1].repeat(args.images)  # contiguous, as the samplers pass it (one compile)
    print(f"  chains: {args.images} images, {evaluations} evaluations")

    @torch.no_grad()
    def bare():
        for _ in range(evaluations):
            model(x0, sigma)

    def chain(score, capture):
        g = torch.Generator(device=device).manual_seed(0)
        return lambda: annealed_langevin(score, x0, sigmas, steps_per_level=args.steps_per_level,
                                         eps=6.2e-6, generator=g, capture=capture)

    cuda = device.type == "cuda"
    # The chains' fast path is what `pegasus sample` picks on this device for long work.
    path = dataclasses.replace(FastPath.choose(device, channels_last, evaluations,
                                                Execution(compile="on")),
                               backend=args.backend)
    rows = [("bare network", bare), ("eager fp32 sampler", chain(model, None))]
    if cuda:
        rows.append(("graphed fp32 sampler", chain(model, cuda_graph_capture)))
    fast = fast_score(copy.deepcopy(model), device, path)
    with torch.no_grad():  # the compile, before any chain is timed
        print(f"  the fast sampler's first evaluation (its compile): "
              f"{seconds_of_one_call(functools.partial(fast, x0, sigma), device):.2f} s")
    fast_row = f"fast sampler ({path.describe()}{', graphed' if cuda else ''})"
    rows.append((fast_row, chain(fast, cuda_graph_capture if cuda else None)))
    # heun, pc and cas get a graph of the network alone, once per job (graphs.GraphedScore):
    # heun's chain of the same length, its network launched call by call, and replayed.
    grid = karras_sigmas(50.0, 0.01, (evaluations + 1) // 2, device=device)

    def heun(score):
        return lambda: heun_sampler(score, x0, grid)

    rows.append(("fast heun, launched", heun(fast)))
    if cuda:
        rows.append(("fast heun, graphed network", heun(GraphedScore(fast, cuda_graph_capture))))
    flops = flops_of_one_evaluation(model, x0, sigma) * evaluations
    # Interleaved repeats, best of each: a machine's slow moments hit every row alike, and the
    # first round doubles as the warm-up (a whole chain is too long to run once more untimed).
    seconds = {name: float("inf") for name, _ in rows}
    memory = {}
    failed = {}
    for _ in range(args.repeats):
        for name, fn in rows:
            if name in failed:
                continue
            reset_peak(device)
            try:
                seconds[name] = min(seconds[name], seconds_of_one_call(fn, device))
            except Exception as e:  # noqa: BLE001 - the other rows' figures still count
                failed[name] = failure(e)
            memory[name] = peak_memory_gib(device)
    for name, _ in rows:
        if name in failed:
            print(f"    {name:40s} {failed[name]}")
            continue
        bf16 = name.startswith("fast") and path.amp
        peak, source = peak_tflops(device, precision_of(device, bf16))
        rate = evaluations * args.images / seconds[name]
        util = flops / seconds[name] / 1e12 / peak
        mem = memory[name]
        print(f"    {name:40s} {seconds[name]:8.2f} s  {rate:10.1f} evaluations x images / s  "
              f"{100 * util:5.1f}% of {peak:.3g} TFLOP/s ({source})"
              + (f"  peak memory {mem:.2f} GiB" if mem is not None else ""))
    def ratio(slow: str, fast: str, percent: bool = False) -> str:  # "failed" where either did
        if slow in failed or fast in failed:
            return "failed"
        r = seconds[slow] / seconds[fast]
        return f"{100 * (r - 1):+.1f}%" if percent else f"{r:.2f}x"

    print(f"  sampler overhead over the bare network: "
          f"{ratio('eager fp32 sampler', 'bare network', percent=True)}")
    if cuda:
        print(f"  speed-up (graphed fp32 / eager fp32): "
              f"{ratio('eager fp32 sampler', 'graphed fp32 sampler')}")
    print(f"  speed-up (fast sampler / eager fp32 sampler): "
          f"{ratio('eager fp32 sampler', fast_row)}")
    if cuda:
        print(f"  speed-up (fast heun, graphed network / launched): "
              f"{ratio('fast heun, launched', 'fast heun, graphed network')}")

if __name__ == "__main__":
    main()
