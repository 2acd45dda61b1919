"""The engine installer (plugin/runner/engine_setup.py) for real: a venv built from requirements.lock with uv.

One real build per session (a warm uv cache makes it seconds; a cold one downloads a few GB), then
the ways an install goes wrong — Cancel, an unreachable index, a full disk (a small tmpfs) — each
must leave the engine in use working and say what to do. The last test is the analyst's path:
the plugin zip unpacked in a clean profile, `qgis_process run urbanform:setupengine`, then
`urbanform:cluster`, with no engine variable set.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import install_zip_in_clean_profile, run_in_own_group

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
BASE_PYTHON = "/usr/bin/python3"           # the Python QGIS runs on here


@pytest.fixture(scope="module")
def setup_mod(urbanform):
    from urbanform.plugin.runner import engine_setup

    return engine_setup


def engine_ok(python: str | Path) -> dict:
    """`python -m engine check` in an engine environment, as the plugin runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([str(python), "-m", "engine", "check"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"ok": False}


@pytest.fixture(scope="module")
def built(setup_mod, tmp_path_factory):
    """A real engine built from the lock into an empty engine home (uv, the machine's uv cache)."""
    home = tmp_path_factory.mktemp("engine-home")
    steps, lines = [], []
    t0 = time.monotonic()
    record = setup_mod.install(setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO),
                               log=lines.append, step=lambda i, n, name: steps.append((i, n, name)))
    print(f"\nengine built in {time.monotonic() - t0:.1f} s with {record['installer']}")
    return {"home": home, "record": record, "steps": steps, "log": lines}


def env_dirs(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "py3.11").glob("env-*"))


# -- plain functions ---------------------------------------------------------------------------------
def test_torch_build_follows_the_machine(setup_mod):
    plan = setup_mod.torch_plan
    assert plan("auto", "Linux", driver=None)["build"] == "cpu"
    assert plan("auto", "Linux", driver="550.54")["build"] == "cuda"
    assert plan("auto", "Linux", driver="550.54")["index_url"] is None        # PyPI's Linux torch has CUDA
    win = plan("auto", "Windows", driver="551.23")
    assert win["build"] == "cuda" and win["index_url"].startswith("https://download.pytorch.org/whl/cu")
    assert plan("auto", "Windows", driver=None)["build"] == "cpu"
    assert plan("auto", "Windows", driver=None)["index_url"] is None
    assert plan("cpu", "Windows")["index_url"] is None and plan("auto", "Darwin", driver=None)["build"] == "cpu"


