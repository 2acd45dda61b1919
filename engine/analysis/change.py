"""Change between two dates of one place, on one saved model's clusters (the ``change`` tool's analysis).

Both dates are cut on one tile grid and described by the same CNN, PCA and centroids, so a tile's cluster at
each date (``clust_a``, ``clust_b``) says which urban-form type it was and became. Cluster ids alone miss change
within a type (a neighbourhood that densified but stayed "informal"), so each tile also gets a continuous score:
the distance between its two feature vectors in the model's reduced space (PCA, whitened if the model was,
L2-normalised: the space k-means worked in), from 0 (same) to 2 (opposite).

Pure functions returning named Series and DataFrames, and figures; the tool writes them.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SCORE = "chg_score"


def change_score(reduced_a: np.ndarray, reduced_b: np.ndarray) -> pd.Series:
    """Distance between each tile's two reduced feature vectors (``KMeansTiles.reduce``), named ``chg_score``."""
    a, b = np.asarray(reduced_a, dtype=np.float32), np.asarray(reduced_b, dtype=np.float32)
    return pd.Series(np.linalg.norm(a - b, axis=1), name=SCORE)


def changed(clust_a, clust_b) -> pd.Series:
    """1 where the tile moved to another cluster, else 0, named ``changed``."""
    return pd.Series((np.asarray(clust_a) != np.asarray(clust_b)).astype(np.int8), name="changed")


def transition_matrix(clust_a, clust_b, k: int) -> pd.DataFrame:
    """(k, k) tile counts: row = cluster at the first date, column = cluster at the second."""
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(clust_a, int), np.asarray(clust_b, int)), 1)
    return pd.DataFrame(counts, index=pd.Index(range(k), name="from"), columns=pd.Index(range(k), name="to"))


def transition_table(matrix: pd.DataFrame) -> pd.DataFrame:
    """The non-zero transitions as rows (from, to, tiles, share of the 'from' cluster), largest first."""
    rows = []
    totals = matrix.sum(axis=1)
    for i in matrix.index:
        for j in matrix.columns:
            n = int(matrix.loc[i, j])
            if n:
                rows.append({"from": int(i), "to": int(j), "tiles": n, "share": n / max(int(totals[i]), 1)})
    table = pd.DataFrame(rows, columns=["from", "to", "tiles", "share"])
    return table.sort_values(["tiles", "from", "to"], ascending=[False, True, True], ignore_index=True)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def heatmap_figure(matrix: pd.DataFrame, title: str = ""):
    """The transition matrix as a heatmap: colour = share of the 'from' cluster, text = tile count."""
    counts = matrix.to_numpy()
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(counts)
    fig = _figure(1.6 + 0.55 * k, 1.2 + 0.5 * k)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    ax.set_xlabel("cluster at the second date")
    ax.set_ylabel("cluster at the first date")
    ax.set_title(title or "Transitions (tiles; colour: share of the first-date cluster)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share")
    fig.tight_layout()
    return fig


