"""The sweep's figures as PNG: metric curves against K, cluster lineage across K, PCA scatters.

Figures are drawn with matplotlib's object API on an Agg canvas (no pyplot
state, no display needed), so they render the same from the CLI, the plugin's
subprocess and tests. Colours come from ``engine.style``: cluster ``i`` has the
same colour here as on the maps, and since the sweep makes ids consistent
across K, a colour follows one place through every panel.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..style import cluster_color

METRIC_PANELS = (
    ("silhouette", "silhouette (higher is better)"),
    ("calinski_harabasz", "Calinski-Harabasz (higher is better)"),
    ("davies_bouldin", "Davies-Bouldin (lower is better)"),
    ("nmi_prev", "NMI with the previous K"),
    ("ari_prev", "ARI with the previous K"),
)
MAX_SCATTER_POINTS = 3000
MAX_PCA_PANELS = 6


def _integer_k(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _figure(width: float, height: float, dpi: int = 100):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> None:
    fig.savefig(str(path), format="png")


def _title(ax, text: str, fontsize: float) -> None:
    """An axes title at a fixed height: matplotlib otherwise measures every tick label to place it (a sixth
    of the sweep's drawing time)."""
    ax.set_title(text, fontsize=fontsize, y=1.0, pad=4)


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def plot_metrics(path, rows: list[dict], sizes: list[str]) -> None:
    """Metric curves against K, one line per tile size, plus agreement across tile sizes.

    ``rows``: the metrics CSV rows (dicts with tile_size, k and the metric
    columns; agreement columns are ``nmi_<larger size>``/``ari_<larger size>``).
    """
    fig = _figure(13, 7.5)
    axes = fig.subplots(2, 3).ravel()
    for ax, (key, title) in zip(axes, METRIC_PANELS):
        for i, size in enumerate(sizes):
            pts = sorted((int(r["k"]), _num(r.get(key))) for r in rows if r["tile_size"] == size)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=size,
                        color=f"C{i}")
        _title(ax, title, 9)
        _integer_k(ax)
        ax.set_xlabel("K", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, title="tile size", title_fontsize=7)
    ax = axes[len(METRIC_PANELS)]
    drawn = 0
    for small in sizes:
        for large in sizes:
            key = f"ari_{large}"
            pts = sorted((int(r["k"]), _num(r.get(key))) for r in rows
                         if r["tile_size"] == small and not math.isnan(_num(r.get(key))))
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=f"{small} vs {large}",
                        color=f"C{drawn + len(sizes)}")
                drawn += 1
    _title(ax, "ARI across tile sizes (same K)", 9)
    _integer_k(ax)
    ax.set_xlabel("K", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "one tile size only", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    fig.suptitle("Sensitivity sweep: clustering metrics against K", fontsize=11)
    fig.subplots_adjust(left=0.05, right=0.985, bottom=0.07, top=0.91, wspace=0.22, hspace=0.32)
    _save(fig, path)


def _column_order(counts_prev_order: list[int] | None, table: np.ndarray | None, ids: np.ndarray) -> list[int]:
    """Order of this column's clusters: under their main parent's position, then by id (fewer crossings)."""
    if counts_prev_order is None or table is None:
        return [int(i) for i in ids]
    pos = {c: p for p, c in enumerate(counts_prev_order)}
    key = []
    for j in ids:
        col = table[:, j]
        parent = int(np.argmax(col)) if col.sum() else -1
        key.append((pos.get(parent, len(pos)), int(j)))
    return [int(j) for _, j in sorted(zip(key, ids))]


def plot_lineage(path, labels_by_k: dict[int, np.ndarray], title: str = "") -> None:
    """Alluvial diagram: a column of stacked bars per K, flows between successive K by shared tiles.

    ``labels_by_k``: consistent ids (see ``sweep_metrics.consistent_labels``),
    each array labelling the same tiles. Bar ``i`` and the flows into it have
    cluster ``i``'s map colour.
    """
    from matplotlib.collections import PolyCollection

    from .sweep_metrics import contingency

    ks = sorted(labels_by_k)
    n = len(next(iter(labels_by_k.values()))) if ks else 0
    fig = _figure(max(6.0, 1.1 * len(ks) + 2), 6.5)
    ax = fig.add_subplot(1, 1, 1)
    bar_w, gap_total = 0.18, 0.08
    positions: dict[int, dict[int, tuple[float, float]]] = {}
    orders: dict[int, list[int]] = {}
    prev_k = None
    for x, k in enumerate(ks):
        lab = labels_by_k[k]
        kk = int(lab.max(initial=-1)) + 1
        counts = np.bincount(lab, minlength=kk)
        ids = np.flatnonzero(counts)
        table = None
        if prev_k is not None:
            pl = labels_by_k[prev_k]
            table = contingency(pl, lab, int(pl.max(initial=-1)) + 1, kk)
        order = _column_order(orders.get(prev_k), table, ids)
        orders[k] = order
        gap = gap_total / max(len(order) - 1, 1)
        y = 1.0 + gap_total / 2 if len(order) > 1 else 1.0
        positions[k] = {}
        for j in order:
            h = counts[j] / max(n, 1)
            positions[k][j] = (y - h, y)
            ax.add_patch(_rect(x - bar_w / 2, y - h, bar_w, h, cluster_color(j)))
            if h > 0.025:
                ax.text(x, y - h / 2, str(j), ha="center", va="center", fontsize=7, color="black")
            y -= h + gap
        prev_k = k
    # flows
    polys, colors = [], []
    t = np.linspace(0, 1, 24)
    s = t * t * (3 - 2 * t)
    for x in range(len(ks) - 1):
        ka, kb = ks[x], ks[x + 1]
        la, lb = labels_by_k[ka], labels_by_k[kb]
        table = contingency(la, lb, int(la.max(initial=-1)) + 1, int(lb.max(initial=-1)) + 1)
        out_y = {a: positions[ka][a][1] for a in orders[ka]}      # fill each bar from the top
        in_y = {b: positions[kb][b][1] for b in orders[kb]}
        flows = []
        for a in orders[ka]:
            for b in orders[kb]:
                if table[a, b]:
                    flows.append((a, b))
        # leave each source in the order of the targets, enter each target in the order of the sources
        src_rank = {b: i for i, b in enumerate(orders[kb])}
        dst_rank = {a: i for i, a in enumerate(orders[ka])}
        a_top = {}
        for a, b in sorted(flows, key=lambda f: (dst_rank[f[0]], src_rank[f[1]])):
            h = table[a, b] / max(n, 1)
            a_top[(a, b)] = out_y[a]
            out_y[a] -= h
        for a, b in sorted(flows, key=lambda f: (src_rank[f[1]], dst_rank[f[0]])):
            h = table[a, b] / max(n, 1)
            y0, y1 = a_top[(a, b)], in_y[b]
            in_y[b] -= h
            xs = x + bar_w / 2 + t * (1 - bar_w)
            top = y0 + (y1 - y0) * s
            polys.append(np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], (top - h)[::-1]], 1)]))
            colors.append(cluster_color(b))
    if polys:
        ax.add_collection(PolyCollection(polys, facecolors=colors, edgecolors="none", alpha=0.45))
    ax.set_xlim(-0.5, len(ks) - 0.5)
    ax.set_ylim(-0.02 - gap_total / 2, 1.02 + gap_total / 2)
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([f"K={k}" for k in ks], fontsize=8)
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    _title(ax, title or "cluster lineage across K", 10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.07, top=0.93)
    _save(fig, path)


