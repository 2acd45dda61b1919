"""OutputLock: one writer per output, across real processes; stale locks are taken over."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import BadInput, Cancelled
from engine.io import OutputLock, lock_outputs
from engine.io.lock import GARBAGE_STALE_S, lock_path
from tests.engine.helpers import REPO

# a child that takes the lock on argv[1:] (a JSON list), says "held" and holds it until killed or stdin closes
HOLDER = """
import json, sys
from engine.io import OutputLock
with OutputLock(json.loads(sys.argv[1])):
    print("held", flush=True)
    sys.stdin.read()
print("released", flush=True)
"""

# a child that tries the lock once and reports what happened
TRY = """
import json, sys
from engine.errors import BadInput
from engine.io import OutputLock
try:
    with OutputLock(json.loads(sys.argv[1])):
        print("acquired", flush=True)
except BadInput as exc:
    print("refused:", exc, flush=True)
    sys.exit(2)
"""


def _python(code: str, paths, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, json.dumps([str(p) for p in paths])], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _holder(paths) -> subprocess.Popen:
    proc = _python(HOLDER, paths)
    line = proc.stdout.readline()
    assert line.strip() == "held", proc.stderr.read()
    return proc


def _try(paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRY, json.dumps([str(p) for p in paths])], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)


def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path):
    out = tmp_path / "run.gpkg"
    first = _holder([out, tmp_path / "run_clusters.tif"])
    try:
        lock = lock_path(out)
        assert lock.is_file()
        rec = json.loads(lock.read_text())
        assert rec["pid"] == first.pid and rec["host"] == socket.gethostname() and rec["started"]
        second = _try([out])
        assert second.returncode == 2, second.stderr
        msg = second.stdout
        assert f"another run (pid {first.pid} on {socket.gethostname()}, started " in msg
        assert str(out) in msg and "wait for it or choose another output" in msg
        # any output of the set is enough to clash
        assert _try([tmp_path / "run_clusters.tif"]).returncode == 2
        assert _try([tmp_path / "other.gpkg"]).returncode == 0
    finally:
        first.stdin.close()
        assert first.wait(30) == 0
    assert first.stdout.read().strip() == "released"
    assert not lock_path(out).exists() and not lock_path(tmp_path / "run_clusters.tif").exists()
    assert _try([out]).returncode == 0                    # free again


def test_in_process_refusal_is_bad_input_with_the_message(tmp_path):
    out = tmp_path / "a.tif"
    first = _holder([out])
    try:
        with pytest.raises(BadInput, match=r"another run \(pid \d+ on .*, started .*\) is writing .*a\.tif.*"
                                           r"wait for it or choose another output"), OutputLock([out]):
            pass
        assert lock_path(out).is_file()                    # the refused run did not remove the other's lock
    finally:
        first.stdin.close()
        first.wait(30)


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    out = tmp_path / "x.gpkg"
    first = _holder([out])
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    assert lock_path(out).is_file()                        # SIGKILL: nobody removed it
    second = _try([out])
    assert second.returncode == 0 and second.stdout.strip() == "acquired", second.stdout + second.stderr
    assert not lock_path(out).exists()


def test_the_lock_is_gone_after_normal_exit_and_after_errors(tmp_path):
    out = tmp_path / "o.gpkg"
    with OutputLock([out]) as lock:
        assert lock.held and lock_path(out).is_file()
    assert not lock_path(out).exists()
    for exc in (RuntimeError("boom"), Cancelled("cancelled"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), lock_outputs(out):
            assert lock_path(out).is_file()
            raise exc
        assert not lock_path(out).exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_a_second_lock_in_the_same_process_is_refused(tmp_path):
    out = tmp_path / "o.gpkg"
    with OutputLock([out]):
        with pytest.raises(BadInput, match=f"pid {os.getpid()}"):
            OutputLock([out]).acquire()
        assert lock_path(out).is_file()
    assert not lock_path(out).exists()


def test_refusal_of_a_later_output_releases_the_earlier_ones(tmp_path):
    a, b = tmp_path / "a.gpkg", tmp_path / "b.gpkg"
    with OutputLock([b]):
        with pytest.raises(BadInput):
            OutputLock([a, b]).acquire()
        assert not lock_path(a).exists()


def test_dead_pid_on_this_host_is_stale(tmp_path):
    out = tmp_path / "o.gpkg"
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    dead = int(proc.stdout)
    lock_path(out).write_text(json.dumps({"pid": dead, "host": socket.gethostname(), "started": "earlier"}))
    with OutputLock([out]):
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()
    assert not lock_path(out).exists()


def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path):
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("no /proc here")
    out = tmp_path / "o.gpkg"
    # the pid of a live process (our own parent) but a start time it does not have
    lock_path(out).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "x",
                                          "proc_start": "1"}))
    with OutputLock([out]):
        pass


def test_a_lock_from_another_host_is_respected_and_named(tmp_path):
    out = tmp_path / "o.gpkg"
    lock_path(out).write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "2024-01-01T00:00"}))
    with pytest.raises(BadInput, match=r"pid 1 on elsewhere\.example.*delete"):
        OutputLock([out]).acquire()
    assert lock_path(out).is_file()


def test_garbage_lock_is_respected_while_young_and_taken_over_when_old(tmp_path):
    out = tmp_path / "o.gpkg"
    lp = lock_path(out)
    lp.write_bytes(b"\x00\xffnot json")
    with pytest.raises(BadInput, match="another run is writing"):
        OutputLock([out]).acquire()
    old = time.time() - GARBAGE_STALE_S - 5
    os.utime(lp, (old, old))
    with OutputLock([out]):
        assert json.loads(lp.read_text())["pid"] == os.getpid()
    assert not lp.exists()


def test_wait_gets_the_lock_when_the_other_run_ends(tmp_path):
    out = tmp_path / "o.gpkg"
    first = _holder([out])
    t0 = time.monotonic()
    import threading

    threading.Timer(1.0, first.stdin.close).start()
    with OutputLock([out], wait=30):
        assert time.monotonic() - t0 >= 0.9
    first.wait(30)


def test_symlinked_output_shares_the_lock(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with OutputLock([real / "o.gpkg"]), pytest.raises(BadInput):
        OutputLock([link / "o.gpkg"]).acquire()


def test_missing_output_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        OutputLock([tmp_path / "nope" / "o.gpkg"]).acquire()


def test_many_processes_racing_for_one_output_get_it_one_at_a_time(tmp_path):
    """Eight processes start at once on a stale lock: never two holders at the same time."""
    out = tmp_path / "o.gpkg"
    lock_path(out).write_text(json.dumps({"pid": 2 ** 22 + 7, "host": socket.gethostname(), "started": "x"}))
    log = tmp_path / "log.txt"
    code = f"""
import json, os, sys, time
from engine.errors import BadInput
from engine.io import OutputLock
try:
    with OutputLock(json.loads(sys.argv[1])):
        with open({str(log)!r}, "a") as fh: fh.write(f"in {{os.getpid()}}\\n")
        time.sleep(0.3)
        with open({str(log)!r}, "a") as fh: fh.write(f"out {{os.getpid()}}\\n")
except BadInput:
    sys.exit(2)
"""
    procs = [_python(code, [out]) for _ in range(8)]
    codes = [p.wait(60) for p in procs]
    for p in procs:
        p.stdin.close()
        p.stdout.close()
        p.stderr.close()
    assert codes.count(0) >= 1 and set(codes) <= {0, 2}
    lines = log.read_text().split()
    events = list(zip(lines[::2], lines[1::2], strict=True))
    depth = 0
    for kind, _pid in events:
        depth += 1 if kind == "in" else -1
        assert depth in (0, 1)
    assert not lock_path(out).exists()
