"""Atomic file writes: a crash, a kill or a full disk never leaves a half-written file under a
real name, and never destroys the file that was there before.

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target (rename is atomic within one file system); the folder is fsynced so the rename survives
a power cut. Used for checkpoints, configs, images, exported weights and classifier files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pegasus.errors import WriteError

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import, before any
    os.umask(mask)  # writer thread exists that could create a file in between
    return mask


_UMASK = _read_umask()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call write(file object) on a temporary file beside `path`, then rename it to `path`.

    An OSError (no permission, no space, a name too long) becomes a WriteError naming the file;
    the temporary file is removed and whatever `path` held before is untouched."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so that
        # images and checkpoints in a shared run folder stay readable by whoever may read it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {e.strerror or e}") from None
    except RuntimeError as e:
        # torch's zip writer reports a failed write (a full disk, mostly) as a RuntimeError of
        # its own ("[enforce fail at inline_container.cc] ... unexpected pos"), not an OSError.
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if "PytorchStreamWriter" not in str(e) and "inline_container" not in str(e):
            raise
        raise WriteError(f"cannot write {path}: {_why_not_written(path.parent)}") from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _why_not_written(folder: Path) -> str:
    """What most likely stopped a write that reported no OS error: a full disk, or else an
    input/output error of the file system."""
    import shutil

    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return "the file system refused the write"
    if free < 64 * 2**20:
        return f"No space left on device ({free / 2**20:.1f} MiB free)"
    return "the file system refused the write (an input/output error)"


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of writes that a kill interrupted (they never became real
    files); called when a run starts, while it holds the run's lock."""
    removed = []
    if Path(folder).is_dir():
        for p in Path(folder).iterdir():
            if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def check_writable(path: Path) -> None:
    """Refuse, before any slow work, a file that cannot be written: its folder (or the nearest
    one that exists, for a path still to be created) must accept a new file. A real probe file,
    since permission bits say nothing for root or for file systems like /proc."""
    path = Path(path)
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise WriteError(f"cannot write {path}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise WriteError(f"cannot write {path}: {folder} does not accept new files "
                         f"({e.strerror or e})") from None
