"""The service's jobs in SQLite (``DATA_DIR/jobs.sqlite``): a restart keeps them, finished ones with their
results; what a job was doing when the server stopped is decided by ``jobs.JobManager.recover``.

One row per job; ``values`` (the tool's checked values, server paths included) and ``result`` (a JSON tool's
answer) are JSON text. Every call opens its own connection, so any thread may use the store.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

ACCEPTED, RUNNING, SUCCESSFUL, FAILED, DISMISSED = "accepted", "running", "successful", "failed", "dismissed"
FINISHED = (SUCCESSFUL, FAILED, DISMISSED)


@dataclass
class Job:
    id: str
    owner: str
    process: str
    values: dict
    argv: list
    status: str = ACCEPTED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    updated: float = field(default_factory=time.time)
    progress: int = 0
    stage: str = ""
    done: int = 0
    total: int = 0
    message: str = "queued"
    error: dict | None = None
    result: object = None
    pid: int | None = None
    sync: bool = False

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


_JSON = ("values", "argv", "error", "result")
_COLUMNS = [f.name for f in fields(Job)]


class JobStore:
    def __init__(self, path: "str | Path"):
        self.path = str(path)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, process TEXT, "
                       "[values] TEXT, argv TEXT, status TEXT, created REAL, started REAL, finished REAL, "
                       "updated REAL, progress INTEGER, stage TEXT, done INTEGER, total INTEGER, message TEXT, "
                       "error TEXT, result TEXT, pid INTEGER, sync INTEGER)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        return db

    def _row(self, row) -> Job:
        data = dict(row)
        for name in _JSON:
            data[name] = json.loads(data[name]) if data[name] is not None else None
        data["sync"] = bool(data["sync"])
        return Job(**data)

    def add(self, job: Job) -> None:
        data = asdict(job)
        for name in _JSON:
            data[name] = json.dumps(data[name])
        names = ", ".join(f"[{c}]" for c in _COLUMNS)
        with self._lock, self._connect() as db:
            db.execute(f"INSERT INTO jobs ({names}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                       [data[c] for c in _COLUMNS])

    def get(self, job_id: str, owner: "str | None" = None) -> "Job | None":
        query, args = "SELECT * FROM jobs WHERE id = ?", [job_id]
        if owner is not None:
            query, args = query + " AND owner = ?", args + [owner]
        with self._connect() as db:
            row = db.execute(query, args).fetchone()
        return self._row(row) if row else None

    def update(self, job_id: str, **changes) -> None:
        changes.setdefault("updated", time.time())
        for name in _JSON:
            if name in changes:
                changes[name] = json.dumps(changes[name])
        assignments = ", ".join(f"[{name}] = ?" for name in changes)
        with self._lock, self._connect() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*changes.values(), job_id])

    def list(self, owner: "str | None" = None, status: "list[str] | None" = None, process: "list[str] | None" = None,
             limit: int = 1000) -> list[Job]:
        query, args = "SELECT * FROM jobs WHERE 1 = 1", []
        if owner is not None:
            query, args = query + " AND owner = ?", args + [owner]
        if status:
            query += f" AND status IN ({', '.join('?' * len(status))})"
            args += status
        if process:
            query += f" AND process IN ({', '.join('?' * len(process))})"
            args += process
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY created LIMIT ?", [*args, limit]).fetchall()
        return [self._row(r) for r in rows]

    def delete(self, job_id: str) -> None:
        with self._lock, self._connect() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", [job_id])