def _rect(x, y, w, h, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=color, edgecolor="white", linewidth=0.5)


def _rgba(n: int) -> np.ndarray:
    from matplotlib.colors import to_rgba

    return np.array([to_rgba(cluster_color(i)) for i in range(n)])


def pick_panels(ks: list[int], most: int = MAX_PCA_PANELS) -> list[int]:
    """At most ``most`` of the K values, evenly spread, always the first and the last."""
    ks = sorted(ks)
    if len(ks) <= most:
        return ks
    idx = np.unique(np.rint(np.linspace(0, len(ks) - 1, most)).astype(int))
    return [ks[i] for i in idx]


def plot_pca(path, scores, labels_by_k: dict[int, np.ndarray], title: str = "", seed: int = 0) -> None:
    """Small multiples of the first two PCA scores coloured by cluster, one panel per K (subsampled).

    ``scores``: (n, 2) shared by every K (k-means: one PCA per tile size), or
    a dict K -> (n, 2) when each K has its own features (DeepCluster).
    """
    ks = pick_panels(list(labels_by_k))
    n = len(next(iter(labels_by_k.values())))
    sample = np.arange(n)
    if n > MAX_SCATTER_POINTS:
        sample = np.sort(np.random.default_rng(seed).choice(n, MAX_SCATTER_POINTS, replace=False))
    cols = min(3, len(ks))
    nrows = math.ceil(len(ks) / cols)
    fig = _figure(3.4 * cols + 0.4, 3.2 * nrows + 0.5)
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, k in zip(axes, ks):
        sc = scores[k] if isinstance(scores, dict) else scores
        lab = labels_by_k[k][sample]
        palette = _rgba(int(lab.max(initial=0)) + 1)           # RGBA rows: no per-point colour parsing
        ax.scatter(sc[sample, 0], sc[sample, 1], c=palette[lab], s=4, linewidths=0, alpha=0.8)
        _title(ax, f"K={k}", 9)
        ax.set_xlabel("pc1", fontsize=7)
        ax.set_ylabel("pc2", fontsize=7)
        ax.set_xticks([])                  # PCA scores have no unit worth reading; ticks were half the drawing
        ax.set_yticks([])
    for ax in axes[len(ks):]:
        ax.set_visible(False)
    note = f" ({len(sample)} of {n} tiles)" if len(sample) < n else ""
    fig.suptitle((title or "PCA of the tile features") + note, fontsize=10)
    fig.subplots_adjust(left=0.8 / fig.get_figwidth(), right=1 - 0.15 / fig.get_figwidth(),
                        bottom=0.5 / fig.get_figheight(), top=1 - 0.6 / fig.get_figheight(),
                        wspace=0.3, hspace=0.45)
    _save(fig, path)


