"""The GPU fast path of sampling: the score network under bf16 autocast, channels_last where the
backbone declares it pays, and torch.compile, with the compiled artifacts cached beside the run
so the second `pegasus sample` of a run does not pay the compile again.

What stays float32: the Langevin update, the state and the 1/sigma scaling (ScoreModel divides
the network's output in float32), so bf16 touches the network's arithmetic only.

When compiling pays ("auto"): on CUDA only (on a CPU inductor's C++ build costs more than it
saves at these sizes), and only when the work is long: at least AUTO_MIN_EVALUATIONS network
evaluations per process (evaluations per image x batches). On an H100 the RefineNet's first
compile took 31 s and saved 15 ms per evaluation at batch 100 (shared/gpu/FIGURES.md), so it
repays itself after about 2,000 evaluations; a cached compile costs a few seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from pegasus.signatures import ScoreFn

AUTO_MIN_EVALUATIONS = 2000
CACHE_DIR = "compile-cache"


@dataclass(frozen=True)
class FastPath:
    amp: bool  # bf16 autocast for the network
    channels_last: bool
    compile: bool

    @classmethod
    def choose(cls, device: torch.device, channels_last: bool, evaluations: int,
               compile_: str = "auto", amp: str = "auto") -> FastPath:
        """The fast path for `evaluations` network evaluations on `device` (see the module's
        rule); `compile_` and `amp` are "auto", "on" or "off"."""
        cuda = device.type == "cuda"
        on = {"auto": None, "on": True, "off": False}
        want_compile = on[compile_] if on[compile_] is not None else (
            cuda and evaluations >= AUTO_MIN_EVALUATIONS)
        want_amp = on[amp] if on[amp] is not None else cuda
        return cls(amp=bool(want_amp), channels_last=cuda and channels_last,
                   compile=bool(want_compile))


def cache_file(run_dir: Path, model: torch.nn.Module, device: torch.device, key: str) -> Path:
    """Where a compile of this network on this device and torch is cached in the run folder."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    digest = hashlib.sha256(f"{torch.__version__}|{name}|{key}|{type(model).__name__}".encode())
    return Path(run_dir) / CACHE_DIR / f"{digest.hexdigest()[:16]}.bin"


def fast_score(model: torch.nn.Module, device: torch.device, path: FastPath, *,
               cache: Path | None = None, backend: str = "inductor") -> ScoreFn:
    """The score function sampling should call on `device` under `path`. With `cache`, compiled
    artifacts are loaded from it first and saved to it after the first evaluation."""
    if path.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = model
    if path.compile:
        if cache is not None and cache.is_file():
            torch.compiler.load_cache_artifacts(cache.read_bytes())
        network = torch.compile(model, backend=backend, dynamic=False)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if path.amp
                else contextlib.nullcontext())
    saved = cache is None or not path.compile or cache.is_file()

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        nonlocal saved
        if path.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = network(x, sigma)  # float32: the score model divides by sigma in float32
        if not saved:
            saved = True
            _save_artifacts(cache)
        return out

    return score


def _save_artifacts(cache: Path) -> None:
    from pegasus.atomic import atomic_write

    artifacts = torch.compiler.save_cache_artifacts()
    if artifacts is not None:
        data, _ = artifacts
        atomic_write(cache, lambda f: f.write(data))
