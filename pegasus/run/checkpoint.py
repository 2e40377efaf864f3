"""Checkpoints: versioned dicts of tensors and plain values, written atomically (atomic.py).

`checkpoints/` holds `checkpoint-<step>.pt` files and a `latest` file naming the newest; older
ones beyond `keep` are removed. This module alone knows how checkpoint files are named. Loading
uses torch.load(weights_only=True), which refuses to run pickled code; a file that holds such
code is reported as what it is, and never with a hint to switch that protection off.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from pegasus.atomic import atomic_write
from pegasus.errors import CheckpointError, FieldError, WriteError, first_line

FORMAT = "pegasus-checkpoint"
VERSION = 1
LATEST = "latest"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
_MAX_POINTER = 256  # bytes: a real `latest` holds one short file name


def checkpoint_name(step: int) -> str:
    return f"checkpoint-{step:08d}.pt"


def step_of(path: Path) -> int | None:
    """The training step in a checkpoint's file name, or None for any other name."""
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def save_checkpoint(folder: Path, state: dict[str, Any], *, keep: int) -> Path:
    """Write `state` as checkpoint-<step>.pt, point `latest` at it, keep the newest `keep`.

    The oldest go before the write, down to keep - 1 (never below one good checkpoint), so
    that a run needs room for max(keep, 2) checkpoints at once, not keep + 1: lowering
    train.keep on a full disk then frees room for the next write."""
    folder = Path(folder)
    keep = max(keep, 1)
    payload = {"format": FORMAT, "version": VERSION, **state}
    path = folder / checkpoint_name(int(state["step"]))
    _rotate(folder, max(keep - 1, 1))
    try:
        atomic_write(path, lambda f: torch.save(payload, f))
    except WriteError as e:
        kept = ", ".join(p.name for p in list_checkpoints(folder)) or "none yet"
        size = _tensor_bytes(payload)
        each = f" of about {size / 2**20:.1f} MiB" if size else ""
        lower = ", or lower train.keep" if keep > 2 else ""
        raise CheckpointError(f"{e}; the checkpoints already there are intact ({kept}); a run "
                              f"with train.keep = {keep} needs room for {max(keep, 2)} "
                              f"checkpoints{each}; free some space{lower}") from None
    atomic_write(folder / LATEST, lambda f: f.write(path.name.encode() + b"\n"))
    _rotate(folder, keep)
    return path


def _rotate(folder: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints."""
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)


def _tensor_bytes(state) -> int:
    """The bytes of every tensor in a checkpoint's (nested) dict: about the file's size."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(_tensor_bytes(v) for v in state.values())
    if isinstance(state, list | tuple):
        return sum(_tensor_bytes(v) for v in state)
    return 0


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in `folder`, oldest first."""
    if not Path(folder).is_dir():
        return []
    found = [(step_of(p), p) for p in Path(folder).iterdir() if step_of(p) is not None]
    return [p for _, p in sorted(found)]


def read_latest_pointer(folder: Path) -> tuple[Path | None, str | None]:
    """The checkpoint `latest` names, and a warning when it names anything but a checkpoint
    file inside `folder` (a path, another file, garbage): such a pointer is never followed."""
    pointer = Path(folder) / LATEST
    if not pointer.is_file():
        return None, None
    try:
        raw = pointer.read_bytes()[:_MAX_POINTER + 1]
        name = raw.decode("utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None, f"{pointer} is unreadable; using the newest checkpoint instead"
    if len(raw) > _MAX_POINTER or step_of(Path(name)) is None or Path(name).name != name:
        shown = name if len(name) <= 60 else name[:57] + "..."
        return None, (f"{pointer} names {shown!r}, which is not a checkpoint of this run; "
                      f"using the newest checkpoint instead")
    target = Path(folder) / name
    return (target, None) if target.is_file() else (None, None)


def latest_checkpoint(folder: Path, warn=None) -> Path | None:
    """The checkpoint `latest` names if it is a real one in `folder` and none is newer, else the
    newest there: a checkpoint file is whole once it has its name (atomic writes), so a newer
    one than the pointer names means the pointer's own write failed (a full disk).
    `warn(message)` hears about a pointer that was ignored."""
    target, warning = read_latest_pointer(folder)
    if warning and warn is not None:
        warn(warning)
    found = list_checkpoints(folder)
    if target is not None and found and found[-1].name > target.name:
        if warn is not None:
            warn(f"{folder / 'latest'} names {target.name}, but {found[-1].name} is newer (the "
                 f"pointer's update failed?); using {found[-1].name}")
        return found[-1]
    if target is not None:
        return target
    return found[-1] if found else None


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"RIFF", "a WebP image"), (b"PK\x03\x04", "a torch checkpoint (a zip archive)"))


def file_kind(path: Path) -> str | None:
    """What a file is, by its first bytes: an image, a torch checkpoint, safetensors weights;
    None when it is none of these."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    # safetensors: an 8-byte little-endian header length, then the JSON header itself.
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "safetensors weights"
    return None


def _reader_words(error: Exception) -> str:
    """What torch's zip reader found wrong, without its internals (the miniz advice, errno)."""
    found = re.search(r"failed reading (zip archive|file \S+?): ([^.]+)", str(error))
    if found:
        where = "its archive" if found[1] == "zip archive" else found[1].removeprefix("file ")
        return f"{where}: {found[2].strip()}"
    if isinstance(error, OSError):
        return "it ends early, or cannot be read"
    return first_line(error).split(". This is an internal")[0]


def read_torch_file(path: Path, what: str, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> Any:
    """What a torch.save'd file holds, by torch.load(weights_only=True), or one line naming the
    file as not `what` (a checkpoint, a reference checkpoint, a latent) in pegasus's words:
    torch's own would advise switching weights_only off, or quote its zip reader."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path} does not exist or is not a file")
    kind = file_kind(path)
    if kind is not None and "checkpoint" not in kind:
        raise CheckpointError(f"{path} is {kind}, not {what}")
    if kind is None:  # torch.save has written zip archives since torch 1.6
        found = "an empty file" if path.stat().st_size == 0 else "no torch zip archive"
        raise CheckpointError(f"{path} is not {what}: it is {found}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # a class or function to call: code
            raise CheckpointError(
                f"{path} holds objects pegasus will not load (they could run code); it is not "
                f"{what}, or it was tampered with") from None
        # torch's first line here is advice to load with weights_only=False, which pegasus never
        # does; the unpickler's own words (an unknown opcode, say) come after this marker.
        _, marked, detail = str(e).partition("WeightsUnpickler error:")
        detail = next((line.strip() for line in detail.splitlines() if line.strip()), "")
        raise CheckpointError(f"{path} is truncated, corrupt or not {what} "
                              f"({detail if marked and detail else 'its pickle is unreadable'})"
                              ) from None
    except Exception as e:  # noqa: BLE001 - torch raises several types for damaged files
        raise CheckpointError(f"{path} is truncated or corrupt ({_reader_words(e)})") from None


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu", *,
                    mmap: bool = False) -> dict[str, Any]:
    """A checkpoint's dict; `mmap` maps the tensors instead of reading them (cheap when only the
    config is wanted)."""
    path = Path(path)
    if path.is_file() and file_kind(path) == "safetensors weights":
        raise FieldError("checkpoint", f"{path} is exported safetensors weights, not a "
                                       f"checkpoint; give it as the weights instead")
    state = read_torch_file(path, "a pegasus checkpoint", map_location, mmap=mmap)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pegasus checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {state.get('version')}; this pegasus reads "
            f"version {VERSION}"
        )
    return state


