"""Static checks of the whole checkout: pyflakes' errors (flake8 ``--select F``) in the engine, the plugin and
the tests.

Why: an undefined name or a misspelt import in a rarely taken path (an error message, a fallback, a cancel)
only fails when an analyst hits it; pyflakes finds it without running it. Deliberate exceptions carry a
``# noqa: F...`` comment that says why (an import that fails early, a pytest fixture imported from helpers).
"""
from __future__ import annotations

import subprocess
import sys

from tests.engine.helpers import REPO


def test_pyflakes_finds_nothing():
    run = subprocess.run([sys.executable, "-m", "flake8", "--select", "F", "--show-source",
                          "engine", "plugin", "tests", "__init__.py"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "No module named flake8" not in run.stderr, "flake8 is missing: make setup installs tests/requirements.txt"
    assert run.returncode == 0, f"flake8 --select F:\n{run.stdout}{run.stderr}"