def alluvial_figure(matrix: pd.DataFrame, colors, title: str = "", gap: float = 0.02):
    """An alluvial plot: the clusters of each date as stacked bars (left: first date, right: second), and a band
    from each first-date cluster to each second-date cluster as wide as the tiles that went that way."""
    counts = matrix.to_numpy().astype(float)
    k, total = len(counts), max(counts.sum(), 1.0)
    fig = _figure(7.5, 5.5)
    ax = fig.add_subplot(1, 1, 1)
    left_tot, right_tot = counts.sum(axis=1) / total, counts.sum(axis=0) / total
    shown = [i for i in range(k) if left_tot[i] > 0 or right_tot[i] > 0]
    span = 1 - gap * max(len(shown) - 1, 0)

    def starts(tot):
        pos, y = {}, 1.0
        for i in shown:
            pos[i] = y
            y -= tot[i] * span + gap
        return pos

    left, right = starts(left_tot), starts(right_tot)
    x = np.linspace(0.08, 0.92, 60)
    s = x - x[0]
    s = s / s[-1]
    s = s * s * (3 - 2 * s)                                   # smoothstep from one bar to the other
    out_used = {i: 0.0 for i in shown}
    in_used = {j: 0.0 for j in shown}
    for i in shown:
        for j in shown:
            w = counts[i, j] / total * span
            if w <= 0:
                continue
            top_l, top_r = left[i] - out_used[i], right[j] - in_used[j]
            out_used[i] += w
            in_used[j] += w
            top = top_l + (top_r - top_l) * s
            ax.fill_between(x, top - w, top, color=colors[i % len(colors)], alpha=0.45, linewidth=0)
    for pos, tot, x0 in ((left, left_tot, 0.0), (right, right_tot, 0.92)):
        for i in shown:
            h = tot[i] * span
            if h <= 0:
                continue
            ax.add_patch(_rect(x0, pos[i] - h, 0.08, h, colors[i % len(colors)]))
            ax.text(x0 + 0.04, pos[i] - h / 2, str(i), ha="center", va="center", fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(min(0.0, 1 - span - gap * len(shown)), 1.01)
    ax.set_xticks([0.04, 0.96])
    ax.set_xticklabels(["first date", "second date"])
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(title or f"Cluster transitions of {int(total)} tiles", fontsize=10)
    fig.tight_layout()
    return fig


def _rect(x, y, w, h, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, facecolor=color, edgecolor="black", linewidth=0.6)


def change_qml(max_score: float) -> str:
    """A QGIS style for the change layer: tiles graduated by ``chg_score`` from white to red (five classes up to
    ``max_score``), with a thick outline on the tiles that changed cluster."""
    top = max(float(max_score), 1e-6)
    bounds = np.linspace(0.0, top, 6)
    colours = ("#ffffff", "#fed98e", "#fe9929", "#d95f0e", "#993404")             # ColorBrewer YlOrBr
    ranges, symbols = [], []
    for i, colour in enumerate(colours):
        lo, hi = bounds[i], bounds[i + 1] if i < 4 else max(top, 2.0)
        ranges.append(f'<range lower="{lo:.6f}" upper="{hi:.6f}" symbol="{i}" label="{lo:.2f} - {hi:.2f}" '
                      'render="true"/>')
        symbols.append(
            f'<symbol type="fill" name="{i}" alpha="0.75" clip_to_extent="1" force_rhr="0"><layer class="SimpleFill" '
            f'enabled="1" locked="0" pass="0"><Option type="Map"><Option type="QString" name="color" '
            f'value="{colour}"/><Option type="QString" name="outline_color" value="90,90,90,255"/>'
            '<Option type="QString" name="outline_width" value="0.1"/><Option type="QString" name="style" '
            'value="solid"/></Option><data_defined_properties><Option type="Map"><Option type="QString" name="name" '
            'value=""/><Option name="properties" type="Map"><Option name="outlineWidth" type="Map"><Option '
            'type="bool" name="active" value="true"/><Option type="QString" name="expression" '
            'value="if(&quot;changed&quot; = 1, 0.8, 0.1)"/><Option type="int" name="type" value="3"/></Option>'
            '</Option><Option type="QString" name="type" value="collection"/></Option></data_defined_properties>'
            "</layer></symbol>")
    return ("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.22.0" styleCategories="Symbology">'
            f'<renderer-v2 type="graduatedSymbol" attr="{SCORE}" graduatedMethod="GraduatedColor" '
            'symbollevels="0" enableorderby="0" forceraster="0">'
            f"<ranges>{''.join(ranges)}</ranges><symbols>{''.join(symbols)}</symbols>"
            "</renderer-v2><blendMode>0</blendMode><featureBlendMode>0</featureBlendMode><layerOpacity>1"
            "</layerOpacity></qgis>\n")
