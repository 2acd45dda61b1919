"""What a running service was started with (``serve``'s options, checked)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

MIB = 1 << 20


@dataclass
class ServiceConfig:
    """``data_dir`` holds the job table, the jobs' folders and (by default) the data root and the models.

    ``owners``: ``{owner id: name}`` of the tokens (empty: no token needed, loopback only). ``keep_results``:
    seconds a finished job's results are kept (0: forever). ``quota``: bytes the jobs' folders may hold (None:
    no quota). ``gpus``: devices the workers share out (``CUDA_VISIBLE_DEVICES`` per worker). ``dask``: the Dask
    cluster (``serve --dask``) the jobs of the tools that declare ``--dask`` run on (None: one process each).
    """

    data_dir: Path
    data_root: Path | None = None
    models_dir: Path | None = None
    default_model: str | None = None
    jobs: int = 1
    owners: dict = field(default_factory=dict)
    max_upload: int = 2048 * MIB
    keep_results: float = 7 * 86400.0
    quota: int | None = None
    gpus: int = 0
    dask: str | None = None           # 'local:N' or 'tcp://host:port': every job of a tool with --dask gets it
    python: str = sys.executable
    grace: float = 30.0               # seconds a cancelled engine gets to clean up before it is killed
    janitor_every: float | None = None   # seconds between expiry sweeps (default: a quarter of keep_results, <= 60)

    def __post_init__(self):
        self.data_dir = Path(self.data_dir).resolve()
        self.data_root = Path(self.data_root or self.data_dir / "data").resolve()
        self.models_dir = Path(self.models_dir or self.data_dir / "models").resolve()
        if self.janitor_every is None:
            self.janitor_every = min(60.0, max(0.5, self.keep_results / 4)) if self.keep_results else 60.0

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def database(self) -> Path:
        return self.data_dir / "jobs.sqlite"

    @property
    def needs_token(self) -> bool:
        return bool(self.owners)
