"""Process-level tuning the engine applies to itself before heavy work.

glibc's default malloc hands large buffers (such as a batch of image tensors)
back to the kernel after every batch and then page-faults them in again; on
these CPUs that costs up to half the time of a big batch. ``tune_malloc``
keeps freed memory in the heap instead: the same effect as starting Python
with MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_ (huge) and MALLOC_TOP_PAD_=1 GiB,
without the user having to know. It also keeps every thread on that one heap
(MALLOC_ARENA_MAX=1): the model's batches run in threads of their own on CPU
(``streams``), and memory they freed in a heap of their own was fresh, page
faulting memory to the main thread's k-means afterwards (its stage took 0.2 s
longer of 1.2 s on Zanzibar at 64 px tiles). Set URBANFORM_MALLOC=default to switch it off
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
M_ARENA_MAX = -8

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
                and bool(mallopt(M_TOP_PAD, 1 << 30)) and bool(mallopt(M_ARENA_MAX, 1))
        except (OSError, AttributeError):
            ok = False
    _state["tuned"] = ok
    return ok


def usable_cores() -> int:
    """The cores this process can really use: the CPUs it may run on (its affinity, which ``taskset``, Docker's
    ``--cpuset-cpus`` and batch systems set), capped by a cgroup CPU quota (Docker's ``--cpus``, Kubernetes'
    limits), at least 1. ``os.cpu_count()`` counts the machine's CPUs whatever the process is allowed."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        n = min(n, max(1, int(quota + 0.5)))
    return max(1, n)


def cgroup_cpu_quota(root: str = "/sys/fs/cgroup") -> "float | None":
    """CPUs' worth of time the cgroup quota allows (cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us`` /
    ``cpu.cfs_period_us``); None when there is no quota or no cgroup file to read."""
    try:
        with open(os.path.join(root, "cpu.max"), encoding="ascii") as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(root, "cpu", "cpu.cfs_quota_us"), encoding="ascii") as fh:
            quota = int(fh.read())
        with open(os.path.join(root, "cpu", "cpu.cfs_period_us"), encoding="ascii") as fh:
            period = int(fh.read())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


_threads = {"set": None}


def set_threads(n: int) -> int:
    """Torch's intra-op threads set to ``n`` explicitly (a Dask worker's ``--nthreads``, ``--threads``), so that
    :func:`configure_threads` later keeps it instead of setting the usable cores. Returns ``n``."""
    import torch

    n = int(n)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    _threads["set"] = n
    return n


def configure_threads() -> int:
    """Torch's intra-op threads from :func:`usable_cores` (URBANFORM_THREADS, when set, wins; so does a count set
    explicitly by :func:`set_threads`, before or after); idempotent. Returns the count set."""
    if _threads["set"] is not None:
        return _threads["set"]
    given = os.environ.get("URBANFORM_THREADS", "").strip()
    return set_threads(int(given) if given.isdigit() and int(given) > 0 else usable_cores())
