"""Several batches at once on CPU (engine.features.streams): the same features as one batch at a time, in
order, on the planned thread count, with errors and early stops handled."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.features.extract import FeatureExtractor, extract_features
from engine.features.streams import MOST_STREAMS, intra_op_threads, map_batches, stream_batch, stream_plan
from engine.raster.tiling import TiledRaster


@pytest.mark.parametrize("threads, plan", [(1, (1, 1)), (2, (2, 1)), (3, (3, 1)), (4, (4, 1)), (6, (3, 2)),
                                           (16, (4, 4)), (17, (3, 5))])
def test_stream_plan_uses_the_threads_in_at_most_four_streams(threads, plan, monkeypatch):
    monkeypatch.delenv("URBANFORM_STREAMS", raising=False)
    streams, per = stream_plan(torch.device("cpu"), threads)
    assert (streams, per) == plan
    assert streams <= MOST_STREAMS and streams * per <= threads


def test_one_stream_on_a_gpu_and_when_asked(monkeypatch):
    monkeypatch.delenv("URBANFORM_STREAMS", raising=False)
    assert stream_plan(torch.device("cuda"), 8) == (1, 8)
    monkeypatch.setenv("URBANFORM_STREAMS", "1")
    assert stream_plan(torch.device("cpu"), 8) == (1, 8)
    monkeypatch.setenv("URBANFORM_STREAMS", "2")
    assert stream_plan(torch.device("cpu"), 8) == (2, 4)


def test_map_batches_keeps_the_order_and_runs_each_stream_on_its_share_of_the_threads(monkeypatch):
    monkeypatch.delenv("URBANFORM_STREAMS", raising=False)
    seen = []

    def fn(batch):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return batch * 2

    before = torch.get_num_threads()
    out = list(map_batches(fn, ((i, np.full(3, i)) for i in range(9)), torch.device("cpu"), threads=2))
    assert [k for k, _ in out] == list(range(9))
    assert all(np.array_equal(v, np.full(3, 2 * k)) for k, v in out)
    assert {n for n, _ in seen} <= {"cnn-stream_0", "cnn-stream_1"} and {t for _, t in seen} == {1}
    assert torch.get_num_threads() == before                  # put back afterwards


def test_streams_started_from_another_thread_get_their_share_too(monkeypatch):
    """A Dask worker or a server runs the extraction in a thread of its own, whose torch thread count may differ
    from the main thread's: the streams still run on their share (6 threads: 3 streams of 2), and the calling
    thread's count is put back."""
    monkeypatch.delenv("URBANFORM_STREAMS", raising=False)
    seen, after = [], []

    def fn(batch):
        seen.append(torch.get_num_threads())
        return batch

    def caller():
        torch.set_num_threads(1)
        list(map_batches(fn, ((i, i) for i in range(6)), torch.device("cpu"), threads=6))
        after.append(torch.get_num_threads())

    before = torch.get_num_threads()
    t = threading.Thread(target=caller)
    t.start()
    t.join()
    assert seen == [2] * 6 and after == [1]
    assert torch.get_num_threads() == before


def test_an_error_in_a_batch_is_raised_and_the_threads_are_put_back():
    before = torch.get_num_threads()

    def fn(batch):
        if batch == 3:
            raise ValueError("bad batch 3")
        return batch

    with pytest.raises(ValueError, match="bad batch 3"):
        list(map_batches(fn, ((i, i) for i in range(8)), torch.device("cpu"), threads=2))
    assert torch.get_num_threads() == before


def test_stopping_early_runs_no_more_batches():
    """A cancelled run closes the iterator: the batches already running finish, the rest are dropped."""
    ran = []
    it = map_batches(lambda b: ran.append(b) or b, ((i, i) for i in range(100)), torch.device("cpu"), threads=2)
    assert next(it) == (0, 0)
    it.close()
    assert len(ran) <= 4


def test_intra_op_threads_is_restored():
    before = torch.get_num_threads()
    with intra_op_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_the_streams_share_the_batch(monkeypatch):
    """Several batches in flight hold no more items than the one batch asked for (peak memory stays the same)."""
    monkeypatch.setenv("URBANFORM_STREAMS", "2")
    with intra_op_threads(2):
        assert stream_batch(256, torch.device("cpu")) == 128
        assert stream_batch(5, torch.device("cpu")) == 3
        assert stream_batch(1, torch.device("cpu")) == 1
    monkeypatch.setenv("URBANFORM_STREAMS", "1")
    with intra_op_threads(2):
        assert stream_batch(256, torch.device("cpu")) == 256


def test_extraction_runs_each_stream_on_its_share_of_the_batch(kampala_z19, monkeypatch):
    import engine.features.extract as extract

    ex = FeatureExtractor("resnet18", "none", device="cpu", precision="fp32")
    seen = []

    def counting(fn, items, device, **kw):
        def sizes():
            for key, batch in items:
                seen.append(len(batch))
                yield key, batch
        return map_batches(fn, sizes(), device, **kw)

    monkeypatch.setattr(extract, "map_batches", counting)
    monkeypatch.setenv("URBANFORM_STREAMS", "2")
    with TiledRaster(kampala_z19, "64px") as tiled, intra_op_threads(2):
        rows, cols = np.divmod(np.arange(20), tiled.grid.n_cols)
        extract_features(tiled, rows, cols, ex, np.zeros((20, ex.dim), np.float32), batch_size=8,
                         overlap_reads=False)
    assert seen == [4] * 5


def test_several_streams_give_the_features_of_one(kampala_z19, monkeypatch):
    """The default recipe (several depths pooled by forward hooks, tiles resized) from two streams at once
    gives each tile the features one stream gives it."""
    ex = FeatureExtractor("efficientnet_lite0", "imagenet", device="cpu", precision="fp32", pool="multi",
                          cnn_px=96)
    with TiledRaster(kampala_z19, "64px") as tiled:
        rows, cols = np.divmod(np.arange(24), tiled.grid.n_cols)
        out = {}
        for streams in ("1", "2"):
            monkeypatch.setenv("URBANFORM_STREAMS", streams)
            with intra_op_threads(2):                 # make test gives each suite one thread
                out[streams] = extract_features(tiled, rows, cols, ex, np.zeros((24, ex.dim), np.float32),
                                                batch_size=5, overlap_reads=False)
    assert np.allclose(out["1"], out["2"], atol=1e-5)


def test_a_cancelled_extraction_puts_the_threads_back_at_once(kampala_z19, monkeypatch):
    """progress raising (the engine's cancel) ends the stream iterator as the error leaves extract_features:
    torch's thread count is back while the caller still holds the traceback."""
    monkeypatch.setenv("URBANFORM_STREAMS", "2")
    ex = FeatureExtractor("efficientnet_lite0", "none", device="cpu", precision="fp32")

    class Cancelled(Exception):
        pass

    def progress(done, total):
        raise Cancelled

    with TiledRaster(kampala_z19, "64px") as tiled, intra_op_threads(2):
        rows, cols = np.divmod(np.arange(40), tiled.grid.n_cols)
        try:
            extract_features(tiled, rows, cols, ex, np.zeros((40, ex.dim), np.float32), batch_size=4,
                             overlap_reads=False, progress=progress)
        except Cancelled as exc:
            assert exc.__traceback__ is not None and torch.get_num_threads() == 2
        else:
            raise AssertionError("progress should have cancelled the run")