def test_a_chosen_python_that_is_not_one_is_refused_before_any_work(setup_mod, tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    for python in (str(fake), str(tmp_path / "missing" / "python3"), str(SAMPLE)):
        with pytest.raises(setup_mod.SetupError) as err:
            setup_mod.install(setup_mod.Options(home=tmp_path / "home", python=python, plugin_dir=REPO))
        assert err.value.code == "python" and python in str(err.value) and "Choose" in str(err.value)
    assert not (tmp_path / "home").exists()


def test_errors_are_explained_in_plain_words(setup_mod, tmp_path):
    opts = setup_mod.Options(home=tmp_path, wheel_dirs=[tmp_path / "wheels"])
    cases = {
        "OSError: [Errno 28] No space left on device": ("disk", "GB free"),
        "error: Failed to fetch: https://pypi.org/simple/affine/\n  cause: client error (Connect)": (
            "index", "Wheel folder"),
        "ERROR: Could not install packages due to an OSError: HTTPSConnectionPool: ProxyError('Cannot connect "
        "to proxy.', OSError('Tunnel connection failed: 407 Proxy Authentication Required'))": (
            "index", "pip download --require-hashes -r requirements.lock"),
        "cause: invalid peer certificate: UnknownIssuer": ("index", "certificate"),
        "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE.": ("hashes", "lock"),
    }
    for output, (code, words) in cases.items():
        err = setup_mod.explain(output, opts)
        assert err.code == code and words in str(err), (output, str(err))
    assert "python3.11-venv" in setup_mod.venv_fix("3.11.2")


def test_install_builds_checks_and_records_the_lock(setup_mod, built):
    home, record = built["home"], built["record"]
    assert [name for _, _, name in built["steps"]] == list(setup_mod.STEPS)
    assert record["installer"] == "uv" and record["torch"].startswith("2.14.1")
    assert record["lock_sha256"] == setup_mod.lock_hash(REPO / "requirements.lock")
    current = setup_mod.current(home, "3.11")
    assert current["env"] == record["env"] and Path(current["python"]).is_file()
    assert json.loads((home / "py3.11" / record["env"] / setup_mod.RECORD).read_text())["env"] == record["env"]
    assert engine_ok(current["python"])["ok"]
    status = setup_mod.status(home, REPO / "requirements.lock", "3.11")
    assert status["installed"] and status["current"]
    assert any("uv pip install" in line for line in built["log"]), "the installer output reaches the log"
    assert not (home / "py3.11" / ".setup.lock").exists()


def test_another_lock_makes_the_engine_out_of_date(setup_mod, built, tmp_path):
    newer = tmp_path / "requirements.lock"
    newer.write_text((REPO / "requirements.lock").read_text() + "# a newer plugin\n")
    status = setup_mod.status(built["home"], newer, "3.11")
    assert status["installed"] and not status["current"]


def _assert_previous_engine_kept(setup_mod, home: Path, before: dict) -> None:
    after = setup_mod.current(home, "3.11")
    assert after == before, "the engine in use changed"
    assert env_dirs(home) == [before["env"]], "a half-built environment was left behind"
    assert engine_ok(after["python"])["ok"], "the previous engine no longer works"
    assert not (home / "py3.11" / ".setup.lock").exists()


def test_cancel_during_install_keeps_the_previous_engine(setup_mod, built):
    home = built["home"]
    before = setup_mod.current(home, "3.11")
    reached: dict = {}

    def step(i, n, name):
        if name == "Install packages":
            reached["at"] = time.monotonic()

    def cancelled() -> bool:
        return "at" in reached and time.monotonic() - reached["at"] > 0.5

    with pytest.raises(setup_mod.SetupError) as err:
        setup_mod.install(setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO), log=lambda _: None,
                          step=step, is_cancelled=cancelled)
    assert err.value.code == "cancelled" and "unchanged" in str(err.value)
    _assert_previous_engine_kept(setup_mod, home, before)


def test_an_unreachable_index_keeps_the_previous_engine_and_says_how_to_use_a_wheel_folder(
        setup_mod, built, tmp_path, monkeypatch):
    home = built["home"]
    before = setup_mod.current(home, "3.11")
    # nothing cached, no machine-wide pip configuration: the index below is all there is
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    log = []
    with pytest.raises(setup_mod.SetupError) as err:
        setup_mod.install(setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO,
                                            index_url="http://127.0.0.1:9/simple"), log=log.append)
    assert err.value.code == "index", str(err.value)
    assert "127.0.0.1:9" in str(err.value) and "Wheel folder" in str(err.value)
    # the first download (uv) found the index unreachable: the packages are not tried there again with pip
    assert "== Get uv" in log and "== Install packages" not in log, "\n".join(log[-20:])
    _assert_previous_engine_kept(setup_mod, home, before)


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs (root only, as on these machines and in CI)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, f"cannot mount a tmpfs (this test needs root): {proc.stderr}"
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _small_previous_engine(setup_mod, home: Path, built: dict) -> dict:
    """A working engine on the small disk: a venv that borrows the built engine's packages (a .pth file)."""
    root = home / "py3.11"
    env = root / "env-previous"
    subprocess.run([BASE_PYTHON, "-m", "venv", "--without-pip", str(env)], check=True)
    built_env = built["home"] / "py3.11" / built["record"]["env"]
    site = next(built_env.glob("lib/python3*/site-packages"))
    (next(env.glob("lib/python3*/site-packages")) / "borrowed.pth").write_text(str(site) + "\n")
    (root / setup_mod.CURRENT).write_text(json.dumps({"env": env.name, "lock_sha256": "old"}))
    before = setup_mod.current(home, "3.11")
    assert engine_ok(before["python"])["ok"]
    return before


