"""The ``report`` tool: one self-contained HTML file that explains a run.

``run(ReportParams(run=RUN.gpkg, out=REPORT.html))`` reads the run's manifest (RUN_manifest.json, written by
every run) and its layers, cuts example tiles from the raster the manifest names, and writes one HTML file
whose images are all embedded (``engine.analysis.report``). What goes in depends on the run:

- cluster or predict: per cluster its size, a map thumbnail, a gallery of the tiles closest to its centre
  (smallest ``clust_dist``) and of random ones, and with statistics its profile and the eta-squared table;
- sweep: the metrics table and every plot (lineage, metrics, PCA, eta-squared);
- change: the transition matrix, its heatmap and alluvial plot, and the most changed tiles before and after;
- similar: the query tiles, a similarity map and the most similar tiles (a gallery in rank order);
- classify: the spatial cross-validation scores and confusion matrix (when trained), the class sizes, and per
  class a map and a gallery of its most confident tiles and of random ones.

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
from ..contract.tools import MAX_EXAMPLES
from ..progress import Progress, committing
from . import check_params, locked_outputs, run_layers

REPORTED = ("cluster", "predict", "sweep", "change", "similar", "classify")


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
    if kind not in REPORTED or (kind != "sweep" and "tiles" not in layers):
        raise BadInput(f"RUN {str(params.run)!r} is a {kind} run; the report explains {', '.join(REPORTED[:-1])} "
                       f"and {REPORTED[-1]} runs (their GeoPackage with a 'tiles' layer).", param="run",
                       code=P.BAD_FORMAT)
    progress = progress or Progress("none")
    out = Path(params.out)
    with locked_outputs([out]), OutputSet([out], overwrite=params.overwrite) as outset:
        progress("open", 0, 1, f"reading {params.run}")
        warnings: list[str] = []
        if kind == "sweep":
            sections = _sweep_sections(manifest, progress)
        elif kind == "change":
            sections = _change_sections(params, manifest, progress, warnings)
        elif kind == "similar":
            sections = _similar_sections(params, manifest, progress, warnings)
        elif kind == "classify":
            sections = _classify_sections(params, manifest, progress, warnings)
        else:
            sections = _cluster_sections(params, manifest, layers, progress, warnings)
        for w in warnings:
            progress("warning", 1, 1, w)
        from ..analysis.report import Section, document, note

        if warnings:
            sections.insert(0, Section("Notes", "".join(note(w) for w in warnings), anchor="notes"))
        progress("write", 0, 1, str(out))
        raster = manifest.get("inputs", {}).get("raster") or manifest.get("inputs", {}).get("raster_before", "") \
            or ", ".join(str(p.get("raster")) for p in manifest.get("places") or [])
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
class _Places:
    """The rasters of a cluster run over several places (``engine.tools.places``), each cut as the run cut it."""

    def __init__(self, tiled: list):
        self.tiled = tiled

    def images(self, places, rows, cols) -> list[np.ndarray]:
        return [tile_images(self.tiled[int(p)], [r], [c])[0] for p, r, c in zip(places, rows, cols, strict=True)]

    def close(self) -> None:
        for t in reversed(self.tiled):          # (each holds a GDAL environment: the last opened closes first)
            t.close()


def _places_view(tiles, manifest: dict, warnings: list):
    """(rasters or None, map shape, map rows, map cols) of a run over several places: the places' tile grids
    side by side on the map thumbnails (one empty column between), in the order of the places."""
    places = manifest["places"]
    ids = tiles["place"].to_numpy().astype(int)
    tiled = [open_run_raster(p.get("raster"), manifest, warnings) for p in places]
    heights, widths, stale = [], [], False
    for i, t in enumerate(tiled):
        mine = ids == i
        h = int(tiles["row"].to_numpy()[mine].max(initial=-1)) + 1
        w = int(tiles["col"].to_numpy()[mine].max(initial=-1)) + 1
        if t is not None and (h > t.grid.n_rows or w > t.grid.n_cols):
            stale = True
            warnings.append(f"place {places[i].get('name')!r}: its raster no longer has the run's tile grid: the "
                            "galleries are left out.")
        heights.append(max(h, t.grid.n_rows) if t is not None else h)
        widths.append(max(w, t.grid.n_cols) if t is not None else w)
    offsets = np.concatenate([[0], np.cumsum(np.asarray(widths) + 1)[:-1]])
    shape = (max(heights), int(offsets[-1] + widths[-1]))
    view = None
    if all(t is not None for t in tiled) and not stale:
        view = _Places(tiled)
    else:
        for t in reversed(tiled):
            if t is not None:
                t.close()
    warnings.append(f"a run over {len(places)} places "
                    f"({', '.join(str(p.get('name')) for p in places)}): the maps show their tile grids side by "
                    "side, left to right")
    return view, shape, tiles["row"], tiles["col"] + offsets[ids]



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
    if len(manifest.get("places") or []) > 1 and "place" in tiles.columns:      # a cluster run over places
        tiled, shape, map_rows, map_cols = _places_view(tiles, manifest, warnings)
    else:
        tiled = open_run_raster(manifest.get("inputs", {}).get("raster"), manifest, warnings)
        shape = tiled.grid.shape if tiled is not None else (int(tiles["row"].max()) + 1,
                                                            int(tiles["col"].max()) + 1)
        map_rows, map_cols = tiles["row"], tiles["col"]
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
            thumb = grid_thumbnail(shape, map_rows, map_cols, highlight_colors(labels, k, cluster_color(k)))
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
                    images = tiled.images(sub["place"].to_numpy()[which], rows_, cols_) \
                        if isinstance(tiled, _Places) else tile_images(tiled, rows_, cols_)
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


# -- similar and classify runs -------------------------------------------------------------------------------------
def _tiles_of(params: ReportParams, need: set):
    tiles = _read_table(params.run, "tiles")
    if not need <= set(tiles.columns):
        missing = ", ".join(sorted(need - set(tiles.columns)))
        raise BadInput(f"RUN {str(params.run)!r}: its 'tiles' layer lacks {missing}.", param="run",
                       code=P.BAD_FORMAT)
    return tiles


def _grid_shape(tiled, tiles) -> tuple[int, int]:
    return tiled.grid.shape if tiled is not None else (int(tiles["row"].max()) + 1, int(tiles["col"].max()) + 1)


def _tile_gallery(tiled, sub, caption) -> str:
    """A gallery of the tiles of ``sub`` (rows with row, col, tile_id), each captioned by ``caption(row)``."""
    from ..analysis.images import data_uri, png_bytes
    from ..analysis.report import gallery

    if tiled is None or not len(sub):
        return ""
    images = tile_images(tiled, sub["row"].to_numpy(), sub["col"].to_numpy())
    return gallery([(data_uri(png_bytes(a)), caption(r)) for a, r in zip(images, sub.itertuples(), strict=True)])


def _similar_sections(params: ReportParams, manifest: dict, progress, warnings: list) -> list:
    """The query tiles, the similarity map and the most similar tiles in rank order."""
    from ..analysis.images import data_uri, grid_thumbnail, png_bytes
    from ..analysis.report import Section, img

    tiles = _tiles_of(params, {"tile_id", "row", "col", "similarity", "rank", "query"})
    tiled = open_run_raster(manifest.get("inputs", {}).get("raster"), manifest, warnings)
    try:
        shape = _grid_shape(tiled, tiles)
        sim = tiles["similarity"].to_numpy(dtype=np.float64)
        lo, hi = float(np.nanmin(sim)), float(np.nanmax(sim))
        grey = np.clip((sim - lo) / max(hi - lo, 1e-12), 0, 1)
        colors = np.stack([40 + 200 * grey, 40 + 160 * grey, 120 - 80 * grey], axis=1).astype(np.uint8)
        colors[tiles["query"].to_numpy() == 1] = (220, 30, 30)
        thumb = grid_thumbnail(shape, tiles["row"], tiles["col"], colors, max_side=320)
        query = tiles[tiles["query"] == 1].sort_values("tile_id")
        top = tiles[tiles["rank"] >= 1].sort_values("rank").head(max(params.examples * 2, 1))
        s = manifest.get("similar", {})
        body = (f"<p>{len(query)} query tile(s) ({', '.join(map(str, query['tile_id'].tolist()[:20]))}); "
                f"{len(tiles)} tiles scored by the cosine of their features to the query's (-1 to 1): mean "
                f"{float(np.nanmean(sim)):.3f}, the {len(s.get('top', []))} listed in the run's top "
                f"{float(s.get('top_similarity') or np.nan):.3f} on average.</p>"
                + img(data_uri(png_bytes(thumb)), "similarity on the map (query tiles red; brighter: more "
                                                   "similar)", "thumb"))
        sections = [Section("Query and similarity", body, anchor="query")]
        progress("gallery", 0, 2, f"{len(query)} query tiles, the {len(top)} most similar")
        if tiled is not None:
            sections.append(Section("The query tiles", _tile_gallery(tiled, query.head(MAX_EXAMPLES),
                                                                     lambda r: f"tile {int(r.tile_id)}"),
                                    anchor="query-tiles", level=3))
            progress("gallery", 1, 2)
            sections.append(Section(f"The {len(top)} most similar tiles", _tile_gallery(
                tiled, top, lambda r: f"{int(r.rank)}. tile {int(r.tile_id)}: {r.similarity:.3f}"),
                anchor="most-similar"))
        progress("gallery", 2, 2)
    finally:
        if tiled is not None:
            tiled.close()
    return sections


def _classify_sections(params: ReportParams, manifest: dict, progress, warnings: list) -> list:
    """Scores (cross-validation, confusion matrix) and per class its size, map and galleries."""
    import pandas as pd

    from ..analysis.images import data_uri, grid_thumbnail, highlight_colors, png_bytes
    from ..analysis.report import Section, gallery_picks, img, swatch, table
    from ..style import cluster_color

    tiles = _tiles_of(params, {"tile_id", "row", "col", "class_id", "class", "prob"})
    c = manifest.get("classify", {})
    names = manifest.get("classes") or sorted(tiles["class"].unique())
    sizes = tiles["class_id"].value_counts().reindex(range(len(names)), fill_value=0)
    network = "the CNN with its last block fine-tuned" if c.get("finetune") else "the ImageNet CNN features"
    origin = (f", trained on {c['labels']} labelled tiles" if "labels" in c else
              f"; applied from {c['model']}" if "model" in c else "")
    body = f"<p>{len(tiles)} tiles in {len(names)} classes by {c.get('classifier', '?')} on {network}{origin}.</p>"
    body += table(pd.DataFrame({"class": names, "tiles": sizes.to_numpy(),
                                "share": (sizes / max(len(tiles), 1)).to_numpy()}), index=False)
    sections = [Section("Classes", body, anchor="classes")]
    if "accuracy" in c:
        missed = (f", {c['unpredicted']} not predicted (a fold without every class to train on)"
                  if c.get("unpredicted") else "")
        cv = (f"<p>Spatial cross-validation: {c.get('folds')} folds of {c.get('block_tiles')} x "
              f"{c.get('block_tiles')} tile blocks, no training tile within {c.get('buffer_tiles')} tile(s) of a "
              f"held-out one: accuracy <b>{c['accuracy']:.3f}</b> on {c.get('labels')} labelled tiles{missed}.</p>")
        if c.get("per_class"):
            cv += table(pd.DataFrame(c["per_class"]), index=False)
        pngs = [p for k, p in _png_outputs(manifest) if k == "confusion_png"]
        cv += "".join(img(data_uri(p.read_bytes()), p.name, "plot", 420) for p in pngs)
        sections.append(Section("Spatial cross-validation", cv, anchor="validation"))
    tiled = open_run_raster(manifest.get("inputs", {}).get("raster"), manifest, warnings)
    try:
        shape = _grid_shape(tiled, tiles)
        labels = tiles["class_id"].to_numpy()
        progress("gallery", 0, len(names), f"{len(names)} classes, {params.examples} + {params.examples} tiles each")
        for k, name in enumerate(names):
            sub = tiles[labels == k]
            thumb = grid_thumbnail(shape, tiles["row"], tiles["col"], highlight_colors(labels, k, cluster_color(k)))
            head = (f'<div class="row"><div>{swatch(cluster_color(k))}<b>{len(sub)} tiles</b> '
                    f"({len(sub) / max(len(tiles), 1):.1%}); mean probability "
                    f"{float(sub['prob'].mean()) if len(sub) else float('nan'):.3f}</div>"
                    f"<div>{img(data_uri(png_bytes(thumb)), f'class {name} on the map', 'thumb')}</div></div>")
            body = head
            if tiled is not None and len(sub):
                confident, picked = gallery_picks(1 - sub["prob"].to_numpy(), params.examples, params.seed + k)
                for title, which in (("most confident", confident), ("at random", picked)):
                    body += f"<h4>{title}</h4>" + _tile_gallery(
                        tiled, sub.iloc[which], lambda r: f"tile {int(r.tile_id)}: {r.prob:.2f}")
            sections.append(Section(f"Class {name}", body, anchor=f"class-{k}"))
            progress("gallery", k + 1, len(names))
    finally:
        if tiled is not None:
            tiled.close()
    return sections
