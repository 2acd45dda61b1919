#!/usr/bin/env python
"""Urban Form Mapper benchmark: feature throughput, malloc tuning and memory.

Run from the repository root::

    .venv/bin/python tests/bench/bench.py [--quick] [--out bench_out/]

It measures, in one run (compare figures only within a run):

1. model only: ``engine.features.extract.FeatureExtractor`` on random uint8 tiles,
   warm-up batches excluded, median of repeats (tiles/s);
2. end to end: ``engine.features.extract_features`` over every tile of a
   GeoTIFF on disk (reading + model), sequential and with the background
   reader thread (``overlap_reads=True``), plus reading alone; the ratio end
   to end / model only (target >= 0.9);
3. the malloc tuning gain: model-only throughput in fresh subprocesses with
   ``engine.features.runtime.tune_malloc`` on (default) and off (URBANFORM_MALLOC=default);
4. peak resident memory of the full CLI (``python -m engine cluster``) on a
   small and a large raster (target: large within +10% of small), with wall
   times, the engine's own stage timings and a per-stage split of the peak;
5. the environment: CPU, cores, torch, precision, bf16 autocast, malloc state;
6. contention: model-only throughput idle and while a busy process of its own holds one core (target: at
   most 1.5x slower), with one thread under the same load, and both with one stream of all the
   threads (URBANFORM_STREAMS=1) to show what several batches at once gain.

The report goes to stdout (and OUT/bench.txt); the same figures go to
OUT/bench.json. Progress notes go to stderr. Generated rasters live in a
temporary folder that is deleted at the end. The script re-invokes itself
with the hidden ``--worker JSON`` option for measurements that need a fresh
process (a clean allocator).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]   # the repository (tests/bench/ is below it)
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The two model cases: (backbone, tile size, weights). ImageNet weights of the
# torchvision models are not on this machine; EfficientNet-Lite0's ship in a package.
CASES = (
    {"name": "resnet18 @ 64 px", "backbone": "resnet18", "px": 64, "weights": "none"},
    {"name": "efficientnet_lite0 @ 224 px", "backbone": "efficientnet_lite0", "px": 224, "weights": "imagenet"},
)

# Sizes and repeat counts of a full run and of a --quick smoke run.
PLANS = {
    "full": {
        "e2e_raster_px": 4096,      # 4096 tiles of 64 px, 324 tiles of 224 px
        "model_warmup": 3, "model_batches_px": 1 << 22, "model_repeats": 5,
        "e2e_repeats": 3,
        "malloc_rounds": 2, "malloc_repeats": 5, "contention_rounds": 3,
        "mem_small_px": 2048, "mem_large_px": 16384,
    },
    "quick": {
        "e2e_raster_px": 1024,
        "model_warmup": 2, "model_batches_px": 1 << 21, "model_repeats": 3,
        "e2e_repeats": 2,
        "malloc_rounds": 1, "malloc_repeats": 3, "contention_rounds": 1,
        "mem_small_px": 1024, "mem_large_px": 4096,
    },
}

MIB = 1024 * 1024


def note(msg: str) -> None:
    """A progress note on stderr (stdout carries only the report)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values) -> float:
    return float(statistics.median(values))


# ----------------------------------------------------------------------------- contention


class CpuMonitor:
    """How much CPU other processes used while a block ran (benchmarks on a shared machine).

    ``other_cores``: average cores busy outside this process and its waited-for
    children (from /proc/stat minus os.times()); ``steal_cores``: time the
    hypervisor gave to other guests. On an idle 2-core machine both stay near 0;
    above ~0.2 the figures of that block are disturbed.
    """

    def __enter__(self) -> "CpuMonitor":
        self.t0, self.stat0, self.own0 = time.perf_counter(), self._stat(), self._own()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        busy1, steal1 = self._stat()
        busy0, steal0 = self.stat0
        own = self._own() - self.own0
        self.wall_s = wall
        self.other_cores = max(0.0, (busy1 - busy0) - own) / wall
        self.steal_cores = (steal1 - steal0) / wall

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 2), "other_cores": round(self.other_cores, 3),
                "steal_cores": round(self.steal_cores, 3)}

    @staticmethod
    def _stat() -> tuple[float, float]:
        """(busy seconds, steal seconds) of the whole machine since boot."""
        try:
            with open("/proc/stat", encoding="ascii") as fh:
                f = [int(x) for x in fh.readline().split()[1:]]
        except OSError:
            return 0.0, 0.0
        tick = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
        return (user + nice + system + irq + softirq) / tick, steal / tick

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system


def contention_note(mon: dict) -> str:
    """One line on how busy the rest of the machine was, with a warning when it disturbs figures."""
    line = (f"  other processes used {mon['other_cores']:.2f} cores on average "
            f"(steal {mon['steal_cores']:.2f}) during this section ({mon['wall_s']:.0f} s)")
    if mon["other_cores"] > 0.2 or mon["steal_cores"] > 0.2:
        line += "\n  WARNING: the machine was not idle; figures in this section are disturbed. Rerun when idle."
    return line


