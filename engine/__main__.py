"""``python -m engine``: see engine/cli/ (the CLI built from engine.contract.tools)."""
import sys

from .cli import main

sys.exit(main(entry_point=True))
