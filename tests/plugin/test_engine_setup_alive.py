"""The set-up lock's liveness check (plugin/runner/engine_setup._alive) on this POSIX machine: real processes,
no signals sent to anyone (Windows reads the exit code through ctypes instead of os.kill, which would send
Ctrl+C there)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="module")
def setup_mod(urbanform):
    from urbanform.plugin.runner import engine_setup

    return engine_setup


def finished_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()                                                   # reaped: the pid names no process now
    return proc.pid


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX path")
def test_alive_is_true_for_running_processes_and_false_for_finished_ones(setup_mod):
    assert setup_mod._alive(os.getpid())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as running:
        try:
            assert setup_mod._alive(running.pid)
        finally:
            running.kill()
    running.wait()
    assert not setup_mod._alive(running.pid)
    assert not setup_mod._alive(finished_pid())
    assert setup_mod._alive(1)                   # init: another user's process (EPERM) or ours, alive either way


def test_process_groups_are_never_taken_for_a_setup(setup_mod):
    assert not setup_mod._alive(0) and not setup_mod._alive(-1)   # os.kill would signal whole groups


def test_a_lock_left_by_a_finished_setup_is_taken_over_and_a_live_one_is_respected(setup_mod, tmp_path):
    lock = tmp_path / ".setup.lock"
    lock.write_text(str(finished_pid()))
    assert setup_mod._acquire(tmp_path) == lock and lock.read_text() == str(os.getpid())
    lock.unlink()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as running:
        try:
            lock.write_text(str(running.pid))
            with pytest.raises(setup_mod.SetupError, match=f"process {running.pid}") as err:
                setup_mod._acquire(tmp_path)
            assert err.value.code == "busy" and lock.read_text() == str(running.pid)
        finally:
            running.kill()
    lock.write_text("-1")                                            # a damaged lock names no set-up
    assert setup_mod._acquire(tmp_path) == lock
