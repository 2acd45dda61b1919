"""BackgroundPlots: the sweep's figures drawn in a worker process give the same files as drawn in-process; an
error in the worker is raised; a worker that died leaves the figures to be drawn here."""
import numpy as np
import pytest

from engine.clustering.sweep_plots import BackgroundPlots


def _labels():
    rng = np.random.default_rng(0)
    return {k: rng.integers(0, k, 300).astype(np.int32) for k in (2, 3, 4)}


def _png(path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_worker_draws_the_same_files_as_in_process(tmp_path):
    labels = _labels()
    scores = np.random.default_rng(1).normal(size=(300, 2)).astype(np.float32)
    here = BackgroundPlots(inline=True)
    here.wait([here.draw("lineage", tmp_path / "a.png", labels, title="t"),
               here.draw("pca", tmp_path / "b.png", scores, labels, title="t", seed=0)])
    worker = BackgroundPlots()
    try:
        jobs = [worker.draw("lineage", tmp_path / "c.png", labels, title="t"),
                worker.draw("pca", tmp_path / "d.png", scores, labels, title="t", seed=0)]
        worker.wait(jobs)
    finally:
        worker.close()
    assert all(job["done"] for job in jobs)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "c.png").read_bytes()
    assert (tmp_path / "b.png").read_bytes() == (tmp_path / "d.png").read_bytes()


def test_an_error_in_the_worker_is_raised_and_the_worker_goes_on(tmp_path):
    worker = BackgroundPlots()
    try:
        with pytest.raises(RuntimeError, match="drawing the nope plot failed"):
            worker.wait([worker.draw("nope", tmp_path / "x.png")])
        worker.wait([worker.draw("lineage", tmp_path / "e.png", _labels())])
    finally:
        worker.close()
    assert _png(tmp_path / "e.png")


def test_a_dead_worker_leaves_the_figures_to_this_process(tmp_path):
    worker = BackgroundPlots()
    try:
        worker._proc.kill()
        worker._proc.wait()
        job = worker.draw("lineage", tmp_path / "f.png", _labels())
        worker.wait([job])
        worker.drain()
    finally:
        worker.close()
    assert job["done"] and _png(tmp_path / "f.png")


def test_an_unstarted_worker_starts_at_start_or_at_the_first_figure(tmp_path):
    """The sweep makes its worker with start=False and starts it when its k-means leaves a core free."""
    for how in ("start", "draw"):
        worker = BackgroundPlots(start=False)
        try:
            assert worker._proc is None
            if how == "start":
                worker.start()
                proc = worker._proc
                assert proc is not None and proc.poll() is None
                worker.start()                        # once
                assert worker._proc is proc
            job = worker.draw("lineage", tmp_path / f"{how}.png", _labels())
            assert worker._proc is not None and not job["done"]     # drawn by the worker, not here
            worker.wait([job])
        finally:
            worker.close()
        assert _png(tmp_path / f"{how}.png")
    closed = BackgroundPlots(start=False)
    closed.close()                                    # nothing started, nothing to end ...
    job = closed.draw("lineage", tmp_path / "closed.png", _labels())
    assert closed._proc is None and job["done"] and _png(tmp_path / "closed.png")    # ... and no worker after
