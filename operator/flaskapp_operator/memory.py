"""Keep the operator's resident memory flat on glibc: fewer malloc arenas, and free pages handed back.

glibc gives each thread that allocates its own malloc arena (up to 8 per core, mallopt(3) M_ARENA_MAX); the
reconcile threads' renders then leave memory spread over many half-empty arenas, and freed memory stays
resident until trimmed (malloc_trim(3)). Elsewhere (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Optional

M_ARENA_MAX = -8  # from glibc's <malloc.h>


def _glibc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def limit_arenas(arenas: int = 2) -> None:
    """Before any thread starts."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Return free heap pages to the system (after a burst of passes)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
