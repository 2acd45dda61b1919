"""Cluster profiles: per-cluster summaries of the tile statistics, eta-squared, and their plots.

Column scheme of the profile (the ``clusters`` layer), chosen so that every
field name is at most 10 lowercase ASCII characters and a Shapefile export
loses nothing:

- ``cluster`` (label), ``tiles`` (tile count);
- per statistic, its short code (at most 6 characters, ``ABBREV`` below) with
  a suffix: ``<code>_avg`` mean, ``<code>_sd`` standard deviation (pandas'
  default, ddof=1; NaN for a one-tile cluster), ``<code>_med`` median and
  ``<code>_q`` the quantile-normalised mean (each tile's value replaced by its
  percentile rank among all tiles, 0-1, then averaged over the cluster: the
  value the profile plot draws). Example: ``bcount_avg``, ``borien_sd``,
  ``rdist_med``, ``pop_q``.
  Statistics without a code get the first 6 characters of their name
  (lowercased, non-alphanumerics as ``_``), made unique with a trailing digit.

NaN values (e.g. bldg_mean where a tile has no building) are left out of
every summary of that statistic.
"""
from __future__ import annotations

import re

import numpy as np

from ..style import cluster_color

ABBREV = {
    "bldg_count": "bcount", "bldg_area": "barea", "bldg_cov": "bcov", "bldg_mean": "bmean",
    "bldg_orien": "borien", "road_len": "rlen", "road_dist": "rdist", "major_dist": "mdist",
    "ndvi": "ndvi", "pop_dens": "pop",
}
SUFFIXES = {"mean": "_avg", "std": "_sd", "median": "_med", "quantile": "_q"}


def stat_codes(stats_cols) -> dict[str, str]:
    """Statistic name -> short code (unique, at most 6 characters)."""
    codes: dict[str, str] = {}
    used = set()
    for s in stats_cols:
        code = ABBREV.get(s) or re.sub(r"[^a-z0-9_]", "_", s.lower())[:6] or "stat"
        base, n = code, 1
        while code in used:
            code = f"{base[:5]}{n}" if n < 10 else f"{base[:4]}{n}"
            n += 1
        used.add(code)
        codes[s] = code
    return codes


def profile_columns(stats_cols) -> dict[str, dict[str, str]]:
    """Statistic -> {'mean': column, 'std': ..., 'median': ..., 'quantile': ...} in the profile."""
    return {s: {m: code + suf for m, suf in SUFFIXES.items()} for s, code in stat_codes(stats_cols).items()}


def _labels(tiles_df, label_col):
    lab = tiles_df[label_col]
    return lab[lab.notna()].astype(np.int64)


def cluster_profile(tiles_df, stats_cols, label_col: str = "cluster") -> "pandas.DataFrame":  # noqa: F821
    """One row per cluster: ``cluster``, ``tiles``, and mean/std/median/quantile-mean of each statistic."""
    import pandas as pd

    stats_cols = list(stats_cols)
    labels = _labels(tiles_df, label_col)
    df = tiles_df.loc[labels.index, stats_cols].astype(np.float64)
    groups = df.groupby(labels.to_numpy())
    out = pd.DataFrame({"cluster": np.asarray(sorted(labels.unique()), dtype=np.int64)})
    out["tiles"] = labels.value_counts().reindex(out["cluster"]).to_numpy().astype(np.int64)
    cols = profile_columns(stats_cols)
    ranks = df.rank(pct=True)
    rgroups = ranks.groupby(labels.to_numpy())
    for s in stats_cols:
        c = cols[s]
        out[c["mean"]] = groups[s].mean().reindex(out["cluster"]).to_numpy()
        out[c["std"]] = groups[s].std().reindex(out["cluster"]).to_numpy()
        out[c["median"]] = groups[s].median().reindex(out["cluster"]).to_numpy()
        out[c["quantile"]] = rgroups[s].mean().reindex(out["cluster"]).to_numpy()
    out.attrs["stats"] = stats_cols
    return out


def eta_table(tiles_df, stats_cols, label_col: str = "cluster") -> "pandas.DataFrame":  # noqa: F821
    """Eta-squared of each statistic against the clusters: columns stat, eta2, n (tiles with a value)."""
    import pandas as pd

    from .measures import eta_squared

    labels = _labels(tiles_df, label_col)
    rows = []
    for s in stats_cols:
        y = tiles_df.loc[labels.index, s].astype(np.float64).to_numpy()
        rows.append({"stat": s, "eta2": eta_squared(labels.to_numpy(), y), "n": int(np.isfinite(y).sum())})
    return pd.DataFrame(rows, columns=["stat", "eta2", "n"])


