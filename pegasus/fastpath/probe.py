"""Which of the fast path's uncompiled modes is fastest for this network on this GPU: a few
timed evaluations before the work starts, kept in the run folder so that a run probes once.

Why: the declared choices (bf16 autocast where the GPU has bf16 tensor cores, channels_last where
the backbone says it pays) were measured on one H100 at one size, where a declared mode already
ran below eager float32 for the U-Net (bench/README.md, "Figures behind the code's choices"), so
another GPU, width or resolution can put one below float32 too.
Timing the candidates where the work runs keeps a slower one from being chosen.

What is probed: in training, each switch left at "auto" (amp only where bf16 pays at all), both
ways; in sampling, the layout only, because bf16 against float32 changes the images, and a
seed's images must not depend on which way a timing fell, while the layout changes nothing but
float rounding. A training run's choice is recorded, so its
resumed parts train on the same path. The plainest candidate (float32, contiguous) comes first.
Each is warmed up (cuDNN's algorithm search runs then) and timed over a few calls; the fastest
wins if it beats the plainest by more than MARGIN, else the plainest does. Compiled paths are not
probed: compiling every candidate would cost minutes, and inductor fuses away the elementwise
passes that made channels_last slow.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from pegasus.devices import device_name
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.rules import FastPath, bf16_pays, conv_autotuning
from pegasus.objectives.dsm import dsm_loss

WARMUP = 2  # calls before a candidate's first timing: cuDNN's algorithm search, first blocks
REPEATS = 3  # timed calls per candidate and round
ROUNDS = 2  # interleaved rounds, the best of each candidate's counting: a GPU's clock ramp or
# a neighbour's burst then hits every candidate alike instead of the first one timed
MARGIN = 0.03  # a mode must beat the plainest by 3% to be chosen: what timing noise can fake
# Sampling is timed at no more images than this: past about 100 a GPU is saturated, and on the
# H100 the modes ranked the same at 100 and 1,000 images (bench/README.md), at a tenth of the cost.
SAMPLING_BATCH = 256

Workload = Callable[[FastPath], Callable[[], object]]


def probes(device: torch.device, path: FastPath, setting: bool | str = "auto") -> bool:
    """Whether work on `path` is probed, by `train.probe`: never when compiled; on "auto" only
    on CUDA, where the modes' speeds differ by GPU (on a CPU the declared rule holds:
    bench/README.md measured channels_last there)."""
    if path.compile or setting is False:
        return False
    return setting is True or device.type == "cuda"


def candidates(path: FastPath, device: torch.device, *, amp, channels_last) -> list[FastPath]:
    """`path` with each switch whose setting (`amp`, `channels_last`) is "auto" tried both ways;
    bf16 only where it pays at all (rules.bf16_pays). The plainest candidate comes first."""
    amps = [False, True] if amp == "auto" and bf16_pays(device) else [path.amp]
    layouts = [False, True] if channels_last == "auto" else [path.channels_last]
    return [dataclasses.replace(path, amp=a, channels_last=c) for a in amps for c in layouts]


def fastest(times: dict[FastPath, float], margin: float = MARGIN) -> FastPath:
    """The fastest of `times` (seconds per call, plainest first), if it beats the plainest by
    more than `margin`; else the plainest."""
    plainest = next(iter(times))
    best = min(times, key=times.__getitem__)
    return best if times[best] < (1 - margin) * times[plainest] else plainest


def time_candidates(paths: list[FastPath], workload: Workload, device: torch.device,
                    warmup: int = WARMUP, repeats: int = REPEATS,
                    rounds: int = ROUNDS) -> dict[FastPath, float]:
    """Seconds per call of each candidate's workload: the best of `rounds` interleaved rounds
    of `repeats` calls, after `warmup` calls (one in later rounds, after the re-layout).
    Infinite for a candidate that runs out of GPU memory (float32 needs the most), which is
    then never chosen."""
    times = dict.fromkeys(paths, math.inf)
    failed = set()
    for round_ in range(rounds):
        for path in paths:
            if path in failed:
                continue
            call = workload(path)
            try:
                for _ in range(warmup if round_ == 0 else 1):
                    call()
                _synchronize(device)
                start = time.perf_counter()
                for _ in range(repeats):
                    call()
                _synchronize(device)
                times[path] = min(times[path], (time.perf_counter() - start) / repeats)
            except torch.OutOfMemoryError:
                failed.add(path)
                times[path] = math.inf
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return times


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _layout(model: torch.nn.Module, x: torch.Tensor, path: FastPath) -> torch.Tensor:
    """Put the model's weights and `x` in the candidate's memory format."""
    fmt = torch.channels_last if path.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    return x.contiguous(memory_format=fmt)


def sampling_workload(model: torch.nn.Module, batch: int, shape: tuple[int, ...],
                      device: torch.device) -> Workload:
    """One evaluation of the score network on a batch, as sampling runs it."""
    x = torch.rand(batch, *shape, device=device)
    sigma = torch.ones(batch, device=device)

    def workload(path: FastPath):
        xp = _layout(model, x, path)

        @torch.no_grad()
        def call():
            with path.autocast(device):
                return model(xp, sigma)

        return call

    return workload


def training_workload(model: torch.nn.Module, batch: int, shape: tuple[int, ...],
                      sigmas: torch.Tensor) -> Workload:
    """The loss's forward and backward on a batch, as a training step runs them (Adam and EMA
    do not depend on the mode). Its noise comes from a generator of its own, so the run's
    random streams are untouched."""
    device = sigmas.device
    x = torch.rand(batch, *shape, device=device)
    g = torch.Generator(device=device).manual_seed(0)

    def workload(path: FastPath):
        xp = _layout(model, x, path)

        def call():
            with path.autocast(device):
                loss = dsm_loss(model, xp, sigmas, generator=g).loss
            loss.backward()
            model.zero_grad(set_to_none=True)

        return call

    return workload


def probe(paths: list[FastPath], workload: Workload, model: torch.nn.Module,
          device: torch.device, *, key: WorkKey, record: Path | None = None,
          notify: Callable[[str], None] | None = None) -> FastPath:
    """The fastest of `paths` (candidates' order) for `workload`; with one candidate, that one,
    untimed. With a `record` file (the run's, RunDir.probes), a choice made before for the
    same `key` on the same GPU and torch is reused instead of timing again. The model is left
    in contiguous memory format: the caller lays it out for the chosen path."""
    if len(paths) < 2:
        return paths[0]
    name = device_name(device)
    full_key = key.on(device, [p.describe() for p in paths])
    known = read_record(record)
    entry = known.get(full_key)
    made = entry.get("chosen") if isinstance(entry, dict) else None
    chosen = next((p for p in paths if p.describe() == made), None)
    if chosen is not None:
        return chosen
    # As the work itself runs (NHWC has its own cuDNN algorithms), and leaving the run as it
    # was: a third-party backbone's dropout would draw from the global random streams, and its
    # batch norm would move its running statistics, in the timed training passes.
    with conv_autotuning(device), untouched(model, device):
        times = time_candidates(paths, workload, device)
    model.to(memory_format=torch.contiguous_format)
    model.zero_grad(set_to_none=True)  # a training workload stopped by running out of memory
    chosen = fastest(times)
    if notify is not None:
        timed = ", ".join(f"{p.describe()} " + (f"{1e3 * t:.1f} ms" if math.isfinite(t)
                                                  else "out of memory") for p, t in times.items())
        notify(f"fast path timed on {name}: {timed}; chosen: {chosen.describe()}")
    if record is not None:  # the fields after "chosen" are for readers (`pegasus device`)
        known[full_key] = {"chosen": chosen.describe(), "gpu": name, "torch": torch.__version__,
                           "work": key.describe(), "ms": {p.describe(): round(1e3 * t, 3) if math.isfinite(t)
                                               else None for p, t in times.items()}}
        _write(record, known)
    return chosen


@contextlib.contextmanager
def untouched(model: torch.nn.Module, device: torch.device):
    """The global random streams (the CPU's and `device`'s) and the model's buffers as they
    were before the block: for passes that measure the work (timings, memory), not do it."""
    # By name: a re-layout inside the block (Module.to) may replace a buffer's tensor.
    before = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(before[name])


def read_record(record: Path | None) -> dict:
    """The run's probe record, {key: {"chosen": ..., "ms": {...}}}; a missing or damaged one
    is empty (the probe runs again)."""
    if record is None or not record.is_file():
        return {}
    try:
        known = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _write(record: Path, known: dict) -> None:
    """The record is an optimisation, as the compile cache is: a folder that cannot be written
    costs a warning and a probe next time, not the work."""
    from pegasus.atomic import atomic_write
    from pegasus.errors import PegasusWarning, WriteError

    data = json.dumps(known, indent=1).encode()
    try:
        atomic_write(record, lambda f: f.write(data))
    except WriteError as e:
        warnings.warn(f"the fast path's timings were not kept: {e}", PegasusWarning, stacklevel=3)
