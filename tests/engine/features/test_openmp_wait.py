"""The engine makes OpenMP wait passively (a spinning wait slows torch many times when another process holds a
core) before torch is imported, unless the user chose a policy."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.engine.helpers import REPO


def _policy(env: dict) -> str:
    code = "import engine, os; import torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_openmp_waits_passively_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert _policy(env) == "PASSIVE"
    assert _policy({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
