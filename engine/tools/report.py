"""The ``report`` tool: one self-contained HTML file that explains a run.

``run(ReportParams(run=RUN.gpkg, out=REPORT.html))`` reads the run's manifest (RUN_manifest.json, written by
every run) and its layers, cuts example tiles from the raster the manifest names, and writes one HTML file
whose images are all embedded (``engine.analysis.report``). What goes in depends on the run:

- cluster or predict: per cluster its size, a map thumbnail, a gallery of the tiles closest to its centre
  (smallest ``clust_dist``) and of random ones, and with statistics its profile and the eta-squared table;
- sweep: the metrics table and every plot (lineage, metrics, PCA, eta-squared);
- change: the transition matrix, its heatmap and alluvial plot, and the most changed tiles before and after.

Nothing is read twice into memory: a gallery reads only its tiles (windowed reads).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract import problems as P
from ..contract.outputs import manifest_path
from ..errors import BadInput
from ..progress import Progress, committing
from . import check_params, locked_outputs, run_layers


@dataclass
class ReportParams:
    """A ``report`` run: the fields and defaults ``contract.tools.REPORT`` declares."""

    run: str
    out: str
    examples: int = 8
    seed: int = 0
    overwrite: bool = False


def read_run_manifest(run: "str | Path") -> dict:
    """RUN_manifest.json as a dict, or BadInput naming RUN (param ``run``) when it is missing or unreadable."""
    path = manifest_path(run)
    if not path.is_file():
        raise BadInput(f"RUN {str(run)!r} has no manifest next to it ({path.name}); the report needs it to know "
                       "the run's raster and tiling. Give the GeoPackage of a cluster, predict, sweep or change "
                       "run with its files.", param="run", code=P.BAD_FORMAT)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"RUN {str(run)!r}: its manifest {path.name} cannot be read ({exc}).", param="run",
                       code=P.BAD_FORMAT) from None
    if not isinstance(manifest, dict) or not manifest.get("tool"):
        raise BadInput(f"RUN {str(run)!r}: {path.name} is not a run manifest (it names no tool).", param="run",
                       code=P.BAD_FORMAT)
    return manifest


def run_tiling(manifest: dict) -> dict:
    """How the run cut its tiles (tile_size, overlap, edge, bands): a predict or change run's own tiling over
    its model's."""
    return {**manifest.get("model", {}).get("tiling", {}), **manifest.get("tiling", {})}


def open_run_raster(raster: "str | None", manifest: dict, warnings: list):
    """The run's raster cut as the run cut it, or None (with a warning) when it is gone or reads otherwise."""
    from ..raster.tiling import TiledRaster

    if not raster or not Path(raster).is_file():
        warnings.append(f"the run's raster {raster!r} is not there any more: the galleries are left out.")
        return None
    t = run_tiling(manifest)
    try:
        return TiledRaster(raster, t.get("tile_size", "64px"), t.get("overlap", "0px"), t.get("edge", "drop"),
                           t.get("bands"))
    except BadInput as exc:
        warnings.append(f"the run's raster {raster!r} cannot be cut as the run cut it ({exc}): the galleries "
                        "are left out.")
        return None


def tile_images(tiled, rows, cols) -> list[np.ndarray]:
    """uint8 (3, s, s) images of the tiles at (rows[i], cols[i]); a tile outside the grid is grey."""
    g = tiled.grid
    out = []
    for r, c in zip(np.asarray(rows, int), np.asarray(cols, int), strict=True):
        if 0 <= r < g.n_rows and 0 <= c < g.n_cols:
            out.append(tiled.read_tiles(int(r), [int(c)])[0])
        else:
            out.append(np.full((3, g.size, g.size), 128, np.uint8))
    return out


def _read_table(gpkg, layer: str):
    import pyogrio

    return pyogrio.read_dataframe(str(gpkg), layer=layer, read_geometry=False)


def _png_outputs(manifest: dict) -> list[tuple[str, Path]]:
    """Every PNG the run wrote that is still there, (key, path), in the manifest's order."""
    found = []
    outputs = dict(manifest.get("outputs", {}))
    outputs.update({f"statistics {k}": v for k, v in manifest.get("statistics", {}).get("outputs", {}).items()})
    for k in ("eta_png",):
        if manifest.get("sweep_statistics", {}).get(k):
            outputs[f"statistics {k}"] = manifest["sweep_statistics"][k]
    for key, path in outputs.items():
        if str(path).lower().endswith(".png") and Path(path).is_file():
            found.append((key, Path(path)))
    return found


