"""The service's jobs: a queue in order of arrival, ``--jobs N`` workers, each running one engine subprocess at
a time through the runner every face uses (``engine.contract.runner``), the rest waiting.

- Progress: the engine's JSON events become the job's percent (``contract.progress.progress_for``), stage and
  message, written to the job table at most a few times a second.
- Dismiss: a queued job is dropped; a running one gets SIGTERM (the engine removes its temporary files, the
  runner removes what a killed one left), then the job's folder goes.
- Restart: jobs that were running when the server stopped are failed with a message saying so (an engine process
  still alive from then is ended first), queued ones run again.
- Expiry: results older than ``keep_results`` are deleted; the quota counts the jobs' folders.
"""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

from ..contract import progress as P
from ..contract.params import OUT_FOLDER, output_files
from ..contract.runner import run_command
from ..contract.tools import TOOLS
from .config import ServiceConfig
from .store import ACCEPTED, DISMISSED, FAILED, RUNNING, SUCCESSFUL, Job, JobStore

ENGINE_PARENT = Path(__file__).resolve().parents[2]        # the folder holding the engine package
STOPPED = "The server stopped while this job ran; its unfinished outputs were removed. Submit it again."
UPDATE_EVERY = 0.25                                          # seconds between progress writes of one job


def new_id() -> str:
    return str(uuid.uuid4())


