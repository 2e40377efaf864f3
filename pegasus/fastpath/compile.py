"""torch.compile for the score network (and a guided step's classifier), each input shape's
compile kept in the user's cache (cache.py) so that the second `pegasus sample` of a network,
or a resumed training, loads it instead of compiling again. Should torch.compile fail (no
working compiler on the machine), the work goes on uncompiled with a warning: compiling is an
optimisation, as the cache is.

A guided step's classifier is compiled with the network but kept float32: it is a small
network, so bf16 would save little, and its input gradient is the guidance term itself.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from pegasus.errors import PegasusWarning, first_line
from pegasus.fastpath.cache import load_artifacts, save_artifacts, signed
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.rules import FastPath, conv_autotuning
from pegasus.signatures import ScoreFn


class UncompiledOnFailure:
    """`compiled` (a torch.compile'd callable), except that if torch.compile fails in a call
    (dynamo or inductor raising, a missing compiler say) the call and every later one run
    `eager`, with a warning. Errors of the network itself are not dynamo's and pass through."""

    def __init__(self, compiled, eager) -> None:
        self.current, self.eager = compiled, eager

    @property
    def failed(self) -> bool:
        """Whether the compile failed, so that calls now run eagerly (and nothing was compiled
        that a cache could keep)."""
        return self.current is self.eager

    def __call__(self, *args, **kwargs):
        try:
            return self.current(*args, **kwargs)
        except torch._dynamo.exc.TorchDynamoException as e:
            if self.failed:
                raise
            warn_uncompiled(e)
            self.current = self.eager
            return self.eager(*args, **kwargs)


def warn_uncompiled(error: Exception, switch: str = 'compile = "off"') -> None:
    """One line naming the root cause (dynamo wraps the backend's error, whose first line only
    says which backend raised) and the `switch` that skips the attempt."""
    while (inner := getattr(error, "inner_exception", None) or error.__cause__) is not None:
        error = inner
    warnings.warn(f"torch.compile failed on this machine, so this runs uncompiled "
                  f"({type(error).__name__}: {first_line(error)}); {switch} skips the attempt",
                  PegasusWarning, stacklevel=3)


def fast_score(model: torch.nn.Module, device: torch.device, path: FastPath, *,
               key: WorkKey | None = None,
               notify: Callable[[str], None] | None = None) -> ScoreFn:
    """The score function sampling calls on `device` under `path`. With the `key` of the work,
    each input shape's compile (torch.compile specialises on shapes) is loaded from its own file
    in the user's cache before its first evaluation and saved there after it. `notify` hears,
    before each shape's first evaluation, whether it compiles or loads: the one wait of the
    work that no progress bar moves through."""
    if path.channels_last:
        model = model.to(memory_format=torch.channels_last)
    network = model
    if path.compile:
        network = UncompiledOnFailure(
            torch.compile(model, backend=path.backend, dynamic=False), model)
    autocast = path.autocast(device)
    seen: set[tuple[int, ...]] = set()  # the input shapes compiled (or loaded) so far

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if path.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        shape = tuple(x.shape)
        file = None
        if path.compile and shape not in seen:
            seen.add(shape)
            if key is not None:
                file = key.compile_file(device, path, shape)
            if notify is not None:
                notify(compile_notice(len(x), file))
            load_artifacts(file)  # torch.compile compiles lazily: at the call below
        # cuDNN picks its algorithms at a shape's first (warm-up) call, before any graph capture.
        with autocast, conv_autotuning(device):
            out = network(x, sigma)  # float32: the score model divides by sigma in float32
        if file is not None and not signed(file) and not network.failed:
            save_artifacts(file)
        return out

    return score


def compile_notice(batch: int, file: Path | None) -> str:
    """What a shape's first compiled evaluation is about to do, for a user waiting on it."""
    if signed(file):
        return f"loading the network compiled for batch {batch} from your compile cache"
    kept = "it is kept in your compile cache for the next run" if file is not None else "uncached"
    return f"compiling the network for batch {batch}, once: {kept}"


def fast_log_prob(classifier: torch.nn.Module, path: FastPath | None):
    """The guide's log p(c | x, sigma) for guided steps: compiled when `path` compiles (dynamo
    and AOTAutograd compile its forward and the backward that guidance differentiates), float32
    always (the module's note says why). Its compiled artifacts join the score network's in the
    same cache file, as `torch.compiler.save_cache_artifacts` saves all of the process's."""
    if path is None or not path.compile:
        return classifier.log_prob
    return UncompiledOnFailure(
        torch.compile(classifier.log_prob, backend=path.backend, dynamic=False), classifier.log_prob)
