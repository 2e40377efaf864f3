"""The fast path's rules: which of its switches (bf16 autocast, channels_last, torch.compile) a
piece of work runs with, where no timing has been done, and the switches' words.

What stays float32 under bf16 autocast: the sampler's update, its state and the 1/sigma scaling
(ScoreModel divides the network's output in float32), so bf16 touches the network's arithmetic
only.

Which GPUs: bf16 autocast ("auto") only where the GPU has bf16 tensor cores (compute capability
8.0, Ampere, and later; older ones lack them, and torch emulates bf16 there), and compilation
only where inductor's GPU code generator, Triton, runs (compute capability 7.0 and later): a P100
or a T4, as free notebooks lend, gets the float32 path rather than a slower one or a compiler
error. channels_last as the backbone declares (Backbone.channels_last), on a CPU too: the
RefineNet gains on an H100 and on oneDNN CPUs alike. These rules give the declared path;
uncompiled on a GPU, probe.py then times the switches left at "auto" there (in sampling, the
layout only) and keeps a mode only if it is faster.

When compiling pays ("auto"): on CUDA only (on a CPU inductor's C++ build costs more than it
saves at these sizes), and only when the work is long: at least AUTO_MIN_EVALUATIONS network
evaluations per process (evaluations per image x batches): where the first compile's cost,
divided by what it saves per evaluation, is repaid (the measured cost and saving: bench/README.md,
"H100 figures of the earlier fast path"). Loading a cached compile costs less (how much is still
to be measured on a GPU: bench/gpu_checks.sh second).

When training compiles (`train.compile = "auto"`): on CUDA only, and only when at least
TRAIN_AUTO_MIN_STEPS steps remain to run: where an uncached training compile is repaid by what it
saves a step (the same section of bench/README.md). Once the compile cache holds that compile (a
resumed run, or one that compiled before), at least TRAIN_CACHED_MIN_STEPS steps suffice: the
second start's target load time over the same saving a step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pegasus.errors import FieldError
from pegasus.signatures import Callback, ProgressBar

AUTO_MIN_EVALUATIONS = 2000
TRAIN_AUTO_MIN_STEPS = 20_000
TRAIN_CACHED_MIN_STEPS = 2_000
# A switch's values; amp also takes "bf16", the word train.amp uses for on.
SWITCHES = {"auto": None, "on": True, "bf16": True, "off": False}
BF16_MIN_CAPABILITY = (8, 0)  # bf16 tensor cores (Ampere)
COMPILE_MIN_CAPABILITY = (7, 0)  # Triton's oldest GPUs (Volta)


def cuda_capability(device: torch.device) -> tuple[int, int] | None:
    """The CUDA device's compute capability; None off CUDA."""
    return tuple(torch.cuda.get_device_capability(device)) if device.type == "cuda" else None


def bf16_pays(device: torch.device) -> bool:
    """`amp = "auto"`'s rule, for sampling and training alike: on GPUs with bf16 tensor cores.
    Not on CPUs: most have no bf16 units, and bf16 training was slower than float32 on this
    project's CPU, which has them (bench/README.md, "Latest figures")."""
    capability = cuda_capability(device)
    return capability is not None and capability >= BF16_MIN_CAPABILITY


def switch_value(value: bool | str, auto: bool) -> bool:
    """A switch's value (True/False or a word of SWITCHES) as set, or `auto` on "auto"."""
    want = value if isinstance(value, bool) else SWITCHES[value]
    return auto if want is None else want


def bf16_on(device: torch.device, amp: bool | str) -> bool:
    """Whether the network runs under bf16 autocast on `device` for the switch value `amp`:
    as set, or by `bf16_pays` on "auto"."""
    return switch_value(amp, bf16_pays(device))


def compiler_runs(device: torch.device) -> bool:
    """Whether "auto" may compile on `device` at all: CUDA GPUs that Triton supports."""
    capability = cuda_capability(device)
    return capability is not None and capability >= COMPILE_MIN_CAPABILITY


def auto_rules(device: torch.device) -> dict[str, str]:
    """What each "auto" switch does on `device`, and why, in words (`pegasus device`)."""
    capability = cuda_capability(device)
    gpu = None if capability is None else f"compute capability {capability[0]}.{capability[1]}"
    if bf16_pays(device):
        amp = f"on: {gpu} has bf16 tensor cores"
    elif gpu is None:
        amp = ("off: most CPUs lack bf16 units, and on this project's CPU, which has them, bf16 "
               "training ran at half the float32 speed")
    else:
        amp = f"off: {gpu} has no bf16 tensor cores (they came with 8.0)"
    if compiler_runs(device):
        compile = (f"on for long work: sampling {AUTO_MIN_EVALUATIONS:,} evaluations or more, "
                   f"training {TRAIN_AUTO_MIN_STEPS:,} steps left or more "
                   f"({TRAIN_CACHED_MIN_STEPS:,} once the compile is cached)")
    elif gpu is None:
        compile = "off: on a CPU inductor's C++ build costs more than it saves at these sizes"
    else:
        compile = f"off: Triton does not support {gpu} (it needs 7.0)"
    layout = "as each backbone declares (pegasus backbones)"
    if device.type == "cuda":
        layout += ("; uncompiled, channels_last (and, in training, bf16) are then timed once "
                   "per run")
    return {"amp": amp, "compile": compile, "channels_last": layout}