def run(params: ReportParams, progress: Progress | None = None) -> dict:
    """Run the ``report`` tool; returns its manifest (outputs and timings; the HTML holds the rest).

    The declared checks, then the run's layers and manifest (BadInput naming RUN) before any work; then the
    output is locked and written under a temporary name, renamed into place when complete."""
    from ..io import OutputSet

    started = time.perf_counter()
    check_params("report", params)
    layers = run_layers(params.run)
    manifest = read_run_manifest(params.run)
    kind = str(manifest["tool"])
    if kind == "stats":            # a stats manifest written on its own: the run's tool is underneath
        kind = "cluster"
    if kind not in ("cluster", "predict", "sweep", "change") or (kind != "sweep" and "tiles" not in layers):
        raise BadInput(f"RUN {str(params.run)!r} is a {kind} run; the report explains cluster, predict, sweep and "
                       "change runs (their GeoPackage with a 'tiles' layer).", param="run", code=P.BAD_FORMAT)
    progress = progress or Progress("none")
    out = Path(params.out)
    with locked_outputs([out]), OutputSet([out], overwrite=params.overwrite) as outset:
        progress("open", 0, 1, f"reading {params.run}")
        warnings: list[str] = []
        if kind == "sweep":
            sections = _sweep_sections(manifest, progress)
        elif kind == "change":
            sections = _change_sections(params, manifest, progress, warnings)
        else:
            sections = _cluster_sections(params, manifest, layers, progress, warnings)
        for w in warnings:
            progress("warning", 1, 1, w)
        from ..analysis.report import Section, document, note

        if warnings:
            sections.insert(0, Section("Notes", "".join(note(w) for w in warnings), anchor="notes"))
        progress("write", 0, 1, str(out))
        raster = manifest.get("inputs", {}).get("raster") or manifest.get("inputs", {}).get("raster_before", "")
        subtitle = (f"{kind} run {Path(params.run).name}; raster {raster}; written "
                    f"{time.strftime('%Y-%m-%d %H:%M')} by Urban Form Mapper")
        text = document(f"Urban form report: {Path(params.run).stem}", subtitle, sections)
        tmp = outset.temp(out)
        tmp.write_text(text, encoding="utf-8")
        with committing():
            outset.commit()
        progress("write", 1, 1, f"wrote {out}")
    return {"tool": "report", "run": os.path.abspath(params.run), "kind": kind, "warnings": warnings,
            "sections": [s.title for s in sections if s.level == 2], "bytes": out.stat().st_size,
            "outputs": {"html": str(out)}, "timings_s": {"total": round(time.perf_counter() - started, 3)}}