class JobManager:
    def __init__(self, config: ServiceConfig, store: JobStore):
        self.config = config
        self.store = store
        self.queue: queue.Queue[str] = queue.Queue()
        self._lock = threading.Lock()
        self._cancel: dict[str, str] = {}            # job id -> "dismissed" | "stopped"
        self._done: dict[str, threading.Event] = {}  # job id -> set when its run is over
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._used: tuple[float, int] | None = None  # (when, bytes) of the last quota count

    # -- life
    def start(self) -> None:
        self.config.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        for slot in range(self.config.jobs):
            self._spawn(self._work, slot, name=f"job-worker-{slot}")
        self._spawn(self._janitor, name="job-janitor")

    def _spawn(self, target, *args, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        """End every running engine (its job fails with STOPPED) and the workers."""
        self._stopping.set()
        with self._lock:
            for job in self.store.list(status=[RUNNING]):
                self._cancel[job.id] = "stopped"
        for thread in self._threads:
            thread.join(timeout=self.config.grace + 5)

    def recover(self) -> None:
        """After a restart: fail what was running (ending a leftover engine), queue again what was waiting."""
        for job in self.store.list(status=[RUNNING]):
            if job.pid:
                _end_leftover(job.pid, self.job_dir(job.id), self.config.grace)
            self._clear_outputs(job)
            self.store.update(job.id, status=FAILED, finished=time.time(), message=STOPPED, pid=None,
                              error={"detail": STOPPED, "param": None, "code": None, "exit_code": None})
        for job in self.store.list(status=[ACCEPTED]):
            if job.sync:                               # its client waited on a connection that is gone
                self.store.update(job.id, status=FAILED, finished=time.time(), message=STOPPED,
                                  error={"detail": STOPPED, "param": None, "code": None, "exit_code": None})
            else:
                self.queue.put(job.id)

    # -- folders
    def job_dir(self, job_id: str) -> Path:
        return self.config.jobs_dir / job_id

    def _clear_outputs(self, job: Job) -> None:
        shutil.rmtree(self.job_dir(job.id) / "out", ignore_errors=True)

    def used_bytes(self, fresh: bool = False) -> int:
        """Bytes under the jobs' folders (counted at most every 5 s unless ``fresh``)."""
        now = time.monotonic()
        if fresh or self._used is None or now - self._used[0] > 5:
            total = 0
            for folder, _, names in os.walk(self.config.jobs_dir):
                for name in names:
                    try:
                        total += os.lstat(os.path.join(folder, name)).st_size
                    except OSError:
                        pass
            self._used = (now, total)
        return self._used[1]

    # -- submitting and waiting
    def submit(self, job: Job) -> None:
        self._done[job.id] = threading.Event()
        self.store.add(job)
        self._used = None
        if job.sync:                                   # a quick tool the client waits for: no queue
            self._spawn(self._run, job.id, None, name=f"job-sync-{job.id[:8]}")
        else:
            self.queue.put(job.id)

    def wait(self, job_id: str, timeout: float | None = None) -> "Job | None":
        event = self._done.get(job_id)
        if event is not None:
            event.wait(timeout)
        return self.store.get(job_id)

    def dismiss(self, job_id: str) -> "Job | None":
        """Stop the job (ending its engine and waiting for it) and remove its files; the job row says dismissed."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None:
                return None
            if job.status == RUNNING:
                self._cancel[job_id] = "dismissed"
            elif job.status == ACCEPTED:
                self.store.update(job_id, status=DISMISSED, finished=time.time(), message="dismissed")
        if job.status == RUNNING:
            self.wait(job_id, self.config.grace + 10)
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self._files_removed()
        self.store.update(job_id, status=DISMISSED, finished=job.finished or time.time(), pid=None,
                          message="dismissed: the job was stopped and its files removed")
        return self.store.get(job_id)

    def forget(self, job_id: str) -> None:
        """Remove a finished job's row and files (a synchronous execution, once answered)."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        self._files_removed()
        self.store.delete(job_id)
        self._done.pop(job_id, None)

    def _files_removed(self) -> None:
        """After a job's files went: the disk use is counted again, and the study VRTs of its uploaded scenes
        (written under the feature cache, ``engine.raster.study``) go too."""
        from ..io.cache import default_cache_dir
        from ..raster.study import prune_studies

        self._used = None
        prune_studies(default_cache_dir())

    # -- running
    def _work(self, slot: int) -> None:
        while not self._stopping.is_set():
            try:
                job_id = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._run(job_id, slot)
            except Exception as exc:  # noqa: BLE001 - one job's failure never stops a worker
                self.store.update(job_id, status=FAILED, finished=time.time(), message=str(exc),
                                  error={"detail": "the server could not run this job", "param": None,
                                         "code": None, "exit_code": None})
                self._finish(job_id)

    def _env(self, slot: "int | None") -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ENGINE_PARENT)
        env.pop("PYTHONHOME", None)
        env["PYTHONUNBUFFERED"] = "1"
        if self.config.gpus and slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.config.gpus)
        return env

    def _run(self, job_id: str, slot: "int | None") -> None:
        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status != ACCEPTED:
                self._finish(job_id)
                return
            self.store.update(job_id, status=RUNNING, started=time.time(), message="started")
        tool = TOOLS[job.process]
        percent_of = P.progress_for(job.argv)
        state = {"percent": 0.0, "written": 0.0, "stage": None}

        def on_event(event: dict) -> None:
            percent = percent_of(event)
            if percent is not None:
                state["percent"] = max(state["percent"], min(99.0, percent))
            now = time.monotonic()
            stage = event.get("stage")
            if stage is None or (now - state["written"] < UPDATE_EVERY and stage == state["stage"]):
                return
            state["written"], state["stage"] = now, stage
            self.store.update(job_id, progress=int(state["percent"]), stage=str(stage),
                              done=int(event.get("done") or 0), total=int(event.get("total") or 0),
                              message=self.scrub(P.status_text(event)))

        result = run_command([self.config.python, "-m", "engine", *job.argv], cwd=str(ENGINE_PARENT),
                             env=self._env(slot), on_event=on_event, is_cancelled=lambda: job_id in self._cancel,
                             grace=self.config.grace, outputs=list(output_files(tool, job.values).values()),
                             on_start=lambda pid: self.store.update(job_id, pid=pid), start_new_session=True)
        reason = self._cancel.pop(job_id, None)
        now = time.time()
        if result.ok:
            answer = result.last_event if tool.output_param is None and not _writes_folder(tool) else None
            self.store.update(job_id, status=SUCCESSFUL, finished=now, progress=100, pid=None, result=answer,
                              message="done")
        elif reason == "dismissed":
            self.store.update(job_id, status=DISMISSED, finished=now, pid=None, message="dismissed")
        else:
            detail = STOPPED if reason == "stopped" else self.scrub(result.message)
            if reason == "stopped":
                self._clear_outputs(job)
            self.store.update(job_id, status=FAILED, finished=now, pid=None, message=detail,
                              error={"detail": detail, "param": result.param, "code": result.code,
                                     "exit_code": result.returncode})
        self._used = None
        self._finish(job_id)

    def _finish(self, job_id: str) -> None:
        event = self._done.pop(job_id, None)           # a later wait() finds the job finished in the table
        if event is not None:
            event.set()

    # -- results and expiry
    def results(self, job: Job) -> dict[str, Path]:
        """key -> file of a successful job (the keys of ``output_files``; an export's files by name)."""
        tool = TOOLS[job.process]
        if _writes_folder(tool):
            folder = Path(job.values["out"])
            return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()} if folder.is_dir() else {}
        return {key: path for key, path in output_files(tool, job.values).items()
                if Path(path).is_file() and key != "checkpoint"}

    def _janitor(self) -> None:
        while not self._stopping.wait(self.config.janitor_every):
            self.expire()

    def expire(self) -> int:
        """Delete the jobs that finished more than ``keep_results`` ago; how many went."""
        keep = self.config.keep_results
        if not keep:
            return 0
        expired = [job for job in self.store.list(status=[SUCCESSFUL, FAILED, DISMISSED], limit=1 << 30)
                   if job.finished and job.finished < time.time() - keep]
        for job in expired:
            shutil.rmtree(self.job_dir(job.id), ignore_errors=True)
        if expired:                 # every file first: once a job answers 404, nothing of it is left
            self._files_removed()
        for job in expired:
            self.store.delete(job.id)
        return len(expired)

    def scrub(self, text: str) -> str:
        """``text`` with the server's own paths reduced to file names (a client never learns them)."""
        for root in sorted({str(self.config.jobs_dir), str(self.config.data_root), str(self.config.models_dir),
                            str(self.config.data_dir)}, key=len, reverse=True):
            text = re.sub(re.escape(root) + r"[^\s'\"]*", lambda m: Path(m.group(0)).name or "", text)
        return text


def _writes_folder(tool) -> bool:
    return any(p.type == OUT_FOLDER for p in tool.params)


def _end_leftover(pid: int, job_dir: Path, grace: float) -> None:
    """End an engine process left by a server that died, if ``pid`` is still that engine (its command line
    names the job's folder); SIGTERM first so that it removes its temporary files."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace")
    except OSError:
        return
    if str(job_dir) not in cmdline:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
