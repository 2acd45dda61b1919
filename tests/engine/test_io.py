"""Atomic output sets: nothing half-written, nothing overwritten without consent."""
from __future__ import annotations

import pytest

from engine.errors import BadInput
from engine.io import OutputSet


def test_commit_renames_all_files_into_place(tmp_path):
    a, b = tmp_path / "a.gpkg", tmp_path / "a_manifest.json"
    with OutputSet([a, b]) as outs:
        for p in (a, b):
            outs.temp(p).write_text(p.name)
            assert not p.exists()
        outs.commit()
    assert a.read_text() == "a.gpkg" and b.read_text() == "a_manifest.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gpkg", "a_manifest.json"]


def test_failure_leaves_no_file(tmp_path):
    a = tmp_path / "a.gpkg"
    with pytest.raises(RuntimeError):
        with OutputSet([a]) as outs:
            outs.temp(a).write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_kept_without_overwrite(tmp_path):
    a = tmp_path / "a.gpkg"
    a.write_text("old")
    with pytest.raises(BadInput, match="already exists; pass --overwrite"):
        OutputSet([a])
    with OutputSet([a], overwrite=True) as outs:
        outs.temp(a).write_text("new")
        assert a.read_text() == "old"      # replaced only at commit
        outs.commit()
    assert a.read_text() == "new"


def test_output_folder_checks(tmp_path):
    with pytest.raises(BadInput, match="does not exist"):
        OutputSet([tmp_path / "missing" / "a.gpkg"])
    with pytest.raises(BadInput, match="not writable"):
        OutputSet(["/proc/a.gpkg"])
    (tmp_path / "d.gpkg").mkdir()
    with pytest.raises(BadInput):
        OutputSet([tmp_path / "d.gpkg"], overwrite=True)


def test_npy_file_reads_and_writes_rows_like_numpy(tmp_path):
    import numpy as np

    from engine.io import NpyFile

    data = np.random.default_rng(0).normal(size=(50, 7)).astype(np.float32)
    f = NpyFile(tmp_path / "f.npy", shape=data.shape)
    for s in range(0, 50, 16):
        f[s: s + 16] = data[s: s + 16]
    assert np.array_equal(np.load(tmp_path / "f.npy"), data)     # a valid .npy file
    back = NpyFile(tmp_path / "f.npy")
    assert back.shape == (50, 7) and len(back) == 50
    assert np.array_equal(back[10:20], data[10:20]) and np.array_equal(back[45:99], data[45:])
    assert np.array_equal(back[np.array([3, 0, 49])], data[[3, 0, 49]])
    with pytest.raises(ValueError):
        f[0:2] = data[:3]
