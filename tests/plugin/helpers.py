"""Helpers for plugin tests: wait for QgsTasks while letting Qt deliver their signals."""
from __future__ import annotations

import time

from qgis.core import QgsApplication, QgsTask
from qgis.PyQt.QtCore import QCoreApplication


def wait_for(predicate, timeout: float = 300.0, step: float = 0.05) -> bool:
    """Process Qt events until ``predicate()`` is true or ``timeout`` seconds pass."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        QCoreApplication.processEvents()
        if predicate():
            return True
        time.sleep(step)
    return False


def run_task(task: QgsTask, timeout: float = 300.0) -> int:
    """Add ``task`` to QGIS's task manager and wait until it ended and finished() ran; returns its status."""
    done = track(task)
    name = task.description()
    QgsApplication.taskManager().addTask(task)
    assert wait_for(lambda: bool(done), timeout), f"task {name} did not end in {timeout} s"
    wait_for(lambda: False, 0.2)      # let finished() and queued signals run
    return done[0]


def track(task: QgsTask) -> list:
    """A list that receives the task's final status (the task manager deletes the task afterwards)."""
    done: list = []
    task.taskCompleted.connect(lambda: done.append(QgsTask.Complete))
    task.taskTerminated.connect(lambda: done.append(QgsTask.Terminated))
    return done


def fresh_qgis_env(home, **extra) -> dict:
    """Environment for a separate QGIS process with a fresh profile under ``home``.

    pytest-qgis points QGIS_CUSTOM_CONFIG_PATH/QGIS_OPTIONS_PATH at the repo's
    .qgis-settings; a child QGIS must not inherit them, or HOME would not matter.
    """
    import os

    env = dict(os.environ, HOME=str(home), **{k: str(v) for k, v in extra.items()})
    for leaked in ("PYTHONHOME", "QGIS_CUSTOM_CONFIG_PATH", "QGIS_OPTIONS_PATH"):
        env.pop(leaked, None)
    return env


def run_in_own_group(cmd: list[str], env: dict, timeout: float, cwd=None):
    """Run ``cmd`` in its own process group; on timeout kill the whole group (xvfb-run, QGIS and all).

    Returns (returncode, stdout, stderr, timed_out).
    """
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out, err, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return proc.returncode, out, err, True


def install_zip_in_clean_profile(tmp_path, repo) -> tuple:
    """``make package`` into ``tmp_path/dist`` and unpack the zip as QGIS's "Install from ZIP" would, into
    the default profile of a new HOME; returns (home, plugins folder)."""
    import subprocess
    import zipfile

    dist = tmp_path / "dist"
    subprocess.run(["make", "-s", "package", f"DIST={dist}"], cwd=repo, check=True, capture_output=True, timeout=120)
    home = tmp_path / "home"
    plugins = home / ".local/share/QGIS/QGIS3/profiles/default/python/plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(next(dist.glob("urbanform-*.zip"))) as zf:
        zf.extractall(plugins)
    return home, plugins
