"""A real service for the tests: ``python -m engine serve`` on 127.0.0.1 on a free port, in its own process.

``Server(data_dir, *options).start()`` waits until the landing page answers; ``stop()`` ends it (SIGTERM, as
systemd does; ``kill()`` is SIGKILL, a crash). ``client(token)`` is an httpx client for it.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.engine.helpers import REPO

TOKENS = [f"token-{name}-0123456789abcdef" for name in ("ada", "bob", "cy", "dee")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_tokens(path: Path, tokens=TOKENS) -> Path:
    path.write_text("# test tokens\n" + "".join(f"user{i}: {t}\n" for i, t in enumerate(tokens)))
    return path


class Server:
    def __init__(self, data_dir: Path, *options: str, port: "int | None" = None):
        self.data_dir = Path(data_dir)
        self.options = [str(o) for o in options]
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = self.data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = 60) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--host", "127.0.0.1", "--port",
                                          str(self.port), "--data-dir", str(self.data_dir), "--log-level",
                                          "warning", *self.options], cwd=REPO, stdout=log, stderr=log,
                                         env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"the server did not answer in {timeout} s: {self.log.read_text()[-2000:]}")

    def stop(self, sig=signal.SIGTERM, timeout: float = 60) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def client(self, token: "str | None" = None, timeout: float = 120) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_for(client: httpx.Client, job_id: str, status=("successful", "failed", "dismissed"),
             timeout: float = 180) -> dict:
    """Poll a job until its status is one of ``status``; the last status info."""
    deadline = time.monotonic() + timeout
    info: dict = {}
    while time.monotonic() < deadline:
        info = client.get(f"/jobs/{job_id}").json()
        if info.get("status") in status:
            return info
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {info.get('status')} after {timeout} s: {info}")


def submit(client: httpx.Client, process: str, inputs: dict, files=None) -> dict:
    """An asynchronous execution; its status info (asserting 201 and the Location)."""
    headers = {"Prefer": "respond-async"}
    if files:
        r = client.post(f"/processes/{process}/execution", headers=headers,
                        data={"inputs": json.dumps({"inputs": inputs})}, files=files)
    else:
        r = client.post(f"/processes/{process}/execution", headers=headers, json={"inputs": inputs})
    assert r.status_code == 201, r.text
    info = r.json()
    assert r.headers["location"].endswith(f"/jobs/{info['jobID']}")
    return info


def assert_ogc_error(response: httpx.Response, status: int, code: "str | None" = None, param: "str | None" = None):
    """An OGC exception (problem+json: type, title, status, detail) with no traceback or server path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body) and body["status"] == status, body
    assert "Traceback" not in response.text and not re.search(r"/(tmp|work|home|root|srv|usr)/", response.text), body
    if code is not None:
        assert body.get("code") == code, body
    if param is not None:
        assert body.get("param") == param, body
    return body


def engines_of(job_dir: Path) -> list[int]:
    """Pids of engine processes whose command line names ``job_dir`` (none should outlive its job)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode("utf-8", "replace")
            state = (proc / "stat").read_text().split(") ", 1)[1][:1]
        except OSError:
            continue
        if str(job_dir) in cmdline and "engine" in cmdline and state != "Z":
            found.append(int(proc.name))
    return found
