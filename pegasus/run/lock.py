"""One writer per run: an exclusive OS file lock on the run folder's `.lock`.

flock(2) locks belong to the open file, so the kernel drops them when the process ends, however
it ends (a SIGKILL included): a dead trainer never leaves a stale lock behind. The file holds
the holder's pid and host, read by a second writer only to say who holds the run.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from pegasus.errors import RunError


class RunLock:
    """The lock on `path` for `what` (a run, a folder of samples); `rule` says, in a refusal,
    why one process at a time."""

    def __init__(self, path: Path, what: str, rule: str = "one process trains a run at a time"
                 ) -> None:
        self.path, self.what, self.rule = Path(path), what, rule
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunError(f"cannot lock {self.what} ({self.path}): {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunError(f"{self.what} is in use by {holder}; wait for it to finish or stop it "
                           f"first ({self.rule})") from None
        try:  # who holds it, for a second writer's message; the lock holds without it
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:  # a full disk: the work's own writes will say so, naming the file
            pass
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None
