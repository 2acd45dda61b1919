#!/usr/bin/env python
"""The service's costs (`make bench` calls this): overhead of a job, status polling, memory while uploading.

    .venv/bin/python tests/bench/bench_service.py [--out bench_out] [--repeats 3] [--raster R]
        [--sections overhead,polling,memory] [--quick]

One run measures, against ``python -m engine serve`` started here on a free loopback port:

1. overhead: the same ``cluster`` run (the Zanzibar 0.15 m image of ../shared/data, 32 px tiles with 18 px
   overlap, K = 8, no feature cache: about 30 s here) through the CLI (``python -m engine cluster``, from start
   to exit) and through the service (from the POST that uploads the raster to the job's successful status,
   polled every 0.1 s, then every result file downloaded); median of ``--repeats`` each, the order alternating
   between rounds. Target: the service's median at most 10 % above the CLI's. Each run's time outside the
   engine's own stages (wall time minus the manifest's total) is reported too: it is what the service adds,
   and it does not move with the engine's speed when other load slows the machine.
2. polling: one client asking GET /jobs/{id} as fast as it can for 10 s while that job runs (requests per
   second, latency percentiles, and the same for 5 s with the server idle, for scale). No target.
3. memory: the RSS of the server process (VmRSS sampled every 10 ms, and VmHWM after resetting it through
   /proc/PID/clear_refs) while eight 100 MiB multipart uploads, streamed from a generated file by httpx, arrive
   at once. Each asks for a cluster with K = 1, so the server stores the upload, then refuses the job (400):
   what is measured is the upload path alone. Target: peak - before < 100 MiB.

The report goes to stdout and OUT/bench_service.txt, the figures to OUT/bench_service.json; exit 1 when a
target is missed. On a 2-core machine run it alone: the jobs use both cores. Each section says how many cores
other processes used meanwhile (bench.CpuMonitor, with the server and its engines counted as the bench's own).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from tests.bench.bench import CpuMonitor, RssSampler, contention_note, environment, median, note  # noqa: E402

MIB = 1 << 20
SHARED_DATA = Path(os.environ.get("URBANFORM_SHARED_DATA", REPO.parent / "shared" / "data"))
ZANZIBAR = SHARED_DATA / "zanzibar_tz_oam_rgb_z20_epsg3857.tif"
FINISHED = ("successful", "failed", "dismissed")
POLL_EVERY = 0.1                 # s between status requests while the overhead runs wait for their job
OVERHEAD_TARGET = 0.10           # the service at most 10 % slower than the CLI
MEMORY_TARGET_MIB = 100          # server RSS growth while the uploads arrive


# ----------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m engine serve`` in a subprocess on a free port of 127.0.0.1, with its own data folder."""

    def __init__(self, data_dir: Path, env: dict):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(data_dir.parent / f"{data_dir.name}.log", "w")      # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "engine", "serve", "--port", str(self.port),
                                      "--data-dir", str(data_dir), "--jobs", "1", "--log-level", "warning"],
                                     cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the server exited with {self.proc.returncode}; see {self.log.name}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit("the server did not answer within 60 s")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def memory_mib(pid: int) -> dict:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) / 1024
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM of ``pid`` to its current RSS (``5`` > /proc/PID/clear_refs); False where not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of the children it has waited for (the engines a server ran)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / os.sysconf("SC_CLK_TCK")


class ServerCpuMonitor(CpuMonitor):
    """bench.CpuMonitor, with the server's CPU and its finished engines' counted as this bench's own: what it
    reports as other processes is then the rest of the machine only."""

    def __init__(self, server: Server):
        self.server_pid = server.pid

    def _own(self) -> float:
        return CpuMonitor._own() + tree_cpu_s(self.server_pid)


# ----------------------------------------------------------------------------- 1 overhead


def cluster_inputs(args) -> dict:
    """The cluster job of section 1 as service inputs (the CLI gets the same as flags)."""
    return {"k": args.k, "tile_size": args.tile_size, "overlap": args.overlap, "use_cache": False}


