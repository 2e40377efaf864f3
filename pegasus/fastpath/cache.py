"""torch.compile's artifacts kept between processes, in the user's own cache and nowhere else.

`torch.compiler.load_cache_artifacts` unpickles inductor and AOTAutograd cache entries and runs
generated Python: a cache file is code. A run folder is data that travels (a zip of runs/, a
shared drive), so it holds no compile: the artifacts live in $XDG_CACHE_HOME/pegasus/compiled
(private to the user), one file per key of what decides the compile (keys.py: the network's
structure, the fast path, the input shape, the device and torch). The weights do not decide
it: torch.compile takes parameters as graph inputs, so one compile serves every checkpoint
of a network, and a resume or a second `pegasus sample` loads it.

Each file is also signed with an HMAC whose 32-byte key sits beside it, over the file's name
and its bytes, so that a file dropped into the cache by anything but this user's pegasus (a
cache folder shared by mistake, a copied home) is ignored with one line and compiled afresh.
The key is written whole or not at all (temp file, fsync, link into place), and a key of the
wrong length (a full disk at its first write, say) is made again, never trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
import warnings
from pathlib import Path

import torch

from pegasus.atomic import TEMP_SUFFIX, atomic_write
from pegasus.errors import PegasusWarning

MAGIC = b"pegasus-compile-1\n"
KEY_FILE = "compile-cache.key"
KEY_BYTES = 32
COMPILED = "compiled"
KEEP = 64  # compiled networks kept (each some MB): the oldest go first


def user_cache_dir() -> Path:
    """$XDG_CACHE_HOME/pegasus, else ~/.cache/pegasus: this user's, not a run's."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pegasus"


def compile_folder() -> Path:
    """Where this user's compiled networks are kept."""
    return user_cache_dir() / COMPILED


def compiled_file(key: str) -> Path:
    """The file that keeps the compile described by `key` (keys.WorkKey.on renders one)."""
    return compile_folder() / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.bin"


def _make_key(path: Path, replace: bool) -> None:
    """Write a fresh key whole to a temp file, then put it at `path`: by a link when there is
    none (the first of two processes wins, the second reads its key) or over a bad one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
    finally:
        Path(tmp).unlink(missing_ok=True)


def user_key() -> bytes:
    """This user's signing key, made on first use: KEY_BYTES random bytes, readable by the user
    alone. OSError when it cannot be written (a full disk): nothing is then loaded or saved."""
    path = user_cache_dir() / KEY_FILE
    for _ in range(2):
        if path.is_file() and len(key := path.read_bytes()) == KEY_BYTES:
            return key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _make_key(path, replace=path.exists())
    raise OSError(f"the compile cache's key {path} could not be written")


def _tag(file: Path, data: bytes) -> bytes:
    return hmac.new(user_key(), file.name.encode() + b"\0" + data, hashlib.sha256).digest()


def _verified(file: Path | None) -> bytes | None:
    """The artifacts in `file` if this user signed them, else None."""
    if file is None or not file.is_file():
        return None
    raw = file.read_bytes()
    head, tag, data = raw[:len(MAGIC)], raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
    try:
        return data if head == MAGIC and hmac.compare_digest(tag, _tag(file, data)) else None
    except OSError:  # no key could be made: no file can be trusted
        return None


def signed(file: Path | None) -> bool:
    """Whether `file` holds a compile this user signed (what load_artifacts would load)."""
    return _verified(file) is not None


def load_artifacts(file: Path | None) -> bool:
    """Put an earlier process's compile in place before torch.compile traces, so its kernels are
    loaded instead of generated: only if this user signed `file`. Whether it was loaded."""
    data = _verified(file)
    if data is None:
        if file is not None and file.is_file():
            warnings.warn(f"ignored the compiled network {file}: it is not signed by this user "
                          f"(or its key was lost); the network compiles afresh",
                          PegasusWarning, stacklevel=2)
        return False
    torch.compiler.load_cache_artifacts(data)
    return True


def save_artifacts(file: Path) -> None:
    """Everything this process compiled so far, signed, as one file for `load_artifacts`; the
    oldest files beyond KEEP go. A cache is an optimisation: if torch cannot serialise it (or
    the folder cannot be written), the work goes on uncached, with a warning, rather than
    losing a training run or a job."""
    try:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            data, _ = artifacts
            tag = _tag(file, data)
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            atomic_write(file, lambda f: f.write(MAGIC + tag + data))
            _prune(file.parent)
    except Exception as e:  # noqa: BLE001 - any failure of an optional cache
        warnings.warn(f"the compile was not cached ({file}): {type(e).__name__}: {e}",
                      PegasusWarning, stacklevel=2)


def _prune(folder: Path) -> None:
    files = sorted(folder.glob("*.bin"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)


def cache_summary() -> dict:
    """What the user's compile cache holds, for `pegasus device`."""
    files = sorted(compile_folder().glob("*.bin")) if compile_folder().is_dir() else []
    return {"path": str(compile_folder()), "compiled networks": len(files),
            "MiB": round(sum(f.stat().st_size for f in files) / 2**20, 1)}