def test_a_full_disk_keeps_the_previous_engine_and_says_how_much_space_is_needed(setup_mod, built, small_disk):
    home = small_disk / "engine"
    before = _small_previous_engine(setup_mod, home, built)
    opts = setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO)
    with pytest.raises(setup_mod.SetupError) as err:           # refused before any work: too little space
        setup_mod.install(opts, log=lambda _: None)
    assert err.value.code == "disk" and "GB free" in str(err.value) and "needs about" in str(err.value)
    _assert_previous_engine_kept(setup_mod, home, before)
    opts.check_space = False                                    # the disk fills up during the install
    with pytest.raises(setup_mod.SetupError) as err:
        setup_mod.install(opts, log=lambda _: None)
    assert err.value.code == "disk" and "Free some space" in str(err.value), str(err.value)
    _assert_previous_engine_kept(setup_mod, home, before)


def test_a_second_install_replaces_the_engine_only_when_the_new_one_works(setup_mod, built):
    home = built["home"]
    before = setup_mod.current(home, "3.11")
    record = setup_mod.install(setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO),
                               log=lambda _: None)
    assert record["env"] != before["env"] and env_dirs(home) == [record["env"]]
    assert engine_ok(setup_mod.current(home, "3.11")["python"])["ok"]


def test_two_installs_at_once_do_not_share_a_folder(setup_mod, built):
    home = built["home"]
    root = home / "py3.11"
    lock = root / ".setup.lock"
    lock.write_text(str(os.getpid()))
    try:
        with pytest.raises(setup_mod.SetupError) as err:
            setup_mod.install(setup_mod.Options(home=home, python=BASE_PYTHON, plugin_dir=REPO), log=lambda _: None)
        assert err.value.code == "busy"
    finally:
        lock.unlink()


# -- the analyst's path: the zip, a clean profile, qgis_process ----------------------------------------
def qgis_process(args: list[str], env: dict, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    code, stdout, stderr, timed_out = run_in_own_group(["qgis_process.bin", *args], env, timeout, cwd=cwd)
    assert not timed_out, f"qgis_process {args[:2]} did not end in {timeout} s:\n{stdout[-2000:]}{stderr[-2000:]}"
    return subprocess.CompletedProcess(args, code, stdout, stderr)


def test_from_the_zip_setupengine_then_cluster_with_no_engine_variable(tmp_path):
    home, plugins = install_zip_in_clean_profile(tmp_path, REPO)
    assert (plugins / "urbanform" / "requirements.lock").is_file()
    # a clean profile: no engine variable, no Python paths; only the machine's warm uv cache is shared
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "LANG": "C.UTF-8",
           "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(Path.home() / ".cache" / "uv"))}
    for var in ("SSL_CERT_FILE", "SSL_CERT_DIR", "PIP_CERT", "PIP_FIND_LINKS", "PIP_DEFAULT_TIMEOUT"):
        if var in os.environ:                   # the machine's network settings, as a user's desktop has them
            env[var] = os.environ[var]
    assert qgis_process(["plugins", "enable", "urbanform"], env, tmp_path).returncode == 0
    t0 = time.monotonic()
    setup = qgis_process(["run", "urbanform:setupengine"], env, tmp_path)
    seconds = time.monotonic() - t0
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]
    profile = home / ".local/share/QGIS/QGIS3/profiles/default"
    engine_python = next((profile / "urbanform" / "engine").glob("py3.*/env-*/bin/python"))
    assert f"ENGINE_PYTHON:\t{engine_python}" in setup.stdout
    print(f"\nurbanform:setupengine from the zip: {seconds:.1f} s")
    again = qgis_process(["run", "urbanform:setupengine"], env, tmp_path)
    assert again.returncode == 0 and "current" in again.stdout + again.stderr     # kept, not rebuilt
    out = tmp_path / "run.gpkg"
    run = qgis_process(["run", "urbanform:cluster", "--", f"INPUT={SAMPLE}", f"OUTPUT={out}"], env, tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert out.is_file() and out.with_name("run_clusters.tif").is_file()
    assert str(engine_python) in run.stdout + run.stderr, "the run did not use the engine it set up"
    manifest = json.loads(out.with_name("run_manifest.json").read_text())
    assert manifest["parameters"]["backbone"] == "efficientnet_lite0"       # the default works offline
