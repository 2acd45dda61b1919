"""Atomic output sets: nothing half-written, nothing overwritten without consent."""
from __future__ import annotations

import pytest

from engine.errors import BadInput
from engine.io import OutputSet
from tests.engine.helpers import REPO


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
    with pytest.raises(BadInput, match="already exists; choose another --out, or pass --overwrite"):
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


# -- the one atomic writer (engine.io.atomic_path) ------------------------------------------------

def _plugin_partials(out, pid):
    """What plugin/engine_process.remove_partials deletes after a cancel (its glob, reproduced here so the
    engine tests need no QGIS): ``.{stem}.part-{pid}*`` next to each output."""
    from pathlib import Path

    out = Path(out)
    return list(out.parent.glob(f".{out.stem}.part-{pid}*"))


def test_atomic_path_renames_into_place_on_success(tmp_path):
    import os

    from engine.io import atomic_path

    final = tmp_path / "city_manifest.json"
    final.write_text("old")
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        assert tmp.name == f".city_manifest.part-{os.getpid()}.json"
        tmp.write_text("new")
        assert final.read_text() == "old"          # untouched until the block succeeds
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["city_manifest.json"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt(), "cancelled"])
def test_atomic_path_leaves_nothing_on_failure(tmp_path, exc):
    from engine.errors import Cancelled
    from engine.io import atomic_path

    exc = Cancelled("stopped") if exc == "cancelled" else exc
    final = tmp_path / "city.gpkg"
    final.write_text("old")
    with pytest.raises(type(exc)):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            for extra in ("-wal", "-journal", ".aux.xml"):
                (tmp.parent / (tmp.name + extra)).write_text("side")
            raise exc
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["city.gpkg"]


def test_partial_names_are_what_the_plugin_cleans_up_after_a_cancel(tmp_path):
    """A killed engine cannot clean up; the plugin removes ``.{stem}.part-{pid}*`` next to each output, so
    every temporary name the engine writes under must match that glob (with the engine's pid)."""
    import os

    from engine.io import OutputSet, atomic_path, partial_path

    pid = os.getpid()
    for name in ("city.gpkg", "city.tif", "city_manifest.json", "city_model.pt", "city_eta.csv",
                 "city_quicklook.png", "run_checkpoint.pt", "noext"):
        final = tmp_path / name
        with atomic_path(final) as tmp:
            tmp.write_text("x")
            assert _plugin_partials(final, pid) == [tmp]
            assert not _plugin_partials(final, pid + 1)
        final.unlink()
        staging = partial_path(final, "-stage")
        staging.write_text("x")
        assert _plugin_partials(final, pid) == [staging]
        staging.unlink()
        with OutputSet([final]) as outs:
            outs.temp(final).write_text("x")
            assert _plugin_partials(final, pid) == [outs.temp(final)]


def test_only_engine_io_renames_files_into_place():
    """Every output is written through engine.io (atomic_path / OutputSet / promote): no other module
    renames or moves files itself, so there is one temporary-name scheme the plugin's clean-up knows."""
    import ast

    root = REPO / "engine"
    found = []
    for py in sorted(root.rglob("*.py")):
        if py.parent == root / "io":                       # the io package is the one writer
            continue
        for node in ast.walk(ast.parse(py.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            f, owner = node.func, getattr(node.func.value, "id", None)
            moves = ((owner == "os" and f.attr in ("replace", "rename", "renames"))
                     or (owner == "shutil" and f.attr == "move")
                     # Path.rename/Path.replace take one argument; str.replace takes two, DataFrame.rename keywords
                     or (f.attr in ("rename", "replace") and len(node.args) == 1 and not node.keywords)
                     or (owner == "tempfile" and f.attr in ("mkdtemp", "NamedTemporaryFile", "mkstemp")
                         and any(k.arg == "dir" for k in node.keywords)))
            if moves:
                found.append(f"{py.relative_to(root.parent)}:{node.lineno} {ast.unparse(node)}")
    assert not found, "write outputs through engine.io.atomic_path instead:\n" + "\n".join(found)
