"""The GPU fast path, behind one door.

`for_sampling` and `for_training` decide what a piece of work runs with: bf16 autocast,
channels_last and torch.compile, each by its rule (rules.py) and, uncompiled on a GPU, by
timing the modes left at "auto" there (probe.py), the choice kept in the run folder. Training's
door also refuses a batch that cannot fit (memory.py). `sampling_score` is the network under
the chosen path, its compile cached in the user's cache, never a run folder (compile.py, cache.py);
`chain_graphs` says what each chain replays as a CUDA graph (graphs.py); `sampling_batch_size`
sizes sampling batches to the free GPU memory, `estimated_batch` estimates a CPU's (memory.py).
Every cache and probe record is keyed by one key type (keys.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pegasus import distributed
from pegasus.fastpath import probe
from pegasus.fastpath.compile import fast_log_prob, fast_score
from pegasus.fastpath.graphs import chain_graphs
from pegasus.fastpath.keys import WorkKey
from pegasus.fastpath.memory import check_training_batch, estimated_batch, sampling_batch_size
from pegasus.fastpath.rules import Execution, FastPath, bf16_on
from pegasus.registry import get_backbone

__all__ = ["Execution", "FastPath", "WorkKey", "bf16_on", "chain_graphs", "estimated_batch",
           "fast_log_prob", "for_sampling", "for_training", "sampling_batch_size", "sampling_score"]

Notify = Callable[[str], None] | None


def _declared(config) -> bool:
    return get_backbone(config.model.backbone)[0].channels_last


def for_sampling(model: torch.nn.Module, device: torch.device, config, *, evaluations: int,
                 batch: int, execution: Execution = Execution(),
                 record: Path | None = None, notify: Notify = None) -> FastPath:
    """The fast path for `evaluations` network evaluations of a run's network (`config`, the
    run's) in this process, at `batch` images, as `execution` asks. Uncompiled on a GPU, the
    layout is timed there, at no more than probe.SAMPLING_BATCH images, once per run folder
    (`record`). Only the layout:
    it changes float rounding alone, while bf16 against float32 changes the images, and a
    seed's images must not hang on a timing (probe.py)."""
    path = FastPath.choose(device, _declared(config), evaluations, execution)
    if not probe.probes(device, path, config.train.probe):
        return path
    batch = min(batch, probe.SAMPLING_BATCH)
    res = config.data.res
    return probe.probe(probe.candidates(path, device, amp=path.amp, channels_last="auto"),
                       probe.sampling_workload(model, batch, (3, res, res), device), model, device,
                       key=WorkKey.of("sample", config, batch), record=record, notify=notify)


def sampling_score(model: torch.nn.Module, device: torch.device, path: FastPath, config, *,
                   notify: Notify = None):
    """The score function that samples with `model` (the network `config` describes) on `path`,
    its compiles kept in the user's compile cache."""
    return fast_score(model, device, path, key=WorkKey.of("sample", config), notify=notify)


def for_training(model: torch.nn.Module, ctx, config, *, steps: int, shape: tuple[int, ...],
                 sigmas: torch.Tensor, record: Path | None,
                 cached: Callable[[FastPath], bool], notify: Notify = None) -> FastPath:
    """Training's fast path on `ctx`'s device with `steps` steps still to run (`cached(path)`
    says whether the user's compile cache holds that path's compile: rules.py), after checking that the
    batch fits. Uncompiled on a GPU, the switches left at auto are timed there; under DDP rank
    0 times them and every rank takes its choice, since all ranks must train one path."""
    tc, device = config.train, ctx.device
    path = FastPath.for_training(device, _declared(config), tc, steps, cached)
    check_training_batch(model, tc.batch_size, shape, sigmas, path.autocast(device))
    if not probe.probes(device, path, tc.probe):
        return path
    paths = probe.candidates(path, device, amp=tc.amp, channels_last=tc.channels_last)
    chosen = None
    if ctx.main:
        chosen = probe.probe(paths, probe.training_workload(model, tc.batch_size, shape, sigmas),
                             model, device, key=WorkKey.of("train", config, tc.batch_size),
                             record=record, notify=notify)
    chosen = paths[distributed.gather(ctx, paths.index(chosen) if ctx.main else None)[0]]
    if chosen.amp != path.amp:  # float32 takes more memory than bf16
        check_training_batch(model, tc.batch_size, shape, sigmas, chosen.autocast(device))
    return chosen
