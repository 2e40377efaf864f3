"""Checkpoints: versioned dicts of tensors and plain values, written atomically.

Writing goes to a temporary file in the same folder, is flushed to disk, then renamed over the
target, so a crash or Ctrl-C mid-write never leaves a half-written checkpoint under a real name.
A `latest` file names the newest checkpoint; older ones beyond `keep` are removed. Loading uses
torch.load(weights_only=True), which refuses to run pickled code.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from pegasus.errors import UserError

FORMAT = "pegasus-checkpoint"
VERSION = 1
LATEST = "latest"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt or of an unknown format."""


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; done once, at import, before any
    os.umask(mask)  # writer thread exists that could create a file in between
    return mask


_UMASK = _read_umask()


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.pt"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call write(file object) on a temporary file beside `path`, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would, so that
        # images and checkpoints in a shared run folder stay readable by whoever may read it.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def save_checkpoint(folder: Path, state: dict[str, Any], *, keep: int) -> Path:
    """Write `state` as checkpoint-<step>.pt, point `latest` at it, keep the newest `keep`."""
    folder = Path(folder)
    payload = {"format": FORMAT, "version": VERSION, **state}
    path = folder / checkpoint_name(int(state["step"]))
    atomic_write(path, lambda f: torch.save(payload, f))
    atomic_write(folder / LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    for old in list_checkpoints(folder)[:-max(keep, 1)]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first."""
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: Path) -> Path | None:
    folder = Path(folder)
    pointer = folder / LATEST
    if pointer.is_file():
        target = folder / pointer.read_text().strip()
        if target.is_file():
            return target
    found = list_checkpoints(folder)
    return found[-1] if found else None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several types for damaged files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt ({reason}); pass an earlier one with "
            f"--checkpoint, or delete it"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pegasus checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('version')}; this pegasus reads "
            f"version {VERSION}"
        )
    return state
