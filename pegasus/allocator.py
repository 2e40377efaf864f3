"""The C library's allocator, told to keep the large blocks a sampling chain frees for reuse.

By default glibc serves every allocation above a threshold (128 KiB, rising to at most 32 MiB)
with its own mmap and gives it back to the kernel when freed, and trims the heap's free top the
same way. A chain on a CPU allocates and frees the same large activations at every evaluation
(one 32-channel activation of 1,020 16 px images is 33 MB), so each evaluation paid the kernel
for fresh zeroed pages: 60 unguided blend strips of the demo run took 114 s of wall time with 92 s
of system time, and 48 s with 4 s with these limits raised (bench/README.md, "The allocator").
Raising them keeps at most what the work itself once held; torch's own CUDA allocator is apart.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LIMIT = 1 << 30  # bytes: blocks below it are reused, and a free heap top below it is kept
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds, once per process; whether it was done (only
    glibc has mallopt; elsewhere nothing changes)."""
    global _done
    if _done:
        return True
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, LIMIT) and libc.mallopt(M_TRIM_THRESHOLD, LIMIT))
    except (OSError, AttributeError):
        return False
    return _done