def _figure(width: float, height: float, dpi: int = 100, layout: str | None = None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _profile_stats(profile) -> list[tuple[str, str]]:
    """(statistic label, quantile column) in the profile's order."""
    stats = profile.attrs.get("stats")
    if stats:
        cols = profile_columns(stats)
        return [(s, cols[s]["quantile"]) for s in stats if cols[s]["quantile"] in profile.columns]
    back = {v: k for k, v in ABBREV.items()}
    return [(back.get(c[:-2], c[:-2]), c) for c in profile.columns if c.endswith("_q")]


def plot_profile(path, profile, title: str = "") -> None:
    """Cluster profile chart (PNG) of :func:`profile_figure`; the saved image holds the whole title and legend."""
    fig = profile_figure(profile, title)
    fig.savefig(str(path), format="png", bbox_inches="tight", pad_inches=0.1)


def profile_figure(profile, title: str = ""):
    """Cluster profile chart (PNG): statistics on x, quantile-normalised value on y, a line per cluster.

    As in Metzler et al.'s Accra study: each statistic is quantile-normalised
    over all tiles (percentile rank 0-1), and each cluster is drawn as the mean
    rank of its tiles, in the cluster's map colour.
    """
    stats = _profile_stats(profile)
    fig = _figure(max(6.0, 1.0 + 0.9 * len(stats)), 4.8, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(stats))
    n = len(profile)
    for i, (_, row) in enumerate(profile.iterrows()):
        c = int(row["cluster"])
        y = [row[col] for _, col in stats]
        dx = (i - (n - 1) / 2) * min(0.03, 0.3 / max(n, 1))     # clusters with equal values stay visible
        ax.plot(x + dx, y, marker="o", ms=4, lw=1.8, color=cluster_color(c),
                label=f"cluster {c} ({int(row['tiles'])} tiles)")
    ax.axhline(0.5, color="0.6", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels([s for s, _ in stats], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_xlim(-0.3, max(len(stats) - 1, 0) + 0.3)
    ax.set_ylabel("quantile-normalised mean (0-1)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    # a figure title (not the axes title, which centres on the axes and runs off the left edge when the
    # legend narrows them), wrapped to the figure's width; constrained layout keeps room for it
    fig.suptitle(_wrap_title(title or "Cluster profiles", fig, 10), fontsize=10)
    return fig


def _wrap_title(title: str, fig, fontsize: float) -> str:
    """``title`` in lines that fit the figure's width (about 0.55 em per character)."""
    import textwrap

    chars = max(20, int(fig.get_figwidth() * 72 / (0.55 * fontsize)) - 4)
    return "\n".join(textwrap.wrap(title, chars, break_long_words=True)) or title


def plot_boxes(path, tiles_df, stats_cols, label_col: str = "cluster", title: str = "") -> None:
    """Box plots of each statistic by cluster (PNG), one panel per statistic, boxes in cluster colours."""
    stats_cols = list(stats_cols)
    labels = _labels(tiles_df, label_col)
    ids = sorted(labels.unique())
    n = max(len(stats_cols), 1)
    ncols = min(3, n)
    nrows = int(np.ceil(n / ncols))
    fig = _figure(4.2 * ncols, 3.2 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, s in zip(axes, stats_cols):
        y = tiles_df.loc[labels.index, s].astype(np.float64).to_numpy()
        data = [y[(labels.to_numpy() == c) & np.isfinite(y)] for c in ids]
        pos = np.arange(1, len(ids) + 1)
        drawn = [(p, d, c) for p, d, c in zip(pos, data, ids) if len(d)]
        if drawn:
            bp = ax.boxplot([d for _, d, _ in drawn], positions=[p for p, _, _ in drawn], patch_artist=True,
                            widths=0.6, showfliers=True, flierprops={"markersize": 2})
            for patch, (_, _, c) in zip(bp["boxes"], drawn):
                patch.set_facecolor(cluster_color(c))
                patch.set_alpha(0.8)
            for med in bp["medians"]:
                med.set_color("black")
        else:
            ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes, fontsize=8)
        ax.set_xticks(pos)
        ax.set_xticklabels([str(c) for c in ids], fontsize=7)
        ax.set_xlim(0.3, len(ids) + 0.7)
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("cluster", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, axis="y")
    for ax in axes[len(stats_cols):]:
        ax.set_visible(False)
    fig.suptitle(_wrap_title(title or "Statistics by cluster", fig, 10), fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), format="png", bbox_inches="tight", pad_inches=0.1)
