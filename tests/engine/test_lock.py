"""requirements.lock is what `make setup` and the plugin's engine set-up install: it must be current."""
from __future__ import annotations

import hashlib
import re

from tests.engine.helpers import REPO


def _pins(text: str) -> dict[str, list[str]]:
    pins: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;\\]+)", line)
        if m:
            pins.setdefault(m.group(1).lower(), []).append(m.group(2))
    return pins


def test_lock_was_made_from_the_current_requirements():
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    recorded = re.search(r"^# requirements.txt sha256: ([0-9a-f]{64})$", lock, re.M)
    assert recorded, "requirements.lock has no requirements.txt hash: regenerate it with `make lock`"
    actual = hashlib.sha256((REPO / "requirements.txt").read_bytes()).hexdigest()
    assert recorded.group(1) == actual, ("requirements.txt changed after requirements.lock was made: run "
                                         "`make lock` and commit requirements.lock")


def test_every_requirement_is_pinned_with_hashes():
    lock = (REPO / "requirements.lock").read_text(encoding="utf-8")
    pins = _pins(lock)
    for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines():
        name = re.split(r"[<>=!~;\s#\[]", line.strip(), maxsplit=1)[0].lower()
        if name:
            assert name in pins, f"{name} from requirements.txt is not in requirements.lock"
    assert pins["torch"] == ["2.14.1"] and pins["torchvision"] == ["0.29.1"]
    assert all(v.startswith("1.") for v in pins["numpy"]), "numpy must stay below 2 (QGIS's osgeo)"
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in b for b in blocks if b.strip()), "every pinned package needs its hashes"


def test_every_package_the_engine_imports_is_a_requirement():
    """A package the engine imports only because another requirement pulls it in today can vanish from the
    lock when that requirement changes: each one the engine imports must be named in requirements.txt."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    declared = {norm(re.split(r"[<>=!~;\s#\[]", line.strip(), maxsplit=1)[0])
                for line in (REPO / "requirements.txt").read_text(encoding="utf-8").splitlines() if line.strip()}
    imported: dict[str, str] = {}
    for path in sorted((REPO / "engine").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "engine":
                    imported.setdefault(top, str(path.relative_to(REPO)))
    dists = packages_distributions()
    missing = {top: where for top, where in imported.items()
               if not any(norm(d) in declared for d in dists.get(top, [top]))}
    assert not missing, f"imported by the engine but not in requirements.txt (add them, then `make lock`): {missing}"
