"""How training stops early: on Ctrl-C or SIGTERM (a flag the loop checks, so it saves and stops
cleanly), and when the loss or the weights stop being finite (the good checkpoints are kept)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
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
    """Turns SIGINT/SIGTERM into a flag the loop checks, so it can save and stop cleanly.

    With `grace` (seconds; under a process group), a watchdog ends the process that far after a
    signal if it has not stopped by then. A rank blocked in a collective (waiting for a rank
    that is gone) runs no Python until the collective returns, so the flag alone would leave it
    running past its launcher, as the audit's orphaned workers did for 28 minutes. The watchdog
    hears the signal through Python's wakeup fd, which the C-level handler writes to at once."""

    def __init__(self, grace: float | None = None) -> None:
        self.signum: int | None = None
        self.grace = grace
        self._saved: dict[int, object] = {}
        self._done = threading.Event()
        self._wakeup: tuple[int, int, int] | None = None  # read end, write end, previous fd

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
            if self.grace is not None:
                self._watch()
        return self

    def _handle(self, signum, frame) -> None:
        self.signum = signum

    def _watch(self) -> None:
        read, write = os.pipe()
        os.set_blocking(write, False)
        self._wakeup = (read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
        threading.Thread(target=self._watchdog, args=(read,), daemon=True).start()

    def _watchdog(self, read: int) -> None:
        try:
            heard = os.read(read, 1)  # a signal's number, or 0 from __exit__
        finally:
            os.close(read)
        if heard == b"\0" or self._done.wait(self.grace):
            return
        rank = os.environ.get("RANK", "0")
        sys.stderr.write(f"error: rank {rank}: still running {self.grace:g} s after signal "
                         f"{heard[0]} (blocked waiting for the other ranks); ending it now\n")
        sys.stderr.flush()
        os._exit(128 + heard[0])

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._wakeup is not None:
            _, write, previous = self._wakeup
            signal.set_wakeup_fd(previous)
            with contextlib.suppress(OSError):  # it has ended already if it heard a signal
                os.write(write, b"\0")  # the watchdog ends (and closes its end)
            os.close(write)
            self._wakeup = None
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)