# --------------------------------------------------------------------------- drawing in another process

PLOTS = {"lineage": plot_lineage, "pca": plot_pca, "metrics": plot_metrics}


def draw(kind: str, *args, **kwargs) -> None:
    """Draw one of ``PLOTS`` (``lineage``, ``pca``, ``metrics``) with its arguments."""
    PLOTS[kind](*args, **kwargs)


class BackgroundPlots:
    """The sweep's figures drawn in one worker process, so that the sweep goes on meanwhile.

    Why: the seven PNGs of a three-size sweep cost ~1 s of matplotlib (mostly
    Python: ticks, texts, layout), about half the feature extraction of a
    2048 px raster. Drawn in a worker process (its own interpreter: no GIL
    shared with the feature extraction, whose batches leave part of the cores
    idle) the figures of one tile size are drawn while the features of the next
    are computed, and the sweep never imports matplotlib.

    The worker is ``python -m engine.clustering.sweep_plots`` (started when the
    object is made; it imports matplotlib at once), fed pickled jobs on its
    stdin by a thread, answering on its stdout in order. Not multiprocessing:
    its ``spawn`` runs the caller's main script again in the worker, which a
    script without a ``__main__`` guard does not survive.

    ``start=False`` leaves the worker unstarted until ``start`` (or the first
    ``draw``): its start-up (~0.5 s of CPU importing matplotlib) slowed the
    feature extraction it overlapped by as much on a 2-core machine, so the
    sweep starts it when its k-means fits leave a core free.

    ``draw`` hands a figure to the worker and returns its job; ``wait`` returns
    when the jobs are drawn and raises what the drawing raised. Without a
    worker (``inline=True``, or one that cannot start or has died) the figures
    are drawn in this process, at ``draw`` or at ``wait``: the files are the
    same. ``close`` ends the worker.
    """

    def __init__(self, inline: bool = False, start: bool = True):
        self._proc = None
        self._unanswered: list = []           # jobs sent, in order, not yet answered
        self._started = inline                # (inline: nothing to start)
        if start:
            self.start()

    def start(self) -> None:
        """Start the worker process (once; nothing for an inline one or when it cannot start)."""
        if self._started:
            return
        self._started = True
        import os
        import queue
        import subprocess
        import sys
        import threading

        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "engine.clustering.sweep_plots"], cwd=root, env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        except OSError:
            self._proc = None
            return
        self._queue: "queue.Queue" = queue.Queue()
        self._feeder = threading.Thread(target=self._feed, args=(self._proc.stdin,), name="sweep-plots-feeder",
                                        daemon=True)
        self._feeder.start()

    def _feed(self, pipe) -> None:
        """Send the queued jobs to the worker (a job larger than the pipe waits for the worker, not the sweep)."""
        import pickle

        while True:
            item = self._queue.get()
            if item is None:
                break
            try:
                pickle.dump(item, pipe, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.flush()
            except (OSError, ValueError):        # the worker is gone: wait() draws what it did not answer
                break
        try:
            pipe.close()
        except OSError:
            pass

    def draw(self, kind: str, *args, **kwargs) -> dict:
        self.start()
        job = {"kind": kind, "args": args, "kwargs": kwargs, "done": self._proc is None}
        if self._proc is None:
            draw(kind, *args, **kwargs)
        else:
            self._unanswered.append(job)
            self._queue.put((kind, args, kwargs))
        return job

    def wait(self, jobs) -> None:
        import pickle

        for job in jobs:
            while not job["done"]:
                first = self._unanswered[0]
                try:
                    error = pickle.load(self._proc.stdout)
                except Exception:  # noqa: BLE001 - the worker died (killed, out of memory): the rest drawn here
                    self._stop()
                    for other in self._unanswered:
                        draw(other["kind"], *other["args"], **other["kwargs"])
                        other["done"] = True
                    self._unanswered.clear()
                    break
                self._unanswered.pop(0)
                first["done"] = True
                if error is not None:
                    raise RuntimeError(f"drawing the {first['kind']} plot failed: {error}")

    def drain(self) -> None:
        """Wait until the worker has answered every job sent (errors ignored, nothing drawn here): a stopped
        sweep removes the temporary files the figures were going to."""
        import pickle

        while self._unanswered and self._proc is not None:
            try:
                pickle.load(self._proc.stdout)
            except Exception:  # noqa: BLE001 - the worker is gone: nothing more is drawn
                self._stop()
                break
            self._unanswered.pop(0)["done"] = True
        self._unanswered.clear()

    def _stop(self) -> None:
        self._started = True                   # a closed one draws any later figure here
        proc, self._proc = self._proc, None
        if proc is None:
            return
        self._queue.put(None)                  # the feeder closes the worker's stdin: it exits
        self._feeder.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            import threading

            # reaped in the background: the worker's exit (~0.3 s of interpreter teardown) is not the sweep's
            threading.Thread(target=proc.wait, name="sweep-plots-exit", daemon=True).start()

    def close(self) -> None:
        """End the worker: it finishes the job it is drawing and exits when its input closes."""
        self._stop()


def _serve() -> None:
    """The worker's loop: a pickled (kind, args, kwargs) in, ``None`` or the error's text out, until stdin ends."""
    import os
    import pickle
    import signal
    import sys

    signal.signal(signal.SIGINT, signal.SIG_IGN)         # a Ctrl+C is the sweep's to handle
    inp = sys.stdin.buffer
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())    # a stray print cannot corrupt the answers
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401 - imported while the sweep works
    from matplotlib.figure import Figure  # noqa: F401

    while True:
        try:
            kind, args, kwargs = pickle.load(inp)
        except EOFError:
            return
        try:
            draw(kind, *args, **kwargs)
            answer = None
        except Exception as exc:  # noqa: BLE001 - reported to the sweep, which raises it
            answer = f"{type(exc).__name__}: {exc}"
        pickle.dump(answer, out)
        out.flush()


if __name__ == "__main__":
    _serve()
