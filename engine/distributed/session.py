"""``--dask``: the address parsed, the client (and the local cluster it starts), tasks run with their progress.

``with dask_session("local:2", progress) as session`` starts two worker
processes on this machine (``tcp://host:port``: connects to a running
scheduler), prints the dashboard link on stderr and reports it as an ``open``
progress event, and closes what it started when the block ends (a cancel
included). Sessions are re-entrant within a thread, and inside
:func:`keep_sessions` they stay open until that block ends, so a tool that
runs another (cluster, then its statistics) starts its cluster once.

:meth:`DaskSession.run` submits one task per item, reports each finished one
(the caller turns that into the engine's own progress stages) and returns the
results in the items' order; when a task fails or the run is cancelled, the
tasks not yet run are cancelled. A worker that dies mid-task is Dask's to
handle: its tasks run again on another worker (the engine's tasks are pure and
idempotent, see ``engine.distributed.worker``).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from ..contract import problems as P
from ..contract.tools import DASK, DASK_PATTERN
from ..errors import BadInput

CONNECT_TIMEOUT_S = 10.0          # a scheduler that does not answer in this time is not there
WORKERS_TIMEOUT_S = 60.0          # a scheduler without a worker after this time cannot run anything
QUIET = logging.CRITICAL          # distributed's own log lines (worker restarts, closing streams) say nothing to users


@dataclass(frozen=True)
class DaskAddress:
    """``--dask`` parsed: ``local:N`` (``workers`` = N) or a scheduler's ``tcp://host:port`` (``scheduler``)."""

    text: str
    workers: "int | None" = None
    scheduler: "str | None" = None

    @classmethod
    def parse(cls, text: str) -> "DaskAddress":
        m = re.fullmatch(DASK_PATTERN, str(text or "").strip())
        if not m:
            raise BadInput(f"--dask {text!r} is not {DASK.form}.", param="dask", code=P.BAD_FORMAT)
        if m.group(1):
            return cls(m.group(0), workers=int(m.group(1)))
        return cls(m.group(0), scheduler=f"tcp://{m.group(2)}:{m.group(3)}")

    @property
    def local(self) -> bool:
        return self.workers is not None

    def __str__(self) -> str:
        return self.text


class DaskSession:
    """A Dask client and, for ``local:N``, the cluster it started (closed with the session)."""

    def __init__(self, address: DaskAddress, client, cluster=None):
        self.address = address
        self.client = client
        self.cluster = cluster
        self.runs: list[dict] = []        # what ran on the cluster (stage, partitions, kept from a resumed run)

    @classmethod
    def start(cls, address: DaskAddress) -> "DaskSession":
        from distributed import Client

        _quiet_logs()
        if address.local:
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=address.workers, threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=QUIET)
            try:
                client = Client(cluster)
                client.wait_for_workers(address.workers, timeout=WORKERS_TIMEOUT_S)
            except BaseException:
                cluster.close()
                raise
            return cls(address, client, cluster)
        try:
            client = Client(address.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise BadInput(f"--dask {address}: no Dask scheduler answers there ({type(exc).__name__}); start one "
                           "('dask scheduler', then 'dask worker ADDRESS' on each machine) or check the address.",
                           param="dask", code=P.NOT_FOUND) from None
        try:
            client.wait_for_workers(1, timeout=WORKERS_TIMEOUT_S)
        except (OSError, TimeoutError):
            client.close()
            raise BadInput(f"--dask {address}: the scheduler has no worker to run on; start workers with 'dask "
                           f"worker {address.scheduler}'.", param="dask", code=P.NOT_FOUND) from None
        return cls(address, client)

    # -- what it is ------------------------------------------------------------------------------------------
    @property
    def n_workers(self) -> int:
        return len(self.client.scheduler_info(n_workers=-1)["workers"])

    @property
    def dashboard(self) -> str:
        return str(self.client.dashboard_link)

    @property
    def torch_threads(self) -> "int | None":
        """Threads each worker's model runs on: this machine's cores shared out for ``local:N``; None for a
        scheduler's workers, whose models run on the threads each was started with (``dask worker
        --nthreads``; ``worker.set_torch_threads``)."""
        if self.address.local:
            return max(1, (os.cpu_count() or 1) // self.address.workers)
        return None

    def record(self) -> dict:
        """For the manifest."""
        return {"address": str(self.address), "scheduler": self.client.scheduler.address,
                "workers": self.n_workers, "dashboard": self.dashboard, "runs": list(self.runs)}

    def announce(self, progress=None) -> None:
        """The dashboard link on stderr and as an ``open`` progress event."""
        text = f"Dask {self.address}: {self.n_workers} workers, dashboard {self.dashboard}"
        print(f"dask: {text}", file=sys.stderr, flush=True)
        if progress is not None:
            progress("open", 0, 0, text)

    # -- running -----------------------------------------------------------------------------------------------
    def run(self, func: Callable, items: Sequence, *args, name: str = "task",
            on_done: "Callable | None" = None) -> list:
        """``func(item, *args)`` for every item, as Dask tasks; the results in the items' order. ``on_done(item,
        result)`` is called in the client as each task finishes (in the order they finish)."""
        from distributed import as_completed

        if not items:
            return []
        token = uuid.uuid4().hex[:12]
        futures = [self.client.submit(func, item, *args, key=f"{name}-{i:06d}-{token}", pure=False)
                   for i, item in enumerate(items)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: list = [None] * len(items)
        try:
            for future in as_completed(futures):
                i = index[future.key]
                results[i] = future.result()
                future.release()
                if on_done is not None:
                    on_done(items[i], results[i])
        except BaseException:
            self.client.cancel(futures, force=True)
            raise
        return results

    def share(self, value):
        """``value`` sent once to every worker (a fitted model): pass what this returns to :meth:`run`."""
        return self.client.scatter(value, broadcast=True, hash=False)

    def call(self, func: Callable, *args):
        """``func(*args)`` on one worker; its result."""
        return self.client.submit(func, *args, pure=False).result()

    def close(self) -> None:
        _quiet_logs()
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _quiet_logs() -> None:
    for name in ("distributed", "tornado", "bokeh"):
        logging.getLogger(name).setLevel(QUIET)


_state = threading.local()


def _sessions() -> dict:
    if not hasattr(_state, "sessions"):
        _state.sessions, _state.keep = {}, 0
    return _state.sessions


@contextmanager
def keep_sessions() -> Iterator[None]:
    """Sessions opened inside the block stay open until it ends (a tool that runs another shares its cluster)."""
    sessions = _sessions()
    _state.keep += 1
    try:
        yield
    finally:
        _state.keep -= 1
        if not _state.keep:
            while sessions:
                _, session = sessions.popitem()
                session.close()


@contextmanager
def dask_session(text: "str | None", progress=None) -> Iterator["DaskSession | None"]:
    """The session of ``--dask text`` (None without one), started here or reused from an enclosing block."""
    if not text:
        yield None
        return
    address = DaskAddress.parse(text)
    sessions = _sessions()
    session = sessions.get(address.text)
    opened = session is None
    if opened:
        session = DaskSession.start(address)
        sessions[address.text] = session
        try:
            session.announce(progress)
        except BaseException:
            sessions.pop(address.text).close()
            raise
    try:
        yield session
    finally:
        if opened and not _state.keep and sessions.pop(address.text, None) is not None:
            session.close()
