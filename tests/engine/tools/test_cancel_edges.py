"""Cancel at any instant: exit 130 with nothing half-written, or exit 0 when the outputs were committed.

Real subprocesses read with ``--progress json``; on seeing a chosen event the test sends SIGTERM (or SIGINT,
Ctrl+C) and looks at the exit code and the files (a rerun to completion, which needs no signal, runs in this
process). In-process, real signals delivered to this process show
that a cancel waits while a commit renames files and is dropped after the last one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyogrio
import pytest

from engine import progress as cancel
from engine.errors import Cancelled
from tests.engine.helpers import REPO, SAMPLE, run_cli

RASTER = SAMPLE / "kampala_ug_oam_rgb_z19_epsg3857.tif"
CLUSTER_FILES = ("c.gpkg", "c_clusters.tif", "c_manifest.json", "c_quicklook.png", "c_model.pt")


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *map(str, args), "--progress", "json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_on(proc: subprocess.Popen, hit, sig=signal.SIGTERM) -> tuple[list[dict], str, bool]:
    """Read the run's events; send ``sig`` on the first event for which ``hit(event)`` is true. Returns the
    events, stderr and whether the signal was sent (the run may end before the event comes)."""
    events, sent = [], False
    for line in proc.stdout:
        event = json.loads(line)
        events.append(event)
        if not sent and hit(event):
            proc.send_signal(sig)
            sent = True
    _, err = proc.communicate(timeout=600)
    return events, err, sent


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ cluster, at every stage
STAGES = {
    "open": lambda e: e["stage"] == "open",
    "scan": lambda e: e["stage"] == "scan",
    "features": lambda e: e["stage"] == "features",
    "features-done": lambda e: e["stage"] == "features" and e["done"] == e["total"],
    "cluster": lambda e: e["stage"] == "cluster",
    "write-start": lambda e: e["stage"] == "write" and e["done"] == 0,
    "committed": lambda e: e["stage"] == "write" and e["done"] == e["total"],
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigterm_at_each_stage_of_a_cluster_run(tmp_path, stage):
    out = tmp_path / "out"
    out.mkdir()
    proc = start("cluster", RASTER, "--out", out / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache",
                 "--batch-size", 8)
    events, err, sent = signal_on(proc, STAGES[stage])
    assert sent, events
    if stage == "committed":              # the last event comes after the commit: the cancel changes nothing
        assert proc.returncode == 0, err
    assert proc.returncode in (0, 130), (proc.returncode, err)
    if proc.returncode == 130:
        assert files(out) == [], files(out)                       # no output, no lock, no partial file
        assert err.strip().splitlines()[-1] == "cancelled: no output was written", err
    else:
        assert files(out) == sorted(CLUSTER_FILES), files(out)
        assert json.loads((out / "c_manifest.json").read_text())["tool"] == "cluster"
        assert "cancelled" not in err and "Traceback" not in err, err


def test_ctrl_c_during_features_exits_130_and_leaves_nothing(tmp_path):
    proc = start("cluster", RASTER, "--out", tmp_path / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache",
                 "--batch-size", 8)
    _, err, sent = signal_on(proc, STAGES["features"], signal.SIGINT)
    assert sent and proc.returncode == 130, err
    assert files(tmp_path) == [] and "Traceback" not in err


def test_cancel_during_the_statistics_removes_the_cluster_run_too(tmp_path):
    proc = start("cluster", RASTER, "--out", tmp_path / "c.gpkg", "--k", 3, "--weights", "none", "--no-cache",
                 "--buildings", SAMPLE / "kampala_ug_osm_buildings.geojson")
    # the cluster files are committed (write 4/4 of the clustering), then the statistics begin
    _, err, sent = signal_on(proc, lambda e: e["stage"] == "buildings")
    assert sent and proc.returncode in (0, 130), err
    if proc.returncode == 130:
        assert files(tmp_path) == [], "a run half with, half without its statistics"
    else:                                           # the statistics were committed before the signal came
        assert {"c.gpkg", "c_stats.csv", "c_manifest.json"} <= set(files(tmp_path))


# ------------------------------------------------------------------------------ sweep
SWEEP_ARGS = ("--k", "2..3", "--tile-size", "64px,128px", "--weights", "none", "--no-cache")


def sweep_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(("s.", "s_", ".s")))


def test_sweep_cancelled_after_its_first_tile_size_resumes_to_complete(tmp_path):
    out = tmp_path / "s.gpkg"
    proc = start("sweep", RASTER, "--out", out, *SWEEP_ARGS)
    _, err, sent = signal_on(proc, lambda e: e["stage"] == "write" and "tiles_64px committed" in e["message"])
    assert sent and proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("cancelled: the sweep was cancelled; finished: tiles_64px"), line
    assert "missing: tiles_128px" in line and "Run the same command with --resume" in line
    assert sweep_files(tmp_path) == ["s.gpkg", "s_lineage_64px.png", "s_manifest.json", "s_metrics.csv",
                                     "s_pca_64px.png"]
    m = json.loads((tmp_path / "s_manifest.json").read_text())
    assert m["complete"] is False and m["missing"] == ["tiles_128px"] and list(m["layers"]) == ["tiles_64px"]
    assert [name for name, _ in pyogrio.list_layers(out)] == ["tiles_64px"]

    # exactly what the message says: the same command with --resume
    done = run_cli("sweep", RASTER, "--out", out, *SWEEP_ARGS, "--resume", "--progress", "none")
    assert done.returncode == 0, done.stderr
    m = json.loads((tmp_path / "s_manifest.json").read_text())
    assert m["complete"] is True and m["missing"] == [] and m["layers"] == {"tiles_64px": [2, 3],
                                                                             "tiles_128px": [2, 3]}
    assert sweep_files(tmp_path) == ["s.gpkg", "s_lineage_128px.png", "s_lineage_64px.png", "s_manifest.json",
                                     "s_metrics.csv", "s_metrics.png", "s_pca_128px.png", "s_pca_64px.png"]
    assert {name for name, _ in pyogrio.list_layers(out)} == {"tiles_64px", "tiles_128px"}


def test_sweep_cancelled_between_plots_and_layer_leaves_no_stray_plot_and_reruns(tmp_path):
    out = tmp_path / "s.gpkg"
    proc = start("sweep", RASTER, "--out", out, *SWEEP_ARGS)
    # the first tile size's plots are drawn, its layer not yet committed
    _, err, sent = signal_on(proc, lambda e: e["stage"] == "plots" and e["done"] == 2)
    assert sent and proc.returncode in (0, 130), err
    if proc.returncode == 130:
        line = err.strip().splitlines()[-1]
        if "finished: tiles_64px" in line:          # the commit had begun: it went through, the cancel after it
            assert "--resume" in line
            return
        assert "nothing was written. Run the same command again" in line, line
        assert sweep_files(tmp_path) == [], sweep_files(tmp_path)
        again = run_cli("sweep", RASTER, "--out", out, *SWEEP_ARGS, "--progress", "none")
        assert again.returncode == 0, again.stderr


def test_sweep_cancelled_at_the_start_leaves_nothing(tmp_path):
    proc = start("sweep", RASTER, "--out", tmp_path / "s.gpkg", *SWEEP_ARGS)
    _, err, sent = signal_on(proc, lambda e: True)
    assert sent and proc.returncode == 130, err
    assert files(tmp_path) == [] and "Traceback" not in err


# ------------------------------------------------------------------------------ in process, real signals
@pytest.fixture
def handler():
    """The CLI's handler on SIGTERM for the test, the cancel state fresh; both restored after."""
    from engine.cli.main import _on_signal

    cancel.reset_cancel()
    old = signal.signal(signal.SIGTERM, _on_signal)
    yield
    signal.signal(signal.SIGTERM, old)
    cancel.reset_cancel()


def sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    for _ in range(1000):                         # the handler runs at the interpreter's next check
        pass


def test_a_sigterm_raises_at_once_outside_a_commit(handler):
    with pytest.raises(Cancelled):
        sigterm_self()


def test_a_sigterm_during_a_commit_waits_for_its_end(handler):
    renamed = []
    with pytest.raises(Cancelled):
        with cancel.committing(final=False):
            sigterm_self()
            renamed.append("all")                   # the rest of the commit still runs
    assert renamed == ["all"]


def test_a_sigterm_during_or_after_the_last_commit_is_dropped(handler):
    with cancel.committing(final=True):
        sigterm_self()
    assert cancel.outputs_committed()
    sigterm_self()                                  # after the commit: nothing happens, the run ends with 0


def test_after_the_run_ended_a_sigterm_is_dropped(handler):
    cancel.end_of_run()
    sigterm_self()


def test_only_the_first_cancel_is_raised(handler):
    with pytest.raises(Cancelled):
        sigterm_self()
    sigterm_self()                                  # a second one while the first unwinds changes nothing


# ------------------------------------------------------------------------------ trainings keep a checkpoint
def rerun(*args) -> subprocess.CompletedProcess:
    """The command again, to completion (in this process: the signal was the other process's test)."""
    return run_cli(*args, "--progress", "none")


def test_deepcluster_cancelled_after_an_epoch_says_resume_and_resume_works(tmp_path):
    args = ["cluster", RASTER, "--out", tmp_path / "d.gpkg", "--k", 3, "--method", "deepcluster", "--epochs", 3,
            "--weights", "none", "--crops-per-tile", 1, "--no-cache"]
    proc = start(*args)
    _, err, sent = signal_on(proc, lambda e: e["stage"] == "epoch" and e["done"] == 1 and "loss" in e["message"])
    assert sent and proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("cancelled: no output was written; the DeepCluster checkpoint"), line
    assert "run the same command with --resume to continue" in line
    assert files(tmp_path) == ["d_checkpoint.pt"]
    assert rerun(*args).returncode == 2                             # as the message says: not without --resume
    done = rerun(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert set(files(tmp_path)) == {"d.gpkg", "d_clusters.tif", "d_manifest.json", "d_quicklook.png", "d_model.pt"}


def test_train_seg_cancelled_after_an_epoch_says_resume_and_resume_works(tmp_path):
    args = ["train-seg", RASTER, "--buildings", SAMPLE / "kampala_ug_osm_buildings.geojson", "--out",
            tmp_path / "m.pt", "--weights", "none", "--encoder", "resnet18", "--chip", 64, "--epochs", 2,
            "--chips-per-epoch", 8]
    proc = start(*args)
    _, err, sent = signal_on(proc, lambda e: e["stage"] == "train" and e["done"] == 1)
    assert sent and proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("cancelled: no model was written; the checkpoint"), line
    assert files(tmp_path) == ["m_checkpoint.pt"]
    done = rerun(*args, "--resume")
    assert done.returncode == 0, done.stderr
    assert {"m.pt", "m_manifest.json"} <= set(files(tmp_path))