# -- cluster and predict runs --------------------------------------------------------------------------------------
def _cluster_sections(params: ReportParams, manifest: dict, layers: list[str], progress, warnings: list) -> list:
    from ..analysis.images import data_uri, grid_thumbnail, highlight_colors, png_bytes
    from ..analysis.report import Section, gallery, gallery_picks, img, swatch, table
    from ..style import cluster_color

    tiles = _read_table(params.run, "tiles")
    if "cluster" not in tiles.columns:
        raise BadInput(f"RUN {str(params.run)!r}: its 'tiles' layer has no 'cluster' column.", param="run",
                       code=P.BAD_FORMAT)
    labels = tiles["cluster"].to_numpy()
    ids = sorted(int(k) for k in np.unique(labels))
    tiled = open_run_raster(manifest.get("inputs", {}).get("raster"), manifest, warnings)
    shape = tiled.grid.shape if tiled is not None else (int(tiles["row"].max()) + 1, int(tiles["col"].max()) + 1)
    if tiled is not None and (tiles["row"].max() >= shape[0] or tiles["col"].max() >= shape[1]):
        warnings.append("the run's raster no longer has the run's tile grid: the galleries are left out.")
        tiled.close()
        tiled = None
    sections = [_overview(manifest, tiles, ids)]
    stats = manifest.get("statistics", {})
    stats_section = None
    profile = None
    if "clusters" in layers:
        profile = _read_table(params.run, "clusters").set_index("cluster")
    if stats.get("eta_squared"):
        import pandas as pd

        eta = pd.DataFrame(stats["eta_squared"]).set_index("stat")
        eta.index.name = "statistic"
        body = "<p>Share of each statistic's variance explained by the clusters (0: none, 1: all).</p>" + table(eta)
        pngs = [p for k, p in _png_outputs(manifest) if k.startswith("statistics")]
        body += "".join(img(data_uri(p.read_bytes()), p.name, "plot") for p in pngs)
        stats_section = Section("Statistics: eta-squared and profiles", body, anchor="statistics")
    try:
        progress("gallery", 0, len(ids), f"{len(ids)} clusters, {params.examples} + {params.examples} tiles each")
        for i, k in enumerate(ids):
            members = np.flatnonzero(labels == k)
            sub = tiles.iloc[members]
            thumb = grid_thumbnail(shape, tiles["row"], tiles["col"], highlight_colors(labels, k, cluster_color(k)))
            head = (f'<div class="row"><div>{swatch(cluster_color(k))}<b>{len(members)} tiles</b> '
                    f"({len(members) / len(tiles):.1%} of {len(tiles)}); mean distance to the centre "
                    f"{float(sub['clust_dist'].mean()):.3f}</div>"
                    f"<div>{img(data_uri(png_bytes(thumb)), f'cluster {k} on the map', 'thumb')}</div>")
            if profile is not None and k in profile.index:
                cols = [c for c in profile.columns if c.endswith(("_avg", "_med"))]
                head += f"<div>{table(profile.loc[[k], cols].T.rename(columns={k: 'value'}))}</div>"
            head += "</div>"
            body = head
            if tiled is not None:
                closest, picked = gallery_picks(sub["clust_dist"].to_numpy(), params.examples,
                                                params.seed + int(k))
                for title, which in (("closest to the centre", closest), ("at random", picked)):
                    rows_ = sub["row"].to_numpy()[which]
                    cols_ = sub["col"].to_numpy()[which]
                    images = tile_images(tiled, rows_, cols_)
                    items = [(data_uri(png_bytes(a)), f"tile {int(t)}")
                             for a, t in zip(images, sub["tile_id"].to_numpy()[which], strict=True)]
                    body += f"<h4>{title}</h4>" + gallery(items)
            sections.append(Section(f"Cluster {k}", body, anchor=f"cluster-{k}"))
            progress("gallery", i + 1, len(ids))
    finally:
        if tiled is not None:
            tiled.close()
    if stats_section is not None:
        sections.append(stats_section)
    progress("plots", 1, 1)
    return sections


def _overview(manifest: dict, tiles, ids) -> "object":
    import pandas as pd

    from ..analysis.images import data_uri
    from ..analysis.report import Section, img, swatch, table
    from ..style import cluster_color

    counts = tiles["cluster"].value_counts().reindex(ids, fill_value=0)
    sizes = pd.DataFrame({"colour": [""] * len(ids), "tiles": counts.to_numpy(),
                          "share": (counts / counts.sum()).to_numpy()}, index=pd.Index(ids, name="cluster"))
    html_sizes = table(sizes)
    for k in ids:                                   # the colour column shows a swatch, not text
        html_sizes = html_sizes.replace(f"<td>{k}</td><td></td>", f"<td>{k}</td><td>{swatch(cluster_color(k))}</td>",
                                        1)
    t = run_tiling(manifest)
    model = manifest.get("model", {})
    method = manifest.get("clustering", {}).get("method") or model.get("method", "?")
    backbone = manifest.get("tiling", {}).get("backbone") or model.get("backbone", "?")
    facts = (f"<p>{len(tiles)} tiles of {t.get('tile_size', '?')} (overlap {t.get('overlap', '0px')}) in "
             f"{len(ids)} clusters; method {method}, backbone {backbone}.</p>")
    body = facts + f'<div class="row"><div>{html_sizes}</div>'
    quick = manifest.get("outputs", {}).get("quicklook")
    if quick and Path(quick).is_file():
        body += f'<div>{img(data_uri(Path(quick).read_bytes()), "the clusters over the image", "plot", 620)}</div>'
    body += "</div>"
    return Section("Overview", body, anchor="overview")


