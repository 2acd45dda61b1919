"""Process-level tuning the engine applies to itself before heavy work.

glibc's default malloc hands large buffers (such as a batch of image tensors)
back to the kernel after every batch and then page-faults them in again; on
these CPUs that costs up to half the time of a big batch. ``tune_malloc``
keeps freed memory in the heap instead: the same effect as starting Python
with MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ (huge) and MALLOC_TOP_PAD_=1 GiB,
without the user having to know. Set URBANFORM_MALLOC=default to switch it off
(the benchmark does, to show the gain).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter numbers from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_MAX = -4

_state = {"tuned": None}


def tune_malloc() -> bool:
    """Tune glibc malloc for large, repeated tensor buffers; True if applied.

    Idempotent; a no-op on non-glibc systems or when URBANFORM_MALLOC=default.
    """
    if _state["tuned"] is not None:
        return _state["tuned"]
    ok = False
    if os.environ.get("URBANFORM_MALLOC", "tuned") != "default":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            ok = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1)) \
                and bool(mallopt(M_TOP_PAD, 1 << 30))
        except (OSError, AttributeError):
            ok = False
    _state["tuned"] = ok
    return ok
