"""Shared helpers for the benchmark scripts: model building, timing, memory, peak FLOP rate."""

from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import torch

from pegasus.errors import first_line
from pegasus.model.score import ScoreModel
from pegasus.registry import get_backbone

# Dense peak rates by the vendor datasheets, TFLOP/s, keyed by what torch names the device. The
# H200 SXM has the H100 SXM's arithmetic (only its memory differs); other GPUs get a measured
# matmul as their ceiling rather than a figure that is not theirs.
# "fp32" work on a GPU runs its convolutions in TF32 under cuDNN's default
# (torch.backends.cudnn.allow_tf32), so it is measured against the TF32 peak, not the fp32 one
# (against 67 TFLOP/s, eager fp32 once printed "133%").
PEAK_TFLOPS = {
    "NVIDIA H200": {"bf16": 989.0, "tf32": 494.7, "fp32": 67.0},
    "NVIDIA H100 80GB HBM3": {"bf16": 989.0, "tf32": 494.7, "fp32": 67.0},
}


def float_precision(device: torch.device) -> str:
    """What "fp32" work really runs as on `device`: tf32 on a GPU whose cuDNN allows it."""
    return "tf32" if device.type == "cuda" and torch.backends.cudnn.allow_tf32 else "fp32"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def build(backbone: str, res: int, options: dict, device: torch.device) -> ScoreModel:
    spec, _ = get_backbone(backbone)
    torch.manual_seed(0)
    return ScoreModel(spec.build(options, res=res)).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_of_one_call(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def timed(fn, device: torch.device, repeats: int) -> float:
    """Seconds per call, after one untimed warm-up call."""
    return first_and_steady(fn, device, repeats)[1]


def first_and_steady(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(seconds of the first call, seconds per call after it): the first call holds the one-off
    costs (torch.compile, cuDNN's algorithm search, the allocator), reported apart from the
    steady state."""
    first = seconds_of_one_call(fn, device)

    def calls() -> None:
        for _ in range(repeats):
            fn()

    return first, seconds_of_one_call(calls, device) / repeats


def failure(error: Exception) -> str:
    """One line for a mode that failed, so that a bench run on a lent GPU reports the other
    modes' figures instead of ending at the first error."""
    return f"failed: {type(error).__name__}: {first_line(error)}"[:200]


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float | None:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return None


def measured_peak_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Where no datasheet figure applies (CPUs), the rate of a large matmul, as the ceiling."""
    n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = timed(lambda: a @ b, device, 5)
    return 2 * n**3 / seconds / 1e12


@functools.cache  # measured once per run, so both paths share one ceiling
def peak_tflops(device: torch.device, precision: str) -> tuple[float, str]:
    rates = PEAK_TFLOPS.get(torch.cuda.get_device_name(device)) if device.type == "cuda" else None
    if rates is not None:
        return rates[precision], "datasheet"
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    return measured_peak_tflops(device, dtype), "measured matmul"


def precision_of(device: torch.device, bf16: bool) -> str:
    return "bf16" if bf16 and device.type == "cuda" else float_precision(device)


def training_time(folder: Path) -> tuple[int, float] | None:
    """A run's last logged step and its training's wall time, from its TensorBoard log: the span
    between its first and last logged losses, scaled to the whole run (the first log comes
    after log_every steps; start-up is not counted); None without two logged losses."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "logs")).Reload()
    tags = events.Tags()["scalars"]
    losses = events.Scalars(tags[0]) if tags else []
    if len(losses) < 2:
        return None
    first, last = losses[0], losses[-1]
    return last.step, (last.wall_time - first.wall_time) * last.step / (last.step - first.step)
