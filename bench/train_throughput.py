"""Training throughput: the fast path against a plain eager fp32 baseline of the same model, in
one run (the ratio is the figure). Prints images/s, peak memory and FLOP utilisation.

    python bench/train_throughput.py --case refinenet-cifar10     # ngf 128, batch 128, 32 px
    python bench/train_throughput.py --case unet-64               # the U-Net at 64 px
    python bench/train_throughput.py --case small                 # sizes a CPU can run
"""

from __future__ import annotations

import argparse

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
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
)
from pegasus.config import TrainConfig
from pegasus.fastpath import probe as probing
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.rules import FastPath, conv_autotuning
from pegasus.model.ema import EMA
from pegasus.noise.schedule import geometric_sigmas
from pegasus.objectives.dsm import dsm_loss
from pegasus.registry import get_backbone
from pegasus.training.trainer import training_step

CASES = {
    "refinenet-cifar10": ("refinenet", 32, 128, {"ngf": 128}),
    "unet-64": ("unet", 64, 64, {"width": 128}),  # the winged-horses-stl10-64 preset
    "small": ("unet", 32, 16, {"width": 32}),
    "small-refinenet": ("refinenet", 32, 16, {"ngf": 32}),
}


def eager_fp32(model, x, sigmas, g):
    """The baseline: what a straightforward NCSNv2 port does, AveragedModel EMA included."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999), use_buffers=True)

    def step():
        loss = dsm_loss(model, x, sigmas, generator=g).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(model)

    return step


def fast_path(model, backbone: str, x, sigmas, compile: bool) -> FastPath:
    """The path `pegasus train` takes for this model: the config's auto rules
    (FastPath.for_training), then, uncompiled on a GPU, the probe's timed choice."""
    device = x.device
    path = FastPath.for_training(device, get_backbone(backbone)[0].channels_last,
                                 TrainConfig(compile=compile), steps=1)
    if probing.probes(device, path):
        path = probing.probe(probing.candidates(path, device, amp="auto", channels_last="auto"),
                             probing.training_workload(model, len(x), tuple(x.shape[1:]), sigmas),
                             model, device, key=WorkKey("train", backbone, "bench", x.shape[-1],
                                                        len(x)),
                             notify=lambda line: print(f"  {line}"))
    return path


def fast(model, x, sigmas, g, path: FastPath):
    """The training fast path `path`, cuDNN's algorithm search on, as the trainer runs it."""
    cuda = x.device.type == "cuda"
    model = model.to(memory_format=torch.channels_last) if path.channels_last else model
    xx = x.contiguous(memory_format=torch.channels_last) if path.channels_last else x
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=cuda)
    ema = EMA(model, 0.999)
    net = torch.compile(model) if path.compile else model
    autocast = path.autocast(x.device)

    def loss(network, images):  # NCSNv2's DSM, as Trainer.objective takes it for such a run
        return dsm_loss(network, images, sigmas, generator=g)

    def step():
        with conv_autotuning(x.device):  # as the trainer's loop runs
            training_step(net, opt, ema, xx, loss, autocast)

    return step


def flops_per_step(step) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=CASES, default="small")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast path")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    backbone, res, batch, options = CASES[args.case]
    sigmas = geometric_sigmas(50.0, 0.01, 232, device=device)
    x = torch.rand(batch, 3, res, res, device=device)
    print(f"{args.case}: {backbone} {options} at {res} px, batch {batch}, on {device_name(device)}")
    # Both paths do the same arithmetic; it is counted once, on the eager model, since the flop
    # counter sees through autocast but not into a compiled graph.
    flops = flops_per_step(eager_fp32(build(backbone, res, options, device), x, sigmas,
                                      torch.Generator(device=device).manual_seed(0)))
    results = {}
    for name in ("eager fp32", "fast"):
        model = build(backbone, res, options, device)
        g = torch.Generator(device=device).manual_seed(0)
        if name == "eager fp32":
            step = eager_fp32(model, x, sigmas, g)
        else:
            path = fast_path(model, backbone, x, sigmas, args.compile)
            print(f"  fast path: {path.describe()}")
            step = fast(model, x, sigmas, g, path)
        reset_peak(device)
        try:
            first, seconds = first_and_steady(step, device, args.steps)
        except Exception as e:  # noqa: BLE001 - the other path's figures still count
            print(f"  {name:10s} {failure(e)}")
            continue
        precision = precision_of(device, bf16=name == "fast" and path.amp)
        peak, source = peak_tflops(device, precision)
        util = flops / seconds / 1e12 / peak
        mem = peak_memory_gib(device)
        results[name] = batch / seconds
        print(f"  {name:10s} {batch / seconds:9.1f} images/s  {seconds * 1e3:8.1f} ms/step  "
              f"{flops / 1e9:8.1f} GFLOP/step  {100 * util:5.1f}% of {peak:.3g} TFLOP/s ({source})"
              + (f"  peak memory {mem:.2f} GiB" if mem is not None else "")
              + f"  first step {first:.2f} s")
    if len(results) == 2:
        print(f"  speed-up (fast / eager fp32): {results['fast'] / results['eager fp32']:.2f}x")


if __name__ == "__main__":
    main()
