"""torch.compile's artifacts kept between processes, signed so that only their writer loads them.

`torch.compiler.load_cache_artifacts` unpickles inductor and AOTAutograd cache entries and runs
generated Python: a cache file is code. A run folder received from someone else (a zip of runs/,
a shared drive) must therefore never have its cache loaded. Each file is signed with an HMAC
whose key lives in the user's own cache folder (user_key; never in a run folder or an export),
over the file's name and its bytes. A file whose signature does not check, one written by
another user or another machine, or by a pegasus that did not sign, is ignored with one line,
and the network compiles afresh (and the file is then replaced by a signed one of this user's).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import warnings
from pathlib import Path

import torch

from pegasus.atomic import atomic_write
from pegasus.errors import PegasusWarning

MAGIC = b"pegasus-compile-1\n"
KEY_FILE = "compile-cache.key"


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/pegasus, else ~/.cache/pegasus: this user's, not a run's."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pegasus"


def user_key() -> bytes:
    """This user's signing key, made on first use: 32 random bytes, readable by the user alone."""
    path = user_cache_dir() / KEY_FILE
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
                f.flush()
                os.fsync(f.fileno())
    return path.read_bytes()


def _tag(file: Path, data: bytes) -> bytes:
    return hmac.new(user_key(), file.name.encode() + b"\0" + data, hashlib.sha256).digest()


def _verified(file: Path | None) -> bytes | None:
    """The artifacts in `file` if this user signed them, else None."""
    if file is None or not file.is_file():
        return None
    raw = file.read_bytes()
    head, tag, data = raw[:len(MAGIC)], raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
    return data if head == MAGIC and hmac.compare_digest(tag, _tag(file, data)) else None


def signed(file: Path | None) -> bool:
    """Whether `file` holds a compile this user signed (what load_artifacts would load)."""
    return _verified(file) is not None


def load_artifacts(file: Path | None) -> bool:
    """Put an earlier process's compile in place before torch.compile traces, so its kernels are
    loaded instead of generated: only if this user signed `file`. Whether it was loaded."""
    data = _verified(file)
    if data is None:
        if file is not None and file.is_file():
            warnings.warn(f"ignored the compile cache {file}: it is not signed by this user (it "
                          f"came with the run folder from elsewhere, or from an older pegasus); "
                          f"the network compiles afresh", PegasusWarning, stacklevel=2)
        return False
    torch.compiler.load_cache_artifacts(data)
    return True


def save_artifacts(file: Path) -> None:
    """Everything this process compiled so far, signed, as one file for `load_artifacts`. A
    cache is an optimisation: if torch cannot serialise it (or the folder cannot be written),
    the work goes on uncached, with a warning, rather than losing a training run or a job."""
    try:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            data, _ = artifacts
            tag = _tag(file, data)
            atomic_write(file, lambda f: f.write(MAGIC + tag + data))
    except Exception as e:  # noqa: BLE001 - any failure of an optional cache
        warnings.warn(f"the compile was not cached ({file}): {type(e).__name__}: {e}",
                      PegasusWarning, stacklevel=2)
