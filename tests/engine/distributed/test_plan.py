"""probe --plan: a run's tile count, store size, memory per worker and time per worker count, from one partition
timed."""
from __future__ import annotations

import json

from engine.contract.tools import PLAN_WORKERS
from engine.distributed.partitions import PARTITION_BATCHES
from engine.distributed.plan import estimate, sample_positions
from tests.engine.helpers import run_cli


def test_the_estimate_follows_from_the_partition_timed():
    """512 tiles timed in 2 s: a partition of P tiles takes 2 s * P / 512, W workers share the partitions."""
    timed = {"tiles": 512, "seconds": 2.0, "load_s": 1.5, "peak_rss_bytes": 800 * 2 ** 20, "dim": 1280,
             "device": "cpu"}
    plan = estimate(10_000, timed, batch_size=32, workers=(1, 4, 16))
    per_part = 32 * PARTITION_BATCHES
    parts = -(-10_000 // per_part)
    assert (plan["partition_tiles"], plan["partitions"]) == (per_part, parts)
    assert plan["store_bytes"] == 10_000 * 1280 * 4 and plan["memory_per_worker_mib"] == 800
    part_s = 2.0 * per_part / 512
    assert plan["time_s"] == {str(w): round(1.5 + -(-parts // w) * part_s, 1) for w in (1, 4, 16)}
    assert plan["time_s"]["1"] > plan["time_s"]["4"] > plan["time_s"]["16"]
    assert plan["tiles_per_s_per_worker"] == 256


def test_the_partition_timed_is_in_the_middle_of_the_grid():
    rows, cols = sample_positions(10, 7, 20)
    assert rows.tolist()[:8] == [5] * 7 + [6] and len(rows) == 20 and cols[0] == 0
    rows, cols = sample_positions(2, 3, 100)                          # a small grid: all of it
    assert len(rows) == 6 and rows[0] == 0


def test_probe_plan_answers_json(kampala_z19):
    proc = run_cli("probe", kampala_z19, "--tile-size", "32px", "--backbone", "efficientnet_lite0", "--batch-size",
                   "16", "--plan", check=0)
    answer = json.loads(proc.stdout)
    plan = answer["plan"]
    assert plan["tiles"] == answer["tiles"] == 384 and plan["feature_dim"] == 1280 + 40 + 112   # --pool multi
    per_part = 16 * PARTITION_BATCHES
    assert plan["partition_tiles"] == per_part and plan["partitions"] == -(-384 // per_part)
    assert set(plan["time_s"]) == {str(w) for w in PLAN_WORKERS}
    assert plan["time_s"]["1"] >= plan["time_s"]["4"] >= plan["time_s"]["16"] > 0
    assert plan["memory_per_worker_mib"] > 100 and plan["timed_on"] == "this process"
