"""Batches through a model on several CPU streams at once.

On a CPU, one batch split over all cores (torch's intra-op threads) waits at
every layer for the slowest core: when another process holds one of the
cores, every layer waits for it. Several batches in flight at once, each on
fewer threads, keep the free cores busy instead. Measured on 2 cores
(efficientnet_lite0, the clustering default, ``tests/bench/bench.py``): two
streams of one thread run faster than one batch on two threads idle, and much
faster while another process holds a core.

``stream_plan`` chooses the streams from torch's thread count (the cores the
engine may use, ``runtime.configure_threads``): up to ``MOST_STREAMS``
streams, each with ``threads // streams`` threads; one stream on a GPU.
URBANFORM_STREAMS=N sets the number of streams on CPU (1: the whole batch on
all the threads, as before streams).
``map_batches`` runs a function over (key, batch) items on those streams and
yields (key, result) in the items' order.
"""
from __future__ import annotations

import contextlib
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

MOST_STREAMS = 4    # beyond this, more threads per stream rather than more batches in memory at once


def stream_plan(device, threads: "int | None" = None) -> tuple[int, int]:
    """(streams, threads per stream) for a model on ``device`` with ``threads`` intra-op threads in all
    (default: torch's current count). One stream of all the threads on a GPU or with one thread."""
    import torch

    threads = int(threads or torch.get_num_threads())
    if getattr(device, "type", device) != "cpu" or threads < 2:
        return 1, threads
    given = os.environ.get("URBANFORM_STREAMS", "").strip()
    if given.isdigit() and int(given) > 0:          # an override (the bench compares one stream with several)
        streams = min(int(given), threads)
        return streams, threads // streams
    per = -(-threads // MOST_STREAMS)               # ceil: 2 cores -> 2 x 1, 6 -> 3 x 2, 16 -> 4 x 4
    return threads // per, per


def stream_batch(batch: int, device) -> int:
    """The items each stream's batch holds so that the streams together hold ``batch`` (the caller's memory
    budget): several batches in flight at once then peak no higher than one batch did."""
    streams, _ = stream_plan(device)
    return max(1, -(-int(batch) // streams))


@contextlib.contextmanager
def intra_op_threads(n: int):
    """Torch's intra-op thread count set to ``n`` for the block, then put back."""
    import torch

    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def map_batches(fn: Callable, items: Iterable[tuple], device, threads: "int | None" = None,
                ahead: "int | None" = None) -> Iterator[tuple]:
    """Yield (key, fn(batch)) for the (key, batch) ``items``, in their order, running ``fn`` on
    ``stream_plan(device, threads)`` streams. The items are drawn in the caller's thread (reading tiles
    there overlaps the model's work), at most ``ahead`` (default: one more than there are streams) ahead
    of the results: more keeps the streams busy while the caller works longer on a result. An error in
    ``fn`` is raised here; closing the iterator early (a cancelled run) waits for the batches running and
    drops the rest."""
    streams, per = stream_plan(device, threads)
    ahead = max(streams + 1, int(ahead or 0))
    if streams == 1:
        for key, batch in items:
            yield key, fn(batch)
        return
    with intra_op_threads(per), ThreadPoolExecutor(streams, thread_name_prefix="cnn-stream") as pool:
        pending: deque = deque()
        try:
            for key, batch in items:
                pending.append((key, pool.submit(fn, batch)))
                while len(pending) > ahead - 1:
                    key0, done = pending.popleft()
                    yield key0, done.result()
            while pending:
                key0, done = pending.popleft()
                yield key0, done.result()
        finally:
            for _, f in pending:
                f.cancel()
