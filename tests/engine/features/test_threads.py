"""Torch's thread count follows the cores the process may really use: its CPU affinity and a cgroup quota,
unless URBANFORM_THREADS says otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.features.runtime import cgroup_cpu_quota, usable_cores
from tests.engine.helpers import REPO


def _cgroup(tmp_path, files: dict):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


@pytest.mark.parametrize("files, quota", [
    ({"cpu.max": "150000 100000\n"}, 1.5),                                          # cgroup v2, --cpus 1.5
    ({"cpu.max": "max 100000\n"}, None),                                            # v2, no limit
    ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),  # cgroup v1
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),    # v1, no limit
    ({}, None),                                                                      # no cgroup files
])
def test_cgroup_quota(tmp_path, files, quota):
    assert cgroup_cpu_quota(_cgroup(tmp_path, files)) == quota


def test_usable_cores_is_within_the_affinity():
    assert 1 <= usable_cores() <= len(os.sched_getaffinity(0))


def _threads_in_child(env_extra: dict, cpus: "set | None" = None) -> int:
    code = ("import os, sys\n"
            "cpus = eval(sys.argv[1])\n"
            "cpus and os.sched_setaffinity(0, cpus)\n"
            "from engine.features.extract import choose_device\n"
            "import torch\n"
            "choose_device('cpu')\n"
            "print(torch.get_num_threads())\n")
    env = {**os.environ, **env_extra}
    env.pop("URBANFORM_THREADS", None) if "URBANFORM_THREADS" not in env_extra else None
    out = subprocess.run([sys.executable, "-c", code, repr(cpus)], cwd=REPO, env=env, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")
def test_a_process_pinned_to_one_cpu_runs_torch_on_one_thread():
    one = {sorted(os.sched_getaffinity(0))[0]}
    assert _threads_in_child({}, one) == 1
    assert _threads_in_child({}) == usable_cores()
    assert _threads_in_child({"URBANFORM_THREADS": "1"}) == 1


def test_a_thread_count_set_before_the_extractor_is_kept():
    """A Dask worker (``--nthreads 1``) or ``--threads`` sets the count before the CNN is built; building it must
    not put the machine's usable cores back (two one-thread workers on two cores ran two threads each)."""
    code = ("from engine.distributed.worker import set_torch_threads\n"
            "set_torch_threads(1)\n"
            "from engine.features.extract import FeatureExtractor\n"
            "import torch\n"
            "FeatureExtractor('resnet18', 'none', device='cpu')\n"
            "print(torch.get_num_threads())\n")
    env = {k: v for k, v in os.environ.items() if k != "URBANFORM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert int(out.stdout.strip().splitlines()[-1]) == 1