@dataclass(frozen=True)
class Execution:
    """How a piece of work runs, as its caller asks once: torch.compile and bf16 autocast (each
    "auto", "on" or "off"; amp "bf16" too), and the progress bar its sampling reports to. The
    fast path's rules then decide what "auto" means for the work (FastPath.choose). The
    switches are checked when it is made: before any slow work."""

    compile: str = "auto"
    amp: str = "auto"
    progress: ProgressBar | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        for name in ("compile", "amp"):
            value = getattr(self, name)
            if value not in SWITCHES or (value == "bf16" and name != "amp"):
                words = "auto, on (or bf16) or off" if name == "amp" else "auto, on or off"
                raise FieldError(name, f"must be {words}, got {value!r}")

    def bar(self, description: str, total: int) -> Callback | None:
        """The callback of a progress bar over `total` network evaluations, if there is one."""
        return self.progress(description, total) if self.progress is not None else None


@dataclass(frozen=True)
class FastPath:
    amp: bool  # bf16 autocast for the network
    channels_last: bool
    compile: bool
    backend: str = "inductor"  # torch.compile's backend (tests on CPU use aot_eager)

    @classmethod
    def choose(cls, device: torch.device, channels_last: bool, evaluations: int,
               execution: Execution = Execution()) -> FastPath:
        """The fast path for `evaluations` network evaluations on `device` (see the module's
        rule) for a backbone that declares `channels_last`, as `execution` asks."""
        return cls.by_rules(device, channels_last, amp=execution.amp, channels_last="auto",
                            compile=execution.compile, long=evaluations >= AUTO_MIN_EVALUATIONS)

    @classmethod
    def for_training(cls, device: torch.device, channels_last: bool, train, steps: int,
                     cached: Callable[[FastPath], bool] = lambda path: False) -> FastPath:
        """Training's fast path on `device` for a backbone that declares `channels_last`, by the
        config's `train.amp`, `train.channels_last` and `train.compile`, with `steps` steps
        still to run; `cached(path)` says whether the compile cache holds that path's compile
        (the module's rule)."""
        def settle(long: bool) -> FastPath:
            return cls.by_rules(device, channels_last, amp=train.amp,
                                channels_last=train.channels_last, compile=train.compile,
                                long=long)

        path = settle(steps >= TRAIN_AUTO_MIN_STEPS)
        if not path.compile and steps >= TRAIN_CACHED_MIN_STEPS:
            compiled = settle(True)  # what "auto" would compile, were the run long enough
            if compiled.compile and cached(compiled):
                return compiled
        return path

    @classmethod
    def by_rules(cls, device: torch.device, declared: bool, *, amp, channels_last, compile,
                 long: bool) -> FastPath:
        """Each switch as set (True/False or a word of SWITCHES), or by its "auto" rule: bf16 where
        it pays, channels_last as the backbone `declared`, compiling for `long` work where the
        compiler runs. The one place these rules are applied, for sampling and training alike."""
        return cls(amp=bf16_on(device, amp),
                   channels_last=switch_value(channels_last, declared),
                   compile=switch_value(compile, long and compiler_runs(device)))

    def autocast(self, device: torch.device):
        """The context the network runs in on `device`: bf16 autocast when `amp`, else none."""
        return (torch.autocast(device.type, dtype=torch.bfloat16) if self.amp
                else contextlib.nullcontext())

    def describe(self) -> str:
        parts = [name for name, on in (("bf16 autocast", self.amp),
                                       ("channels_last", self.channels_last),
                                       ("torch.compile", self.compile)) if on]
        return ", ".join(parts) if parts else "eager float32"


@contextlib.contextmanager
def conv_autotuning(device: torch.device):
    """cuDNN's benchmark mode on CUDA for the duration: for each new input shape it times the
    candidate convolution algorithms once and keeps the fastest. Sampling and training repeat
    one shape thousands of times (run/job.py: equal_batches), so the search repays itself;
    the NCSNv2 reference code turns it on for its whole process (main.py). Elsewhere, nothing."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
