"""``python -m engine serve``: check the options, then run the service on uvicorn.

Refuses, before starting, to listen beyond this machine without ``--token-file``; a data dir it cannot write,
a bad token file or a bad duration are one ``error:`` line each (exit 2).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ..contract.progress import EXIT_BAD_INPUT
from ..contract.tools import DASK_PATTERN
from .config import MIB, ServiceConfig
from .security import is_loopback, load_tokens

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """``'7d'``, ``'12h'``, ``'30m'``, ``'90s'``, ``'0'`` (forever) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text))
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration such as 7d, 12h, 30m or 0 (keep forever)")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number above 0")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m engine serve",
        description="Serve the engine over HTTP as OGC API - Processes (docs at /docs). Jobs run as engine "
                    "processes, --jobs at a time; their state survives restarts (SQLite in --data-dir).",
        epilog="example: python -m engine serve --data-dir /srv/ufm --host 0.0.0.0 --token-file /etc/ufm/tokens")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine "
                                                      "only; any other needs --token-file)")
    p.add_argument("--port", type=positive(int), default=8000, help="port (default 8000)")
    p.add_argument("--data-dir", type=Path, default=Path("service_data"),
                   help="jobs, their files and the job table (default ./service_data)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="folder that inputs given by reference are read from (default DATA_DIR/data)")
    p.add_argument("--models", type=Path, default=None,
                   help="folder of model files clients may name by id (default DATA_DIR/models)")
    p.add_argument("--default-model", default=None,
                   help="the model id /buildings_mask uses when none is given (default: the only model there)")
    p.add_argument("--jobs", type=positive(int), default=None,
                   help="jobs run at a time (default: one per GPU, else 1); the rest wait in order")
    p.add_argument("--token-file", type=Path, default=None,
                   help="bearer tokens, one per line; required to listen beyond loopback")
    p.add_argument("--max-upload-mb", type=positive(float), default=2048.0,
                   help="largest request body in MiB (default 2048)")
    p.add_argument("--keep-results", type=parse_duration, default=parse_duration("7d"),
                   help="how long finished jobs and their files are kept (default 7d; 0 keeps them)")
    p.add_argument("--quota-gb", type=positive(float), default=None,
                   help="disk space the jobs may use; new jobs are refused (507) beyond it")
    p.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="run the jobs of the tools that take --dask (cluster, predict, sweep, segment, stats) on this "
                        "Dask cluster: 'local:N' (N worker processes on this machine) or a scheduler 'tcp://host:port' "
                        "whose workers see the data dir; default: one process per job")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    return p


def gpu_count() -> int:
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no torch or no driver: no GPU
        return 0


def config_from(args) -> ServiceConfig:
    """The checked configuration; ValueError with the ``error:`` text."""
    owners = load_tokens(args.token_file) if args.token_file else {}
    if not owners and not is_loopback(args.host):
        raise ValueError(f"--host {args.host}: refusing to listen beyond this machine without --token-file "
                         "(anyone on the network could run jobs and read results); give a token file, or "
                         "--host 127.0.0.1")
    data_dir = Path(args.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"--data-dir {data_dir}: cannot be created ({exc.strerror or exc}).") from None
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--data-dir {data_dir}: is not writable; choose another folder.")
    dask = (args.dask or "").strip() or None
    if dask is not None and not re.fullmatch(DASK_PATTERN, dask):
        raise ValueError(f"--dask {dask}: give 'local:N' (N worker processes, at least 1) or a scheduler address "
                         "'tcp://host:port'.")
    gpus = gpu_count()
    return ServiceConfig(data_dir=data_dir, data_root=args.data_root, models_dir=args.models,
                         default_model=args.default_model, jobs=args.jobs or max(1, gpus), owners=owners,
                         max_upload=int(args.max_upload_mb * MIB), keep_results=args.keep_results,
                         quota=int(args.quota_gb * 1024 * MIB) if args.quota_gb else None, gpus=gpus,
                         dask=dask)


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else EXIT_BAD_INPUT
    try:
        config = config_from(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import uvicorn

    from .app import create_app

    app = create_app(config)
    where = f"http://{args.host}:{args.port}"
    print(f"Urban Form Mapper engine at {where} (docs {where}/docs); data {config.data_dir}; "
          f"{config.jobs} job(s) at a time{f' on {config.gpus} GPU(s)' if config.gpus else ''}; "
          f"{f'Dask {config.dask}; ' if config.dask else ''}"
          f"{'bearer token required' if config.needs_token else 'no token (this machine only)'}",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
