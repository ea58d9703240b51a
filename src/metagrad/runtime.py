"""Process-level settings that make CPU meta-training fast.

Meta-training allocates and frees the same large activation tensors thousands of times per
second. With glibc's defaults every such buffer above a (dynamic) threshold is a fresh ``mmap``
that the kernel must fault in and zero page by page, and freed memory is handed straight back;
in a virtual machine this costs more than the arithmetic (measured here: about 2x on the
per-task Conv4 MAML loop, see BENCHMARKS.md). :func:`keep_freed_memory` asks glibc to serve
buffers up to 32 MB from its heap and to keep freed memory for reuse. It changes no result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
_done: list[bool] = []


def keep_freed_memory() -> bool:
    """Tune glibc's allocator for reuse of large buffers; returns whether it applied.

    Does nothing (and returns False) where the C library is not glibc (macOS, Windows, musl).
    """
    if _done:
        return _done[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            ok = bool(
                libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
                and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
                and libc.mallopt(M_TOP_PAD, 256 * 1024 * 1024)
            )
        except (OSError, AttributeError):
            ok = False
    _done.append(ok)
    return ok
