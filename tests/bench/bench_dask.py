#!/usr/bin/env python
"""Features on Dask: throughput with 1 and 2 workers, the distributed path's overhead, worker memory, probe --plan.

Run from the repository root (``make bench`` runs it)::

    .venv/bin/python tests/bench/bench_dask.py [--out bench_out] [--quick]

1. throughput: ``cluster`` (k-means, efficientnet_lite0 ImageNet weights, 64 px tiles, default batch) over an
   8192 px raster (a generated 2048 px city mosaicked, 16384 tiles), in one process and on Dask with 1 and 2
   workers; tiles/s of the engine's ``features`` stage and of the whole run. Warm: best of 3 rounds once the
   model is loaded and its kernels warmed up, the set-ups taking turns in each round (this process's later
   runs; the workers of two running clusters, reached by address, after a first run). Cold: one run as a user
   starts it (one process's first run;
   ``--dask local:N``, which starts its cluster, and whose workers load and warm up their model in the
   features stage). The workers share this machine's cores (cores/N torch threads each), so on 2 cores two
   workers use the cores one process uses: no speed-up is possible here; the figures show what partitioning
   costs, not what more machines give.
2. overhead of the distributed path at one worker: warm features seconds of one worker over one process
   (target: at most +15 %), and the whole run's; the cold figure for what a single small run pays.
3. memory: peak RSS of each of two workers (VmHWM; a LocalCluster started for each raster, so a peak is that
   raster's) and of the client (``python -m engine cluster --dask tcp://...``, ``wait4`` ru_maxrss) on a 2048 px,
   an 8192 px and a 16384 px raster (the city mosaicked), resnet18 (weights none) at 64 px; target: 16384 px
   within +10 % of 2048 px. The 8192 px run tells bounded caches that a small raster does not fill (GDAL's block
   cache, sized to one row of the raster's blocks; the k-means assignment's 2048-tile chunks) from growth.
4. ``probe --plan`` for an 11 gigapixel study (a VRT of 52 x 52 copies of a 2048 px city, 106496 px square):
   tile count, feature store size, memory per worker and time for 1, 4 and 16 workers, from one partition
   timed on this machine.

OpenMP waits passively (``OMP_WAIT_POLICY=PASSIVE``, set before torch is imported, and inherited by the
workers) in every set-up unless ``--omp-default``: with the default spinning wait, a 2-thread torch process on
this 2-core machine runs 4 to 10 times slower whenever another process takes a core (measured: 4096 tiles,
2.7 s idle, 11 to 30 s under another test run; 2.6 to 2.8 s with PASSIVE), which would make any comparison
here a comparison of the neighbours' load.

Figures go to stdout and OUT/bench_dask.json; exit 1 when a target is missed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.bench.bench import LAUNCHER, CpuMonitor, environment, make_city_raster, note, write_mosaic  # noqa: E402

OVERHEAD_TARGET = 0.15
MEMORY_TARGET = 0.10
STUDY_COPIES = 52                    # 52 x 52 copies of a 2048 px raster: 106496 px square, 11.3 gigapixels
PLANS = {"full": {"raster_px": 8192, "repeats": 3, "mem_small_px": 2048, "mem_large_px": 16384},
         "quick": {"raster_px": 4096, "repeats": 1, "mem_small_px": 1024, "mem_large_px": 4096}}


def cluster_once(raster: Path, work: Path, label: str, dask: "str | None", **kw) -> dict:
    """One k-means run (in this process), its engine timings."""
    from engine.tools.cluster import ClusterParams, run

    params = {"k": 8, "tile_size": "64px", "backbone": "efficientnet_lite0", "weights": "imagenet",
              "use_cache": False, "quicklook": False, "overwrite": True, **kw}
    m = run(ClusterParams(raster=str(raster), out=str(work / f"{label}.gpkg"), dask=dask, **params))
    return {"tiles": m["tiling"]["tiles_valid"], "timings_s": m["timings_s"],
            "partitions": (m.get("dask") or {}).get("runs", [{}])[0].get("partitions")}


def _warm_cluster(workers: int):
    """A LocalCluster of ``workers`` processes, each with this machine's cores shared out as its threads (so its
    model runs on them: ``engine.distributed.worker.set_torch_threads``)."""
    import logging

    from distributed import Client, LocalCluster

    threads = max(1, (os.cpu_count() or 1) // workers)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    client.wait_for_workers(workers, timeout=120)
    return cluster, client


def _summary(runs: list) -> dict:
    best = min(runs, key=lambda r: r["timings_s"]["features"])
    t = best["timings_s"]
    return {"tiles": best["tiles"], "features_s": t["features"], "total_s": t["total"], "open_s": t["open"],
            "partitions": best["partitions"], "features_tiles_per_s": round(best["tiles"] / t["features"], 1),
            "run_tiles_per_s": round(best["tiles"] / t["total"], 1),
            "runs_features_s": [r["timings_s"]["features"] for r in runs],
            "cores_busy_outside_this_process": best["cores_busy_outside_this_process"]}


def _timed(raster: Path, work: Path, label: str, dask, count: int) -> list:
    runs = []
    for i in range(count):
        note(f"throughput: {label}, run {i + 1} of {count}")
        with CpuMonitor() as mon:
            r = cluster_once(raster, work, "t", dask)
        r["cores_busy_outside_this_process"] = mon.as_dict()["other_cores"]     # (dask: the workers too)
        runs.append(r)
    return runs


def run_throughput(raster: Path, work: Path, repeats: int) -> dict:
    """Cold: what one run costs (one process's first run; ``--dask local:N``, which starts its cluster and whose
    workers load and warm up their model). Warm: best of ``repeats`` rounds once everything is loaded, the three
    set-ups taking turns in each round (this process; the workers of two running clusters, reached by address,
    after a first run each), so that a load that comes and goes on the machine hits them alike."""
    out: dict = {"cold": {}, "warm": {}}
    out["cold"]["one process"] = _summary(_timed(raster, work, "one process (cold)", None, 1))
    for n in (1, 2):
        out["cold"][f"dask local:{n}"] = _summary(_timed(raster, work, f"dask local:{n} (cold)", f"local:{n}", 1))
    clusters = {n: _warm_cluster(n) for n in (1, 2)}
    setups = {"one process": None, "dask 1 worker": clusters[1][0].scheduler_address,
              "dask 2 workers": clusters[2][0].scheduler_address}
    runs: dict = {label: [] for label in setups}
    try:
        for label, dask in setups.items():
            if dask:
                _timed(raster, work, f"{label} (warming up)", dask, 1)
        for i in range(repeats):
            for label, dask in setups.items():
                runs[label] += _timed(raster, work, f"{label}, round {i + 1} of {repeats}", dask, 1)
    finally:
        for cluster, client in clusters.values():
            client.close()
            cluster.close()
    out["warm"] = {label: _summary(r) for label, r in runs.items()}
    one, dask1 = out["warm"]["one process"], out["warm"]["dask 1 worker"]
    out["overhead_at_one_worker"] = {
        "features": round(dask1["features_s"] / one["features_s"] - 1, 3),
        "run": round(dask1["total_s"] / one["total_s"] - 1, 3),
        "cold_features": round(out["cold"]["dask local:1"]["features_s"] / out["cold"]["one process"]["features_s"]
                               - 1, 3),
        "target_features": OVERHEAD_TARGET}
    return out


def _peak_kib() -> int:
    """A worker's own peak RSS (VmHWM: its ru_maxrss would start at the forking bench process's)."""
    from engine.distributed.plan import peak_rss_bytes

    return peak_rss_bytes() // 1024


def run_memory_one(raster: Path, work: Path, label: str) -> dict:
    """Client (its own process, wait4) and worker peaks of one run on a fresh two-worker LocalCluster."""
    import logging

    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None, silence_logs=logging.CRITICAL)
    client = Client(cluster)
    try:
        client.wait_for_workers(2, timeout=120)
        before = client.run(_peak_kib)
        cmd = [sys.executable, "-m", "engine", "cluster", str(raster), "--out", str(work / f"{label}.gpkg"),
               "--k", "8", "--tile-size", "64px", "--backbone", "resnet18", "--weights", "none", "--no-cache",
               "--no-quicklook", "--overwrite", "--progress", "none", "--dask", cluster.scheduler_address]
        log = work / f"{label}.log"
        t0 = time.perf_counter()
        launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(log), *cmd], cwd=ROOT, capture_output=True,
                                  text=True, env={**os.environ, "URBANFORM_CACHE": str(work / "cache")})
        wall = time.perf_counter() - t0
        result = json.loads(launcher.stdout.splitlines()[-1])
        if result["rc"] != 0:
            raise RuntimeError(f"{label}: the CLI failed: {log.read_text()[-2000:]}")
        after = client.run(_peak_kib)
    finally:
        client.close()
        cluster.close()
    manifest = json.loads((work / f"{label}_manifest.json").read_text())
    return {"raster_px": manifest["inputs"]["width"], "tiles": manifest["tiling"]["tiles_valid"], "wall_s": wall,
            "client_peak_mib": round(result["maxrss_kib"] / 1024, 1),
            "worker_peak_mib": sorted(round(v / 1024, 1) for v in after.values()),
            "worker_idle_mib": sorted(round(v / 1024, 1) for v in before.values()),
            "command": " ".join(cmd[2:])}


def run_memory(plan: dict, tmp: Path) -> dict:
    """Peaks on the small and the large raster, and on one in between (where the bounded caches are full: GDAL's
    block cache, k-means' assignment chunk of 2048 tiles), to tell their filling from growth."""
    small = tmp / "mem_small.tif"
    make_city_raster(small, plan["mem_small_px"], seed=2)
    sizes = {"small": (small, plan["mem_small_px"]), "mid": (tmp / "mem_mid.tif", plan["mem_large_px"] // 2),
             "large": (tmp / "mem_large.tif", plan["mem_large_px"])}
    out = {}
    for label, (raster, px) in sizes.items():
        if label != "small":
            note(f"writing a {px} px raster")
            write_mosaic(raster, px, small)
        note(f"memory: {label} raster ({px} px)")
        out[label] = run_memory_one(raster, tmp, f"mem_{label}")
        if label != "small":
            raster.unlink()

    def growth(a: str, b: str) -> dict:
        return {"workers": round(max(out[b]["worker_peak_mib"]) / max(out[a]["worker_peak_mib"]) - 1, 3),
                "client": round(out[b]["client_peak_mib"] / out[a]["client_peak_mib"] - 1, 3)}

    out["growth"] = {**growth("small", "large"), "target": MEMORY_TARGET, "mid_to_large": growth("mid", "large")}
    return out


def write_study_vrt(path: Path, source: Path, copies: int) -> int:
    """A VRT mosaic of ``copies`` x ``copies`` references to ``source`` (no pixels copied); its side in px."""
    import rasterio

    with rasterio.open(source) as src:
        side, t, crs = src.width, src.transform, src.crs.to_wkt()
    n = side * copies
    bands = []
    for b in (1, 2, 3):
        sources = "".join(
            f"<SimpleSource><SourceFilename relativeToVRT=\"0\">{source}</SourceFilename>"
            f"<SourceBand>{b}</SourceBand><SrcRect xOff=\"0\" yOff=\"0\" xSize=\"{side}\" ySize=\"{side}\"/>"
            f"<DstRect xOff=\"{c * side}\" yOff=\"{r * side}\" xSize=\"{side}\" ySize=\"{side}\"/></SimpleSource>"
            for r in range(copies) for c in range(copies))
        interp = ("Red", "Green", "Blue")[b - 1]
        bands.append(f"<VRTRasterBand dataType=\"Byte\" band=\"{b}\"><ColorInterp>{interp}</ColorInterp>"
                     f"{sources}</VRTRasterBand>")
    gt = f"{t.c}, {t.a}, 0, {t.f}, 0, {t.e}"
    path.write_text(f"<VRTDataset rasterXSize=\"{n}\" rasterYSize=\"{n}\"><SRS>{crs}</SRS>"
                    f"<GeoTransform>{gt}</GeoTransform>{''.join(bands)}</VRTDataset>")
    return n


def run_plan(tmp: Path) -> dict:
    source = tmp / "study_tile.tif"
    make_city_raster(source, 2048, seed=5)
    vrt = tmp / "study_11gpx.vrt"
    side = write_study_vrt(vrt, source, STUDY_COPIES)
    cmd = [sys.executable, "-m", "engine", "probe", str(vrt), "--tile-size", "64px", "--backbone",
           "efficientnet_lite0", "--plan"]
    note(f"probe --plan on a {side} px study ({side * side / 1e9:.1f} gigapixels)")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"probe failed: {proc.stderr[-2000:]}")
    answer = json.loads(proc.stdout)
    return {"raster_px": side, "gigapixels": round(side * side / 1e9, 2), "command": " ".join(cmd[2:]),
            "plan": answer["plan"]}


def report(result: dict) -> str:
    lines = [f"Features on Dask (bench_dask.py; OMP_WAIT_POLICY={result['env']['OMP_WAIT_POLICY']}, load average at "
             f"start {result['env']['loadavg_at_start']})", ""]
    thr = result.get("throughput")
    if thr:
        lines.append(f"1. throughput, {thr['warm']['one process']['tiles']} tiles of 64 px, efficientnet_lite0 "
                     f"({result['env']['cpu_count']} cores); features stage and whole run:")
        for kind in ("warm", "cold"):
            for label, r in thr[kind].items():
                lines.append(f"   {kind} {label:15s} features {r['features_s']:6.2f} s = "
                             f"{r['features_tiles_per_s']:7.1f} tiles/s; run {r['total_s']:6.2f} s "
                             f"({r['partitions'] or '-'} partitions); cores busy outside this process "
                             f"{r['cores_busy_outside_this_process']:.2f}")
        lines.append("   (Dask workers are outside this process: with them about 2 cores is the workers alone; for one "
                     "process, above 0.2 means another load disturbed the figure)")
        o = thr["overhead_at_one_worker"]
        lines.append(f"2. overhead at one worker (warm): features {o['features']:+.1%} (target <= "
                     f"+{OVERHEAD_TARGET:.0%}), whole run {o['run']:+.1%}; cold features {o['cold_features']:+.1%}")
    mem = result.get("memory")
    if mem:
        lines.append("3. memory (resnet18 @ 64 px, two workers, a fresh cluster per raster):")
        for label in ("small", "mid", "large"):
            m = mem[label]
            lines.append(f"   {m['raster_px']:6d} px ({m['tiles']} tiles): workers {m['worker_peak_mib']} MiB "
                         f"(idle {m['worker_idle_mib']}), client {m['client_peak_mib']} MiB, {m['wall_s']:.0f} s")
        g = mem["growth"]
        lines.append(f"   large vs small: workers {g['workers']:+.1%}, client {g['client']:+.1%} (target <= "
                     f"+{MEMORY_TARGET:.0%}); large vs mid: workers {g['mid_to_large']['workers']:+.1%}, client "
                     f"{g['mid_to_large']['client']:+.1%}")
    plan = result.get("plan")
    if plan:
        p = plan["plan"]
        lines.append(f"4. probe --plan, {plan['gigapixels']} gigapixels ({plan['raster_px']} px square), 64 px tiles:")
        lines.append(f"   {p['tiles']} tiles in {p['partitions']} partitions of {p['partition_tiles']}; store "
                     f"{p['store_gib']} GiB; {p['memory_per_worker_mib']} MiB per worker; "
                     f"{p['tiles_per_s_per_worker']} tiles/s per worker ({p['device']})")
        lines.append("   time: " + ", ".join(f"{w} worker{'s' if w != '1' else ''} {s / 60:.0f} min"
                                        for w, s in p["time_s"].items()))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench_out")
    ap.add_argument("--quick", action="store_true", help="small rasters, one repeat")
    ap.add_argument("--sections", default="throughput,memory,plan")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--omp-default", action="store_true", help="leave OpenMP's wait policy as it is")
    args = ap.parse_args(argv)
    if not args.omp_default:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"          # before torch is imported (environment() does)
    plan = PLANS["quick" if args.quick else "full"]
    sections = set(args.sections.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict = {"env": {**environment(), "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset)")},
                    "mode": "quick" if args.quick else "full"}
    with tempfile.TemporaryDirectory(prefix="bench-dask-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        os.environ["URBANFORM_CACHE"] = str(tmp / "cache")
        if "throughput" in sections:
            source, raster = tmp / "city_2048.tif", tmp / "city.tif"
            make_city_raster(source, 2048, seed=1)
            write_mosaic(raster, plan["raster_px"], source)
            result["throughput"] = run_throughput(raster, tmp, plan["repeats"])
        if "memory" in sections:
            result["memory"] = run_memory(plan, tmp)
        if "plan" in sections:
            result["plan"] = run_plan(tmp)
    text = report(result)
    print(text)
    (out / "bench_dask.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "bench_dask.txt").write_text(text + "\n")
    missed = []
    if "throughput" in result and result["throughput"]["overhead_at_one_worker"]["features"] > OVERHEAD_TARGET:
        missed.append("overhead at one worker")
    if "memory" in result and max(result["memory"]["growth"]["workers"],
                                  result["memory"]["growth"]["client"]) > MEMORY_TARGET:
        missed.append("flat memory")
    if missed:
        print(f"missed: {', '.join(missed)}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