# -- sweeps ------------------------------------------------------------------------------------------------------
def _sweep_sections(manifest: dict, progress) -> list:
    import pandas as pd

    from ..analysis.images import data_uri
    from ..analysis.report import Section, img, table

    sections = []
    layers = manifest.get("layers", {})
    body = "<p>" + "; ".join(f"{layer}: K = {', '.join(map(str, ks))}" for layer, ks in layers.items()) + "</p>"
    if manifest.get("metrics"):
        metrics = pd.DataFrame(manifest["metrics"])
        cols = [c for c in manifest.get("metrics_columns", metrics.columns) if c in metrics.columns]
        body += table(metrics[cols], index=False)
    sections.append(Section("Sweep: runs and agreement metrics", body, anchor="sweep"))
    pngs = _png_outputs(manifest)
    progress("plots", 0, len(pngs))
    for i, (key, path) in enumerate(pngs):
        sections.append(Section(key.replace("_", " "), img(data_uri(path.read_bytes()), path.name, "plot"),
                                level=3))
        progress("plots", i + 1, len(pngs))
    return sections


# -- change runs ---------------------------------------------------------------------------------------------------
def _change_sections(params: ReportParams, manifest: dict, progress, warnings: list) -> list:
    """The transitions (table, heatmap, alluvial plot) and the most changed tiles, before and after."""
    import tempfile

    import pandas as pd

    from ..analysis.images import data_uri, png_bytes
    from ..analysis.report import Section, img, pair_gallery, table
    from ..raster.align import aligned_raster
    from ..raster.tiling import TiledRaster

    tiles = _read_table(params.run, "tiles")
    need = {"clust_a", "clust_b", "changed", "chg_score", "row", "col", "tile_id"}
    if not need <= set(tiles.columns):
        missing = ", ".join(sorted(need - set(tiles.columns)))
        raise BadInput(f"RUN {str(params.run)!r}: its 'tiles' layer lacks {missing} (not a change run's).",
                       param="run", code=P.BAD_FORMAT)
    c = manifest.get("change", {})
    body = (f"<p>{len(tiles)} tiles on both dates; {int(tiles['changed'].sum())} changed cluster "
            f"({tiles['changed'].mean():.1%}); median change score {tiles['chg_score'].median():.3f} (0: same "
            "features, 2: opposite).</p>")
    transitions = pd.DataFrame(c.get("transitions", []))
    if len(transitions):
        body += table(transitions.head(20), index=False)
    pngs = [p for k, p in _png_outputs(manifest) if k in ("heatmap", "alluvial")]
    body += '<div class="row">' + "".join(f"<div>{img(data_uri(p.read_bytes()), p.name, 'plot', 520)}</div>"
                                           for p in pngs) + "</div>"
    sections = [Section("Transitions between the two dates", body, anchor="transitions")]
    inputs = manifest.get("inputs", {})
    before_path = inputs.get("raster_before", {}).get("raster")
    after_path = inputs.get("raster_after", {}).get("raster")
    top = tiles.sort_values(["chg_score", "tile_id"], ascending=[False, True]).head(params.examples)
    progress("gallery", 0, len(top), f"the {len(top)} most changed tiles")
    before = open_run_raster(before_path, manifest, warnings)
    if before is None:
        return sections
    t = run_tiling(manifest)
    try:
        if not after_path or not Path(after_path).is_file():
            warnings.append(f"the second date's raster {after_path!r} is not there any more: the pairs are left out.")
            return sections
        with tempfile.TemporaryDirectory(prefix="urbanform-report-") as workdir:
            path, _ = aligned_raster(after_path, before.dataset, workdir)
            with TiledRaster(path, t.get("tile_size", "64px"), t.get("overlap", "0px"), t.get("edge", "drop"),
                             t.get("bands")) as after:
                a = tile_images(before, top["row"], top["col"])
                b = tile_images(after, top["row"], top["col"])
        items = [(data_uri(png_bytes(x)), data_uri(png_bytes(y)),
                  f"tile {int(r.tile_id)}: {int(r.clust_a)} → {int(r.clust_b)}, score {r.chg_score:.2f}")
                 for x, y, r in zip(a, b, top.itertuples(), strict=True)]
        progress("gallery", len(top), len(top))
        sections.append(Section("The most changed tiles (first date left, second right)", pair_gallery(items),
                                anchor="most-changed"))
    finally:
        before.close()
    return sections
