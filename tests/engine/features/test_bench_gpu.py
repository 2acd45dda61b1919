"""``make bench-gpu`` keeps working without a GPU: its smoke plan runs every step (features model only and end
to end, a segmentation model trained and run, DeepCluster epochs, the 11-gigapixel projection) and writes the
report and the figures it says it writes."""
from __future__ import annotations

import json

from tests.bench import bench_gpu


def test_the_gpu_bench_runs_every_step_and_reports(tmp_path, capsys):
    assert bench_gpu.main(["--smoke", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "bench_gpu.json").read_text())
    assert res["plan"] == "smoke"
    f, s, d, p = res["features"], res["segment"], res["deepcluster"], res["projection"]
    assert f["tiles"] == (256 // bench_gpu.TILE_PX) ** 2 and f["model_tiles_per_s"] > 0 and f["e2e_tiles_per_s"] > 0
    assert f["ratio"] == round(f["e2e_tiles_per_s"] / f["model_tiles_per_s"], 3) or abs(
        f["ratio"] - f["e2e_tiles_per_s"] / f["model_tiles_per_s"]) < 0.01
    assert s["model_mpx_s"] > 0 and s["e2e_chip_mpx_s"] > 0 and s["encoder"] == "efficientnet_lite0"
    assert d["seconds_per_epoch_per_1000_tiles"] > 0 and d["epochs"] == 1
    # the projection follows from the measured rates
    assert p["tiles"] == int(11e9 / 64 ** 2)
    assert abs(p["features_hours_1"] - p["tiles"] / f["e2e_tiles_per_s"] / 3600) < 0.01 * p["features_hours_1"] + 0.01
    assert abs(p["features_hours_4"] * 4 - p["features_hours_1"]) < 0.05
    text = (tmp_path / "bench_gpu.txt").read_text()
    assert text.strip() == capsys.readouterr().out.strip()
    assert "11 gigapixels" in text and "DeepCluster" in text and "ratio" in text
