"""Progress events and exit codes as engine.contract.progress declares them: clients read fields, never text."""
from __future__ import annotations

import io
import json

from engine.cli import main
from engine.contract import progress as contract
from engine.progress import Progress


def test_json_events_carry_structured_fields():
    out = io.StringIO()
    report = Progress("json", stream=out, min_interval=0)
    report("epoch", 1, 5, "epoch 2/5: training on 768 crops (3/12)", step=3, steps=12)
    event = json.loads(out.getvalue())
    assert event == {"stage": "epoch", "done": 1, "total": 5, "message": "epoch 2/5: training on 768 crops (3/12)",
                     contract.STEP: 3, contract.STEPS: 12}
    assert contract.stage_fraction(event) == (1 + 3 / 12) / 5


def test_the_fraction_comes_from_fields_not_from_the_message():
    worded = {"stage": "epoch", "done": 1, "total": 5, "message": "training (3/12)"}
    assert contract.stage_fraction(worded) == 1 / 5                   # the text is for people only
    assert contract.stage_fraction({**worded, "message": "reworded", "step": 6, "steps": 12}) == 1.5 / 5


def test_exit_codes_are_the_contracts(tmp_path, capsys):
    assert main(["cluster", str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o.gpkg")]) == contract.EXIT_BAD_INPUT
    assert "missing.tif" in capsys.readouterr().err
    assert (contract.EXIT_OK, contract.EXIT_FAILED, contract.EXIT_CANCELLED) == (0, 1, 130)
