"""How training stops early: on Ctrl-C or SIGTERM (a flag the loop checks, so it saves and stops
cleanly), and when the loss or the weights stop being finite (the good checkpoints are kept)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from pegasus.errors import UserError


class DivergedError(UserError):
    """The loss or the weights stopped being finite; the good checkpoints are kept."""


def diverged(step: int, what: str, last_good: Path | None, lr: float) -> DivergedError:
    kept = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
    return DivergedError(f"training diverged at step {step}: {what} are no longer finite (nan or "
                         f"inf); {kept}; lower train.lr (now {lr:g}) and train again")


def all_finite(tensors) -> bool:
    """Whether every tensor is finite: one host read for all of them."""
    flags = [t.isfinite().all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


class StopOnSignal:
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can save and stop cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, object] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