def run_cli(args, raster: Path, work: Path, env: dict) -> dict:
    """``python -m engine cluster`` from start to exit; its seconds and the engine's own total."""
    out = work / "cluster.gpkg"
    argv = [sys.executable, "-m", "engine", "cluster", str(raster), "--out", str(out), "--k", str(args.k),
            "--tile-size", args.tile_size, "--overlap", args.overlap, "--no-cache", "--progress", "json"]
    t0 = time.perf_counter()
    # a session of its own, as the service's runner starts each engine: with the kernel's autogroup scheduling
    # a session is a CPU share, so on a shared machine both engines then compete on the same terms
    proc = subprocess.run(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the CLI failed ({proc.returncode}): {proc.stderr[-2000:]}")
    manifest = json.loads((work / "cluster_manifest.json").read_text())
    return {"seconds": seconds, "engine_total_s": manifest["timings_s"]["total"],
            "tiles": manifest["tiling"]["tiles_valid"]}


def submit(client: httpx.Client, raster: Path, inputs: dict) -> str:
    """POST an async cluster job with ``raster`` uploaded; the job's id."""
    with open(raster, "rb") as fh:
        answer = client.post("/processes/cluster/execution", headers={"Prefer": "respond-async"},
                             data={"inputs": json.dumps({"inputs": inputs})},
                             files={"raster": (raster.name, fh, "image/tiff")})
    if answer.status_code != 201:
        raise SystemExit(f"the service refused the job ({answer.status_code}): {answer.text}")
    return answer.json()["jobID"]


def run_service(client: httpx.Client, args, raster: Path, work: Path) -> dict:
    """From the POST to the successful status, then every result downloaded; seconds of each part."""
    t0 = time.perf_counter()
    job = submit(client, raster, cluster_inputs(args))
    t_posted = time.perf_counter()
    while True:
        status = client.get(f"/jobs/{job}").json()
        if status["status"] in FINISHED:
            break
        time.sleep(POLL_EVERY)
    t_done = time.perf_counter()
    if status["status"] != "successful":
        raise SystemExit(f"the service's job {job} {status['status']}: {status.get('message')}")
    links = client.get(f"/jobs/{job}/results").json()
    size = 0
    for link in links.values():
        with client.stream("GET", link["href"]) as answer, open(work / link["title"], "wb") as fh:
            answer.raise_for_status()
            for chunk in answer.iter_bytes(1 << 20):
                fh.write(chunk)
                size += len(chunk)
    t_end = time.perf_counter()
    manifest = json.loads((work / "cluster_manifest.json").read_text())
    client.delete(f"/jobs/{job}")                       # after the clock: its files go
    return {"seconds": t_end - t0, "post_s": t_posted - t0, "job_s": t_done - t_posted,
            "download_s": t_end - t_done, "downloaded_mib": size / MIB, "results": sorted(links),
            "engine_total_s": manifest["timings_s"]["total"]}


def run_overhead(server: Server, args, raster: Path, tmp: Path, env: dict) -> dict:
    cli, service = [], []
    with ServerCpuMonitor(server) as mon, httpx.Client(base_url=server.url, timeout=600) as client:
        for i in range(args.repeats):
            order = ("cli", "service") if i % 2 == 0 else ("service", "cli")
            for face in order:
                work = tmp / f"overhead_{i}_{face}"
                work.mkdir()
                if face == "cli":
                    cli.append(run_cli(args, raster, work, env))
                    note(f"round {i + 1}: CLI {cli[-1]['seconds']:.2f} s")
                else:
                    service.append(run_service(client, args, raster, work))
                    note(f"round {i + 1}: service {service[-1]['seconds']:.2f} s")
    cli_s, service_s = median(r["seconds"] for r in cli), median(r["seconds"] for r in service)
    overhead = service_s / cli_s - 1
    # the time outside the engine's own stages (start-up, imports, upload, queue, polling, download) does not
    # depend on how fast the engine ran, so it stays readable when other load slows the engine down
    for r in cli + service:
        r["outside_engine_s"] = r["seconds"] - r["engine_total_s"]
    cli_out, service_out = (median(r["outside_engine_s"] for r in runs) for runs in (cli, service))
    return {"raster": str(raster), "raster_mib": raster.stat().st_size / MIB, "inputs": cluster_inputs(args),
            "tiles": cli[0]["tiles"], "cli": cli, "service": service, "cli_median_s": cli_s,
            "service_median_s": service_s, "overhead": overhead, "meets": overhead <= OVERHEAD_TARGET,
            "cli_outside_median_s": cli_out, "service_outside_median_s": service_out,
            "outside_overhead": (service_out - cli_out) / cli_s, "contention": mon.as_dict()}


# ----------------------------------------------------------------------------- 2 polling


def poll_for(client: httpx.Client, path: str, seconds: float) -> dict:
    """GET ``path`` back to back for ``seconds``: requests per second and latency percentiles (ms)."""
    latencies, errors = [], 0
    t_end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < t_end:
        t = time.perf_counter()
        answer = client.get(path)
        latencies.append(time.perf_counter() - t)
        errors += answer.status_code != 200
    wall = time.perf_counter() - t0
    ms = sorted(x * 1000 for x in latencies)
    return {"seconds": wall, "requests": len(ms), "errors": errors, "rps": len(ms) / wall,
            "p50_ms": ms[len(ms) // 2], "p95_ms": ms[int(len(ms) * 0.95)], "max_ms": ms[-1]}


def run_polling(server: Server, args, raster: Path) -> dict:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        job = submit(client, raster, cluster_inputs(args))
        # polling starts once the engine reports its first stage: the job is really running
        while client.get(f"/jobs/{job}").json().get("stage", "") == "":
            time.sleep(0.05)
        note(f"job {job[:8]} running; polling its status for {args.poll_seconds:g} s")
        with ServerCpuMonitor(server) as mon:        # until the dismissed engine is waited for: its CPU is ours
            busy = poll_for(client, f"/jobs/{job}", args.poll_seconds)
            status = client.get(f"/jobs/{job}").json()
            t0 = time.perf_counter()
            client.delete(f"/jobs/{job}")
            dismiss_s = time.perf_counter() - t0
        idle = poll_for(client, f"/jobs/{job}", args.poll_seconds / 2)
    return {"busy": busy, "idle": idle, "job_stage_after": status.get("stage"),
            "job_progress_after": status.get("progress"), "dismiss_s": dismiss_s, "contention": mon.as_dict()}


# ----------------------------------------------------------------------------- 3 memory while uploading


def make_upload(path: Path, mib: int) -> None:
    """``mib`` MiB of random bytes (not a raster: the job is refused after the upload anyway)."""
    with open(path, "wb") as fh:
        for _ in range(mib):
            fh.write(os.urandom(MIB))


def upload(url: str, path: Path, results: list) -> None:
    """One multipart upload of ``path`` as the raster of a cluster job with K = 1 (refused after the upload)."""
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as client, open(path, "rb") as fh:
        answer = client.post("/processes/cluster/execution", headers={"Prefer": "respond-async"},
                             data={"inputs": json.dumps({"inputs": {"k": 1}})},
                             files={"raster": ("big.tif", fh, "image/tiff")})
    results.append({"status": answer.status_code, "seconds": time.perf_counter() - t0,
                    "param": answer.json().get("param") if answer.status_code == 400 else None})


def run_memory(server: Server, args, tmp: Path) -> dict:
    big = tmp / "upload.bin"
    make_upload(big, args.upload_mib)
    small = tmp / "small.bin"
    make_upload(small, 1)
    warm = []
    for _ in range(2):                                  # the multipart path imported and run once
        upload(server.url, small, warm)
    time.sleep(1)
    before = memory_mib(server.pid)
    reset = reset_peak(server.pid)
    sampler = RssSampler(server.pid, interval=0.01)
    sampler.start()
    results: list = []
    threads = [threading.Thread(target=upload, args=(server.url, big, results)) for _ in range(args.uploads)]
    with ServerCpuMonitor(server) as mon:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    after = memory_mib(server.pid)
    peak = max(sampler.peak["VmRSS"] / 1024, after["VmHWM"] if reset else 0)
    return {"uploads": args.uploads, "upload_mib": args.upload_mib, "statuses": sorted(r["status"] for r in results),
            "refused_param": sorted({str(r["param"]) for r in results}), "wall_s": wall,
            "mib_per_s": args.uploads * args.upload_mib / wall, "rss_before_mib": before["VmRSS"],
            "rss_peak_sampled_mib": sampler.peak["VmRSS"] / 1024, "hwm_reset": reset,
            "hwm_after_mib": after["VmHWM"], "rss_after_mib": after["VmRSS"], "peak_mib": peak,
            "growth_mib": peak - before["VmRSS"], "meets": peak - before["VmRSS"] < MEMORY_TARGET_MIB,
            "contention": mon.as_dict()}


# ----------------------------------------------------------------------------- report


def report(res: dict) -> str:
    lines = ["Service bench (python -m engine serve on 127.0.0.1, --jobs 1)"]
    o = res.get("overhead")
    if o:
        inp = o["inputs"]
        lines += [f"1 overhead: cluster {Path(o['raster']).name} ({o['raster_mib']:.1f} MiB), {o['tiles']} tiles of "
                  f"{inp['tile_size']} with {inp['overlap']} overlap, K={inp['k']}, no cache; "
                  f"median of {len(o['cli'])}, alternating",
                  "  round   CLI s  service s  (POST   job  download)  engine's own total s  outside it s",
                  "                                                      CLI / service         CLI / service"]
        for i, (c, s) in enumerate(zip(o["cli"], o["service"], strict=True)):
            lines.append(f"  {i + 1:5d}  {c['seconds']:6.2f}  {s['seconds']:9.2f}  ({s['post_s']:4.2f} "
                         f"{s['job_s']:6.2f}  {s['download_s']:4.2f})     {c['engine_total_s']:6.2f} / "
                         f"{s['engine_total_s']:6.2f}       {c['outside_engine_s']:4.2f} / "
                         f"{s['outside_engine_s']:4.2f}")
        verdict = "meets" if o["meets"] else "MISSES"
        lines.append(f"  median CLI {o['cli_median_s']:.2f} s, service {o['service_median_s']:.2f} s: overhead "
                     f"{o['overhead']:+.1%} ({verdict} <= {OVERHEAD_TARGET:.0%}); results "
                     f"{', '.join(o['service'][0]['results'])} ({o['service'][0]['downloaded_mib']:.1f} MiB)")
        lines.append(f"  outside the engine's stages: CLI {o['cli_outside_median_s']:.2f} s, service "
                     f"{o['service_outside_median_s']:.2f} s (medians): the service adds "
                     f"{o['outside_overhead']:+.1%} of the CLI's time, whatever the engine's speed")
        lines.append(contention_note(o["contention"]))
    p = res.get("polling")
    if p:
        b, i = p["busy"], p["idle"]
        lines += [f"2 polling GET /jobs/{{id}} back to back, one client: {b['rps']:.0f} requests/s with the job "
                  f"running (p50 {b['p50_ms']:.1f} ms, p95 {b['p95_ms']:.1f} ms, max {b['max_ms']:.0f} ms, "
                  f"{b['errors']} errors, {b['requests']} requests in {b['seconds']:.1f} s); idle server "
                  f"{i['rps']:.0f} requests/s (p50 {i['p50_ms']:.1f} ms)",
                  f"  the job reached stage {p['job_stage_after']!r} ({p['job_progress_after']} %) meanwhile; "
                  f"DELETE stopped it in {p['dismiss_s']:.2f} s"]
        lines.append(contention_note(p["contention"]))
    m = res.get("memory")
    if m:
        verdict = "meets" if m["meets"] else "MISSES"
        lines += [f"3 memory: {m['uploads']} uploads of {m['upload_mib']} MiB at once ({m['wall_s']:.1f} s, "
                  f"{m['mib_per_s']:.0f} MiB/s, answers {m['statuses']}, refused on {m['refused_param']})",
                  f"  server RSS before {m['rss_before_mib']:.0f} MiB, peak {m['peak_mib']:.0f} MiB (sampled "
                  f"{m['rss_peak_sampled_mib']:.0f}, VmHWM {m['hwm_after_mib']:.0f}"
                  f"{' after reset' if m['hwm_reset'] else ', not reset: since start'}), after "
                  f"{m['rss_after_mib']:.0f} MiB: growth {m['growth_mib']:+.1f} MiB ({verdict} < "
                  f"{MEMORY_TARGET_MIB} MiB)"]
        lines.append(contention_note(m["contention"]))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "bench_out"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--raster", type=Path, default=None,
                    help="the overhead and polling raster (default: the Zanzibar image of ../shared/data, else a "
                         "generated 4096 x 2048 px city)")
    ap.add_argument("--tile-size", default="32px")
    ap.add_argument("--overlap", default="18px")
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--poll-seconds", type=float, default=10.0)
    ap.add_argument("--uploads", type=int, default=8)
    ap.add_argument("--upload-mib", type=int, default=100)
    ap.add_argument("--sections", default="overhead,polling,memory")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: the bundled Kampala sample with 64 px tiles, 1 repeat, 4 s of polling, "
                         "4 uploads of 20 MiB")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:
        args.raster = args.raster or REPO / "resources" / "sample" / "kampala_ug_oam_rgb_z19_epsg3857.tif"
        args.tile_size, args.overlap, args.repeats, args.poll_seconds = "64px", "0px", 1, 4.0
        args.uploads, args.upload_mib = 4, 20
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "environment": environment()}
    with tempfile.TemporaryDirectory(prefix="urbanform-benchsvc-") as tmp_name:
        tmp = Path(tmp_name)
        env = {**os.environ, "URBANFORM_CACHE": str(tmp / "cache")}
        raster = args.raster
        if raster is None and ZANZIBAR.exists():
            raster = ZANZIBAR
        elif raster is None:
            from tests.synthetic import make_city

            note(f"{ZANZIBAR} is not here: a generated 4096 x 2048 px city instead")
            raster = make_city(tmp / "city.tif", zone_grid=(8, 16), zone_px=256, seed=0).raster
        if sections & {"overhead", "polling"}:
            server = Server(tmp / "service_jobs", env)
            try:
                if "overhead" in sections:
                    res["overhead"] = run_overhead(server, args, Path(raster), tmp, env)
                if "polling" in sections:
                    res["polling"] = run_polling(server, args, Path(raster))
            finally:
                server.stop()
        if "memory" in sections:
            server = Server(tmp / "service_uploads", env)        # a fresh process: its peak is this section's
            try:
                res["memory"] = run_memory(server, args, tmp)
            finally:
                server.stop()
    text = report(res)
    print(text)
    (out / "bench_service.json").write_text(json.dumps(res, indent=2, default=str) + "\n")
    (out / "bench_service.txt").write_text(text + "\n")
    missed = [name for name in ("overhead", "memory") if name in res and not res[name]["meets"]]
    if missed:
        print(f"bench_service: missed the target of {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