# ----------------------------------------------------------------------------- environment


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform.processor())."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict:
    """Machine and library facts that explain the figures."""
    import rasterio
    import torch

    from engine.features.extract import cpu_supports_bf16

    try:
        mem_total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MIB / 1024
    except (ValueError, OSError):
        mem_total = float("nan")
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(mem_total, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "gdal": rasterio.__gdal_version__,
        "cpu_bf16_supported": cpu_supports_bf16(),
        "URBANFORM_MALLOC": os.environ.get("URBANFORM_MALLOC", "(unset: tuned)"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# ----------------------------------------------------------------------------- model only


def autocast_probe(extractor, px: int) -> str:
    """The dtype the first convolution actually produces inside the extractor (e.g. 'bfloat16')."""
    import torch

    conv = next(m for m in extractor.model.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    handle = conv.register_forward_hook(lambda mod, inp, out: seen.append(str(out.dtype).replace("torch.", "")))
    try:
        extractor(np.zeros((1, 3, px, px), dtype=np.uint8))
    finally:
        handle.remove()
    return seen[0] if seen else "?"


def make_extractor(case: dict):
    """The FeatureExtractor of a case, built as the engine builds it (device auto, precision auto)."""
    from engine.features.extract import FeatureExtractor

    return FeatureExtractor(case["backbone"], case["weights"], device="auto")


def batch_size_for(case: dict, extractor, override: int | None) -> int:
    from engine.features.extract import default_batch_size

    return int(override or default_batch_size(case["px"], extractor.device))


def measure_model(extractor, px: int, batch_size: int, warmup: int, batches: int, repeats: int,
                  seed: int = 0) -> dict:
    """Model-only throughput: ``repeats`` timings of ``batches`` batches after ``warmup`` batches.

    Inputs are random uint8 tiles (n, 3, px, px); two arrays alternate so
    that the model does not see one buffer over and over. The batches run as
    extract_features runs them (``streams.map_batches``: on CPU several at once).
    """
    from engine.features.streams import map_batches

    rng = np.random.default_rng(seed)
    inputs = [rng.integers(0, 256, (batch_size, 3, px, px), dtype=np.uint8) for _ in range(2)]

    def run(n: int):
        for _ in map_batches(extractor, ((i, inputs[i % 2]) for i in range(n)), extractor.device):
            pass

    run(warmup)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(batches)
        rates.append(batches * batch_size / (time.perf_counter() - t0))
    return {"batch_size": batch_size, "warmup_batches": warmup, "batches_per_repeat": batches,
            "repeats": repeats, "tiles_per_s": median(rates), "tiles_per_s_all": [round(r, 1) for r in rates]}


def batches_for(plan: dict, px: int, batch_size: int) -> int:
    """Batches per timed repeat: about ``model_batches_px`` pixels, at least 2 batches."""
    return max(2, round(plan["model_batches_px"] / (px * px * batch_size)))


def extractor_facts(extractor, px: int) -> dict:
    """Device, precision and whether bf16 autocast and malloc tuning are in effect."""
    from engine.features import runtime

    conv_dtype = autocast_probe(extractor, px)
    return {"device": str(extractor.device), "precision": extractor.precision,
            "channels_last": bool(extractor.channels_last), "first_conv_output_dtype": conv_dtype,
            "bf16_autocast_active": conv_dtype == "bfloat16",
            "malloc_tuned": bool(runtime._state.get("tuned"))}


# ----------------------------------------------------------------------------- rasters


def _noise_city(size: int, seed: int) -> np.ndarray:
    """Fallback content when tests.synthetic is missing: blocky zones of textured noise, (3, h, w) uint8."""
    rng = np.random.default_rng(seed)
    zone = 256
    out = np.empty((3, size, size), dtype=np.uint8)
    yy, xx = np.mgrid[0:zone, 0:zone].astype(np.float32)
    for r in range(0, size, zone):
        for c in range(0, size, zone):
            base = rng.uniform(60, 200, 3)
            period = rng.uniform(6, 40)
            pattern = 30 * np.sign(np.sin(xx / period * 2 * np.pi + rng.uniform(0, 6))
                                   * np.sin(yy / period * 2 * np.pi + rng.uniform(0, 6)))
            block = base[:, None, None] + pattern + rng.normal(0, 12, (3, zone, zone))
            h, w = min(zone, size - r), min(zone, size - c)
            out[:, r:r + h, c:c + w] = np.clip(block[:, :h, :w], 0, 255).astype(np.uint8)
    return out


def make_city_raster(path: Path, size: int, seed: int = 0) -> str:
    """A realistic-ish uint8 RGB tiled GeoTIFF of ``size`` x ``size`` px; returns the generator used.

    Uses ``tests.synthetic.make_city`` (deflate, 256 px blocks) when it exists,
    else textured noise written the same way.
    """
    try:
        from tests.synthetic import make_city
    except ImportError:
        make_city = None
    if make_city is not None and size % 256 == 0:
        make_city(path, zone_grid=(size // 256, size // 256), zone_px=256, res=0.3, crs="EPSG:32630", seed=seed)
        return "tests.synthetic.make_city"
    import rasterio
    from affine import Affine

    data = _noise_city(size, seed)
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs="EPSG:32630",
                   transform=Affine(0.3, 0, 500000.0, 0, -0.3, 700000.0), compress="deflate",
                   tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return "textured noise (tests.synthetic missing)"


def write_mosaic(path: Path, size: int, source: Path) -> None:
    """Tile ``source`` (square, uint8 RGB) over a ``size`` x ``size`` GeoTIFF, window by window.

    The output is uint8 RGB, tiled in 512 x 512 blocks, uncompressed. Each copy
    is rotated/flipped differently so that neighbouring copies differ; only one
    copy is in memory at a time.
    """
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(source) as src:
        base = src.read()
        transform, crs = src.transform, src.crs
    side = base.shape[1]
    assert base.shape[1] == base.shape[2] and size % side == 0, "source must be square and divide size"
    profile = dict(driver="GTiff", width=size, height=size, count=3, dtype="uint8", crs=crs,
                   transform=transform, tiled=True, blockxsize=512, blockysize=512, compress="none",
                   photometric="RGB", BIGTIFF="IF_SAFER")
    n = size // side
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(n):
            for c in range(n):
                i = r * n + c
                block = np.rot90(base, k=i % 4, axes=(1, 2))
                if (i // 4) % 2:
                    block = block[:, :, ::-1]
                dst.write(np.ascontiguousarray(block), window=Window(c * side, r * side, side, side))


# ----------------------------------------------------------------------------- end to end


def engine_default_overlap(raster: Path, px: int, extractor, batch_size: int) -> bool:
    """Whether ``extract_features(overlap_reads=None)`` picks the reader thread on this machine.

    Observed, not re-derived: runs one batch with ``engine.features.extract.prefetch``
    wrapped to record whether it is called.
    """
    import engine.features.extract as F
    from engine.raster.tiling import TiledRaster

    called = []
    original = F.prefetch

    def spy(items, *a, **kw):
        called.append(True)
        return original(items, *a, **kw)

    F.prefetch = spy
    try:
        with TiledRaster(str(raster), f"{px}px") as tiled:
            rows, cols = (a[:batch_size] for a in np.nonzero(np.ones(tiled.grid.shape, dtype=bool)))
            out = np.empty((len(rows), extractor.dim), dtype=np.float32)
            F.extract_features(tiled, rows, cols, extractor, out, batch_size=batch_size)
    finally:
        F.prefetch = original
    return bool(called)


def measure_end_to_end(raster: Path, px: int, extractor, batch_size: int, repeats: int) -> dict:
    """tiles/s of extract_features over every tile of ``raster``: sequential vs reader thread, and reading alone.

    Each timed pass opens the raster afresh (so GDAL's block cache starts
    empty, as in a real run) and fills a preallocated (n, dim) array; opening
    is not timed. Modes alternate within each repeat to spread machine noise.
    """
    from engine.features.extract import extract_features, tile_batches
    from engine.raster.tiling import TiledRaster

    rates = {"sequential": [], "overlap_reads": [], "read_only": []}
    n_tiles = 0
    for _ in range(repeats):
        for mode in rates:
            with TiledRaster(str(raster), f"{px}px") as tiled:
                rows, cols = np.nonzero(np.ones(tiled.grid.shape, dtype=bool))
                n_tiles = len(rows)
                out = np.empty((n_tiles, extractor.dim), dtype=np.float32)
                t0 = time.perf_counter()
                if mode == "read_only":
                    for _start, _tiles in tile_batches(tiled, rows, cols, batch_size):
                        pass
                else:
                    extract_features(tiled, rows, cols, extractor, out, batch_size=batch_size,
                                     overlap_reads=(mode == "overlap_reads"))
                rates[mode].append(n_tiles / (time.perf_counter() - t0))
    result = {"tiles": n_tiles, "batch_size": batch_size, "repeats": repeats}
    for mode, vals in rates.items():
        result[mode] = {"tiles_per_s": median(vals), "tiles_per_s_all": [round(v, 1) for v in vals]}
    return result


def run_throughput(plan: dict, tmp: Path, batch_override: int | None) -> tuple[list, dict]:
    """Sections 1 and 2 in this process: per case, model only then end to end on one raster."""
    size = plan["e2e_raster_px"]
    raster = tmp / f"city_{size}.tif"
    note(f"generating {size} x {size} px end-to-end raster")
    t0 = time.perf_counter()
    generator = make_city_raster(raster, size)
    raster_info = {"path": raster.name, "size_px": size, "generator": generator,
                   "bytes": raster.stat().st_size, "generate_s": round(time.perf_counter() - t0, 2)}
    results = []
    for case in CASES:
        note(f"model only + end to end: {case['name']}")
        extractor = make_extractor(case)
        bs = batch_size_for(case, extractor, batch_override)
        facts = extractor_facts(extractor, case["px"])
        model = measure_model(extractor, case["px"], bs, plan["model_warmup"],
                              batches_for(plan, case["px"], bs), plan["model_repeats"])
        e2e = measure_end_to_end(raster, case["px"], extractor, bs, plan["e2e_repeats"])
        default_overlap = engine_default_overlap(raster, case["px"], extractor, bs)
        for mode in ("sequential", "overlap_reads"):
            e2e[mode]["ratio_to_model"] = e2e[mode]["tiles_per_s"] / model["tiles_per_s"]
        e2e["engine_default_mode"] = "overlap_reads" if default_overlap else "sequential"
        e2e["faster_mode"] = max(("sequential", "overlap_reads"), key=lambda m: e2e[m]["tiles_per_s"])
        results.append({"case": case, **facts, "model_only": model, "end_to_end": e2e})
        del extractor
    raster.unlink(missing_ok=True)
    return results, raster_info


# ----------------------------------------------------------------------------- malloc (subprocesses)


def worker(spec: dict) -> dict:
    """Hidden sub-command: one measurement in this (fresh) process.

    ``kind`` 'model' (default): model-only throughput; 'stages': the cluster
    CLI in-process with memory recorded at every progress event.
    """
    if spec.get("kind") == "stages":
        return cli_memory_stages(spec["argv"])
    case = spec["case"]
    extractor = make_extractor(case)
    bs = int(spec["batch_size"] or batch_size_for(case, extractor, None))
    facts = extractor_facts(extractor, case["px"])
    model = measure_model(extractor, case["px"], bs, spec["warmup"], spec["batches"], spec["repeats"])
    return {**facts, **model}


def run_worker(spec: dict, env_extra: dict) -> dict:
    """Run ``bench.py --worker`` in a fresh interpreter and parse its last stdout line."""
    env = {**os.environ, **{k: v for k, v in env_extra.items() if v is not None}}
    for k, v in env_extra.items():
        if v is None:
            env.pop(k, None)
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_malloc(plan: dict, batch_override: int | None) -> list:
    """Section 3: tuned vs default malloc, each case in fresh subprocesses, alternating order per round."""
    from engine.features.extract import choose_device, default_batch_size

    device = choose_device("auto")
    out = []
    for case in CASES:
        bs = batch_override or default_batch_size(case["px"], device)
        spec = {"case": case, "batch_size": bs, "warmup": plan["model_warmup"],
                "batches": batches_for(plan, case["px"], bs), "repeats": plan["malloc_repeats"]}
        runs = {"tuned": [], "default": []}
        for r in range(plan["malloc_rounds"]):
            order = ("tuned", "default") if r % 2 == 0 else ("default", "tuned")
            for mode in order:
                note(f"malloc {mode}: {case['name']} (round {r + 1}/{plan['malloc_rounds']})")
                with CpuMonitor() as mon:
                    res = run_worker(spec, {"URBANFORM_MALLOC": None if mode == "tuned" else "default"})
                res["other_cores"] = mon.as_dict()["other_cores"]
                runs[mode].append(res)
        tuned = median([x["tiles_per_s"] for x in runs["tuned"]])
        default = median([x["tiles_per_s"] for x in runs["default"]])
        out.append({
            "case": case, "batch_size": bs,
            **{mode: {"tiles_per_s": median([x["tiles_per_s"] for x in runs[mode]]),
                      "per_process": [round(x["tiles_per_s"], 1) for x in runs[mode]],
                      "other_cores": [x["other_cores"] for x in runs[mode]],
                      "malloc_tuned": [x["malloc_tuned"] for x in runs[mode]]} for mode in runs},
            "gain": tuned / default,
        })
    return out


# ----------------------------------------------------------------------------- memory (CLI)


class RssSampler(threading.Thread):
    """Polls /proc/PID/status of a running process for the peaks of VmHWM, VmRSS, RssAnon, RssFile."""

    FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")

    def __init__(self, pid: int, interval: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = {f: 0 for f in self.FIELDS}
        self.stop = threading.Event()

    def run(self) -> None:
        path = f"/proc/{self.pid}/status"
        while not self.stop.is_set():
            try:
                with open(path, encoding="ascii") as fh:
                    vals = {}
                    for line in fh:
                        key = line.split(":", 1)[0]
                        if key in self.FIELDS:
                            vals[key] = int(line.split()[1])
            except (OSError, ValueError, IndexError):
                break
            if not vals:
                break
            for k, v in vals.items():
                self.peak[k] = max(self.peak[k], v)
            self.stop.wait(self.interval)


def proc_status() -> dict:
    """VmHWM, VmRSS, RssAnon and RssFile of this process in MiB (from /proc/self/status)."""
    out = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":", 1)[0]
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


class StageRecorder:
    """Stands in for engine.progress.Progress: snapshots memory at every progress event.

    For each stage it keeps the snapshot when the stage starts and the
    largest RssAnon/RssFile seen during it; VmHWM (the peak so far) at the
    start of the next stage is the peak up to the end of this one.
    """

    def __init__(self, mode: str = "none", *a, **kw):
        self.stages: list[dict] = []

    def __call__(self, stage: str, done: int = 0, total: int = 0, message: str = "", **fields) -> None:
        snap = proc_status()
        if not self.stages or self.stages[-1]["stage"] != stage:
            self.stages.append({"stage": stage, "start": snap, "max_anon": 0.0, "max_file": 0.0})
        cur = self.stages[-1]
        cur["max_anon"] = max(cur["max_anon"], snap.get("RssAnon", 0.0))
        cur["max_file"] = max(cur["max_file"], snap.get("RssFile", 0.0))

    def stage(self, name: str):
        return lambda done, total, message="": self(name, done, total, message)

    def close(self) -> None:
        pass


def cli_memory_stages(argv: list) -> dict:
    """Run ``python -m engine`` with ``argv`` in this process; memory at the end of each stage.

    The CLI's own main() runs unchanged; only its Progress class is swapped
    for StageRecorder (so ``--progress`` is ignored).
    """
    import engine.cli
    import engine.progress

    recorders = []

    def make(*a, **kw):
        recorders.append(StageRecorder(*a, **kw))
        return recorders[-1]

    before = proc_status()
    engine.progress.Progress = make
    rc = engine.cli.main(argv)
    end = proc_status()
    if rc != 0:
        raise RuntimeError(f"CLI returned {rc}")
    stages = recorders[0].stages
    rows = [{"stage": "start (imports)", "hwm_mib": before["VmHWM"], "anon_mib": before["RssAnon"],
             "file_mib": before["RssFile"]}]
    for i, st in enumerate(stages):
        nxt = stages[i + 1]["start"] if i + 1 < len(stages) else end
        rows.append({"stage": st["stage"], "hwm_mib": nxt["VmHWM"], "rss_mib": nxt["VmRSS"],
                     "anon_mib": max(st["max_anon"], nxt["RssAnon"]),
                     "file_mib": max(st["max_file"], nxt["RssFile"])})
    return {"stages": rows, "end": end}


def cli_argv(raster: Path, out: Path, cache: Path) -> list:
    """The benchmarked cluster command (arguments after ``python -m engine``)."""
    return ["cluster", str(raster), "--out", str(out), "--k", "8", "--tile-size", "64px", "--weights", "none",
            "--no-quicklook", "--no-cache", "--progress", "none", "--overwrite", "--cache-dir", str(cache)]


def run_cli_stages(raster: Path, work: Path, label: str) -> dict:
    """The same CLI command in a fresh worker process, with memory recorded per stage."""
    out, cache, tmpdir = work / f"{label}_stages.gpkg", work / f"cache_{label}", work / f"tmp_{label}"
    cache.mkdir(exist_ok=True)
    tmpdir.mkdir(exist_ok=True)
    return run_worker({"kind": "stages", "argv": cli_argv(raster, out, cache)}, {"TMPDIR": str(tmpdir)})


# A tiny process that starts the CLI and reports its rusage. Linux carries a
# process's RSS high-water mark across fork and exec (the child's ru_maxrss
# starts at the RSS of the process it was forked from: a `python -c pass`
# started from a process holding 1 GiB reports ~1 GiB), so forking the CLI
# straight from this bench process, which holds models and rasters by now,
# would report the bench's RSS. This launcher imports nothing heavy (~10 MiB).
LAUNCHER = """
import json, os, sys
log, cmd = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.execv(cmd[0], cmd)
print(pid, flush=True)
_, status, ru = os.wait4(pid, 0)
own = open("/proc/self/status").read().split("VmHWM:")[1].split()[0]
print(json.dumps({"rc": os.waitstatus_to_exitcode(status), "maxrss_kib": ru.ru_maxrss,
                  "launcher_hwm_kib": int(own)}), flush=True)
"""


def run_cli_measured(raster: Path, work: Path, label: str) -> dict:
    """Run the cluster CLI on ``raster`` in its own process; peak RSS from wait4 plus /proc sampling.

    The CLI is started by LAUNCHER (see there why), which reports its
    ru_maxrss; a thread samples the CLI's /proc status every 50 ms meanwhile.
    """
    out = work / f"{label}.gpkg"
    cache = work / f"cache_{label}"
    tmpdir = work / f"tmp_{label}"
    cache.mkdir(exist_ok=True)
    tmpdir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "engine", *cli_argv(raster, out, cache)]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    log = work / f"{label}.log"
    t0 = time.perf_counter()
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, str(log), *cmd], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
    pid = int(launcher.stdout.readline())
    sampler = RssSampler(pid)
    sampler.start()
    result = json.loads(launcher.stdout.readline())
    wall = time.perf_counter() - t0
    launcher.wait()
    sampler.stop.set()
    sampler.join()
    if result["rc"] != 0:
        raise RuntimeError(f"CLI failed on {raster.name} ({result['rc']}): {log.read_text()[-2000:]}")
    manifest = json.loads(out.with_name(f"{label}_manifest.json").read_text())
    timings = manifest.get("timings_s", {})
    return {
        "raster_px": manifest["inputs"]["width"], "raster_bytes": raster.stat().st_size,
        "tiles": manifest["tiling"]["tiles_valid"], "command": "python -m engine " + " ".join(cmd[3:]),
        "maxrss_mib": result["maxrss_kib"] / 1024, "launcher_hwm_mib": result["launcher_hwm_kib"] / 1024,
        "wall_s": wall, "sampled_peak_mib": {k: v / 1024 for k, v in sampler.peak.items()},
        "timings_s": timings,
        "features_device": manifest["features"]["device"], "precision": manifest["features"]["precision"],
    }


def run_memory(plan: dict, tmp: Path, stages: bool = True) -> dict:
    """Section 4: CLI peak RSS on a small and a large generated raster (same content, same format)."""
    small, large = plan["mem_small_px"], plan["mem_large_px"]
    base = tmp / f"base_{small}.tif"
    note(f"generating {small} px base city and the {small} / {large} px memory rasters")
    make_city_raster(base, small, seed=1)
    rasters = {}
    for size in (small, large):
        rasters[size] = tmp / f"mosaic_{size}.tif"
        t0 = time.perf_counter()
        write_mosaic(rasters[size], size, base)
        note(f"  {size} px raster: {rasters[size].stat().st_size / MIB:.0f} MiB in {time.perf_counter() - t0:.1f} s")
    base.unlink()
    runs = {}
    for size in (small, large):
        note(f"CLI cluster on {size} x {size} px")
        runs[str(size)] = run_cli_measured(rasters[size], tmp, f"mem_{size}")
        note(f"  peak {runs[str(size)]['maxrss_mib']:.0f} MiB, {runs[str(size)]['wall_s']:.1f} s")
        if stages:
            note(f"CLI cluster on {size} x {size} px again, in-process, memory per stage")
            runs[str(size)]["stages"] = run_cli_stages(rasters[size], tmp, f"mem_{size}")["stages"]
        rasters[size].unlink()
    ratio = runs[str(large)]["maxrss_mib"] / runs[str(small)]["maxrss_mib"]
    return {"small_px": small, "large_px": large, "runs": runs, "ratio": ratio, "within_10pct": ratio <= 1.10}


# ----------------------------------------------------------------------------- report


def fmt_case_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  " + "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in  # noqa: E731
                                      enumerate(zip(r, widths)))
    return "\n".join([line(header), "  " + "  ".join("-" * w for w in widths), *map(line, rows)])


def report_env(env: dict, args, mode: str) -> str:
    return "\n".join([
        f"Urban Form Mapper benchmark ({mode} run, {time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "Environment",
        f"  CPU            {env['cpu_model']} ({env['cpu_count']} cores), {env['memory_gib']} GiB RAM",
        f"  Python         {env['python']} on {env['platform']}",
        f"  torch          {env['torch']} ({env['torch_threads']} threads), numpy {env['numpy']}, "
        f"GDAL {env['gdal']}",
        f"  CPU bf16       {'supported' if env['cpu_bf16_supported'] else 'not supported'}",
        f"  URBANFORM_MALLOC  {env['URBANFORM_MALLOC']}",
        f"  load average   {' '.join(map(str, env['loadavg_at_start']))} at start (1, 5, 15 min)",
        f"  batch size     {args.batch_size or 'engine default (default_batch_size)'}",
    ])


def report_throughput(results: list, raster: dict) -> str:
    lines = ["", "1+2. Throughput (tiles/s, median of repeats; model only excludes warm-up batches)",
             f"  end-to-end raster: {raster['size_px']} x {raster['size_px']} px uint8 RGB GeoTIFF "
             f"({raster['bytes'] / MIB:.0f} MiB, {raster['generator']})", ""]
    rows = []
    for r in results:
        m, e = r["model_only"], r["end_to_end"]
        rows.append([r["case"]["name"], r["case"]["weights"], m["batch_size"], e["tiles"],
                     f"{r['precision']}{' (autocast on)' if r['bf16_autocast_active'] else ''}",
                     f"{m['tiles_per_s']:.0f}", f"{e['read_only']['tiles_per_s']:.0f}",
                     f"{e['sequential']['tiles_per_s']:.0f}", f"{e['sequential']['ratio_to_model']:.2f}",
                     f"{e['overlap_reads']['tiles_per_s']:.0f}", f"{e['overlap_reads']['ratio_to_model']:.2f}"])
    lines.append(fmt_case_table(rows, ["case", "weights", "batch", "tiles", "precision", "model",
                                       "read only", "e2e seq", "ratio", "e2e thread", "ratio"]))
    lines += ["  model = FeatureExtractor on random tiles; read only = tile_batches alone; e2e = extract_features",
              "  (seq: overlap_reads=False, thread: overlap_reads=True); ratio = e2e / model.",
              ""]
    for r in results:
        e = r["end_to_end"]
        ok = "meets" if e[e["engine_default_mode"]]["ratio_to_model"] >= 0.9 else "MISSES"
        if e["tiles"] < 4 * e["batch_size"]:
            ok += "; too few batches for a meaningful ratio"
        lines.append(f"  {r['case']['name']}: engine default = {e['engine_default_mode']}, faster here = "
                     f"{e['faster_mode']}; default end-to-end/model = "
                     f"{e[e['engine_default_mode']]['ratio_to_model']:.2f} ({ok} target >= 0.90)")
        lines.append(f"    device {r['device']}, first conv output {r['first_conv_output_dtype']}, "
                     f"channels_last {r['channels_last']}, malloc tuned {r['malloc_tuned']}; "
                     f"model repeats {r['model_only']['tiles_per_s_all']}")
    return "\n".join(lines)


def report_malloc(results: list) -> str:
    lines = ["", "3. malloc tuning (model only, fresh process per measurement; "
                 "default = URBANFORM_MALLOC=default)", ""]
    rows = [[r["case"]["name"], r["batch_size"], f"{r['tuned']['tiles_per_s']:.0f}",
             f"{r['default']['tiles_per_s']:.0f}", f"{r['gain']:.2f}x",
             " / ".join(f"{v:.0f}" for v in r["tuned"]["per_process"]),
             " / ".join(f"{v:.0f}" for v in r["default"]["per_process"]),
             f"{max(r['tuned']['other_cores'] + r['default']['other_cores']):.2f}"] for r in results]
    lines.append(fmt_case_table(rows, ["case", "batch", "tuned", "default", "gain", "tuned runs", "default runs",
                                       "max other cores"]))
    states = {(r["case"]["name"], m): r[m]["malloc_tuned"] for r in results for m in ("tuned", "default")}
    if any(not all(v) for (_, m), v in states.items() if m == "tuned") or \
            any(any(v) for (_, m), v in states.items() if m == "default"):
        lines.append(f"  WARNING: tune_malloc() state did not follow the environment: {states}")
    return "\n".join(lines)


def report_memory(mem: dict) -> str:
    lines = ["", "4. Peak resident memory of `python -m engine cluster` (K=8, 64 px, resnet18, weights none, "
                 "--no-cache, --no-quicklook)", ""]
    rows = []
    for size, r in mem["runs"].items():
        sp = r["sampled_peak_mib"]
        t = r["timings_s"]
        rows.append([f"{size} x {size}", f"{r['raster_bytes'] / MIB:.0f}", r["tiles"], f"{r['maxrss_mib']:.0f}",
                     f"{sp['VmHWM']:.0f}", f"{sp['RssAnon']:.0f}", f"{sp['RssFile']:.0f}", f"{r['wall_s']:.1f}",
                     " ".join(f"{k} {t[k]:.1f}" for k in ("open", "scan", "features", "cluster", "write") if k in t)])
    lines.append(fmt_case_table(rows, ["raster px", "MiB", "tiles", "peak RSS", "sampled HWM", "anon", "file",
                                       "wall s",
                                       "engine stage timings (s)"]))
    verdict = "within" if mem["within_10pct"] else "EXCEEDS"
    lines += ["", f"  large / small peak RSS = {mem['ratio']:.3f} ({verdict} the +10% target)",
              "  peak RSS = ru_maxrss of the CLI process (wait4 in a ~"
              f"{max(r['launcher_hwm_mib'] for r in mem['runs'].values()):.0f} MiB launcher); "
              "sampled HWM = its VmHWM read every 50 ms;",
              "  anon/file = sampled peaks of RssAnon/RssFile (file-backed: shared libraries and mapped files)"]
    staged = {size: r["stages"] for size, r in mem["runs"].items() if r.get("stages")}
    if staged:
        lines += ["", "  Memory at the end of each stage (MiB; the same command run in-process with progress "
                      "events recorded):"]
        sizes = list(staged)
        names = [x["stage"] for x in staged[sizes[0]]]
        rows = []
        for name in names:
            row = [name]
            for size in sizes:
                x = next((y for y in staged[size] if y["stage"] == name), None)
                row += [f"{x['hwm_mib']:.0f}", f"{x['anon_mib']:.0f}", f"{x['file_mib']:.0f}"] if x else ["-"] * 3
            rows.append(row)
        header = ["stage"]
        for size in sizes:
            header += [f"{size}: peak", "anon", "file"]
        lines.append(fmt_case_table(rows, header))
        lines.append("  (peak = VmHWM, the process's RSS high-water mark up to the end of the stage; anon/file = "
                     "largest RssAnon/RssFile seen in the stage)")
        lines.append("  (for scale: the features of " + " and ".join(
            f"{r['tiles']} tiles take {r['tiles'] * 512 * 4 / MIB:.0f} MiB" for r in mem["runs"].values())
            + " as float32 x 512)")
        gaps = ", ".join(f"{r['maxrss_mib'] - r['stages'][-1]['hwm_mib']:+.0f} MiB ({size} px)"
                         for size, r in mem["runs"].items() if r.get("stages"))
        lines.append(f"  CLI peak RSS minus the in-process peak at the end of the last stage: {gaps}; a positive gap")
        lines.append("  is memory touched after the last stage, i.e. at interpreter exit (torch's libraries fault in "
                     "file-backed pages")
        lines.append("  while shutting down, whatever the raster size).")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


# ----------------------------------------------------------------------------- 6 contention
BUSY_LOOP = "import time\nend = time.monotonic() + 600\nwhile time.monotonic() < end:\n    pass\n"


def run_contention(plan: dict, batch_override: int | None) -> dict:
    """Section 6: model-only throughput (efficientnet_lite0 at 64 px, the clustering default) with the engine's
    own thread count, idle and while a busy process of the bench's own holds one core, each in a fresh process,
    alternating; the slowdown is idle / loaded (target <= 1.5). Also the same under load with one thread, to
    show what the engine's choice costs or saves."""
    from engine.features.runtime import usable_cores
    from engine.features.streams import stream_plan

    case = {"name": "efficientnet_lite0 @ 64 px", "backbone": "efficientnet_lite0", "px": 64, "weights": "imagenet"}
    spec = {"case": case, "batch_size": batch_override, "warmup": plan["model_warmup"],
            "batches": max(2, round(plan["model_batches_px"] / (64 * 64 * 256))), "repeats": plan["model_repeats"]}
    env = {"idle": {}, "loaded": {}, "loaded_1_thread": {"URBANFORM_THREADS": "1"},
           "idle_1_stream": {"URBANFORM_STREAMS": "1"}, "loaded_1_stream": {"URBANFORM_STREAMS": "1"}}
    rates: dict = {mode: [] for mode in env}
    for _ in range(plan["contention_rounds"]):
        for mode in rates:
            load = subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) if mode.startswith("loaded") else None
            try:
                time.sleep(0.2 if load else 0)
                extra = {"URBANFORM_THREADS": None, "URBANFORM_STREAMS": None, **env[mode]}
                rates[mode].append(run_worker(spec, extra)["tiles_per_s"])
            finally:
                if load is not None:
                    load.kill()
                    load.wait()
    med = {mode: median(v) for mode, v in rates.items()}
    return {"case": case["name"], "threads": usable_cores(), "streams": list(stream_plan("cpu", usable_cores())),
            "tiles_per_s": med, "tiles_per_s_all": {m: [round(r, 1) for r in v] for m, v in rates.items()},
            "slowdown": round(med["idle"] / med["loaded"], 3),
            "slowdown_1_thread": round(med["idle"] / med["loaded_1_thread"], 3),
            "slowdown_1_stream": round(med["idle_1_stream"] / med["loaded_1_stream"], 3),
            "streams_gain_idle": round(med["idle"] / med["idle_1_stream"], 3),
            "streams_gain_loaded": round(med["loaded"] / med["loaded_1_stream"], 3)}


def report_contention(c: dict) -> str:
    ok = "meets" if c["slowdown"] <= 1.5 else "MISSES"
    t = c["tiles_per_s"]
    streams, per = c["streams"]
    return (f"\nContention ({c['case']}, model only, {c['threads']} threads as {streams} streams of {per}, fresh "
            f"processes): idle {t['idle']:,.0f} tiles/s; while a busy process holds one core {t['loaded']:,.0f} "
            f"tiles/s: slowdown {c['slowdown']:.2f}x ({ok} the 1.5x target); one thread under the same load "
            f"{t['loaded_1_thread']:,.0f} tiles/s ({c['slowdown_1_thread']:.2f}x).\n"
            f"  One stream of all {c['threads']} threads (URBANFORM_STREAMS=1, the engine before streams): idle "
            f"{t['idle_1_stream']:,.0f}, loaded {t['loaded_1_stream']:,.0f} tiles/s ({c['slowdown_1_stream']:.2f}x); "
            f"streams gain {c['streams_gain_idle']:.2f}x idle, {c['streams_gain_loaded']:.2f}x loaded.")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Benchmark feature throughput, malloc tuning and CLI memory.")
    p.add_argument("--quick", action="store_true", help="small rasters and few repeats (a smoke run, < 2 min)")
    p.add_argument("--out", default="bench_out", help="folder for bench.json and bench.txt (default bench_out/)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per batch for every case (default: engine.features.extract.default_batch_size)")
    p.add_argument("--sections", default="throughput,malloc,memory,contention",
                   help="comma-separated subset of throughput,malloc,memory,contention (default: all)")
    p.add_argument("--no-stages", action="store_true",
                   help="skip the second, per-stage memory run of the CLI (saves about a minute)")
    p.add_argument("--tmp", default=None, help="folder for the temporary rasters (default: the system temp)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    mode = "quick" if args.quick else "full"
    plan = PLANS[mode]
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    unknown = sections - {"throughput", "malloc", "memory", "contention"}
    if unknown:
        raise SystemExit(f"--sections: unknown section(s) {', '.join(sorted(unknown))}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    report = []

    def emit(text: str) -> None:
        report.append(text)
        print(text, flush=True)

    env = environment()
    data = {"mode": mode, "plan": plan, "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "environment": env}
    emit(report_env(env, args, mode))
    with tempfile.TemporaryDirectory(prefix="urbanform-bench-", dir=args.tmp) as tmp_name:
        tmp = Path(tmp_name)
        if "throughput" in sections:
            with CpuMonitor() as mon:
                data["throughput"], data["e2e_raster"] = run_throughput(plan, tmp, args.batch_size)
            data["contention_throughput"] = mon.as_dict()
            emit(report_throughput(data["throughput"], data["e2e_raster"]))
            emit(contention_note(data["contention_throughput"]))
        if "malloc" in sections:
            with CpuMonitor() as mon:
                data["malloc"] = run_malloc(plan, args.batch_size)
            data["contention_malloc"] = mon.as_dict()
            emit(report_malloc(data["malloc"]))
            emit(contention_note(data["contention_malloc"]))
        if "memory" in sections:
            with CpuMonitor() as mon:
                data["memory"] = run_memory(plan, tmp, stages=not args.no_stages)
            data["contention_memory"] = mon.as_dict()
            emit(report_memory(data["memory"]))
            emit(contention_note(data["contention_memory"]))
        if "contention" in sections:
            data["contention"] = run_contention(plan, args.batch_size)
            emit(report_contention(data["contention"]))
    data["wall_s"] = time.perf_counter() - t_start
    emit(f"\nBench wall time: {data['wall_s']:.0f} s. Figures: {out_dir / 'bench.json'}")
    (out_dir / "bench.json").write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    (out_dir / "bench.txt").write_text("\n".join(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
