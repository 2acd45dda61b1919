"""Add a run's outputs to the project, styled, and save the styles next to the files.

The cluster colours come from the cluster GeoTIFF's colour table, written by
the engine (cluster i always has the same colour), so the raster, the tiles and
the quicklook agree without the plugin knowing the palette. A sweep writes no
GeoTIFF: its layers take the engine's palette from engine/style.py, read as a
plain file (importing the ``engine`` package in QGIS is not allowed).
"""
from __future__ import annotations

import importlib.util
import re
from functools import lru_cache
from pathlib import Path

from qgis.core import (QgsCategorizedSymbolRenderer, QgsFillSymbol, QgsPalettedRasterRenderer, QgsProject,
                       QgsRasterLayer, QgsRendererCategory, QgsVectorLayer)
from qgis.PyQt.QtCore import QVariant
from qgis.PyQt.QtGui import QColor

from ...engine.contract.limits import CLUSTER_NODATA
from ...engine.contract.outputs import LAYER_PREFIX, label_of_tag
from ...engine.contract.params import output_files
from ...engine.contract.tools import TOOLS
from ..paths import PLUGIN_DIR

TILE_OPACITY = 0.45      # the image shows through the tiles
RASTER_OPACITY = 0.6
OUTLINE_DARKER = 250     # tile outlines: the fill's hue, 2.5 times darker


OUTPUT_PROPERTY = "urbanform/run_output"     # custom layer property: the kind of output ('tiles', 'buildings' ...)


def mark_output(layer, kind: str) -> None:
    """Remember that ``layer`` is one of this plugin's run outputs (the footprint picker never picks them)."""
    layer.setCustomProperty(OUTPUT_PROPERTY, kind)


def is_run_output(layer) -> bool:
    """A layer a run of this plugin wrote: marked when the plugin loaded it, or a file with the engine's
    manifest next to it (OUT.gpkg and OUT_manifest.json), however it was loaded."""
    if layer is None:
        return False
    if layer.customProperty(OUTPUT_PROPERTY):
        return True
    path = layer.source().split("|")[0]
    if not path or "://" in path:
        return False
    try:
        manifest = output_files(TOOLS["cluster"], {"out": path})["manifest"]     # every tool's: OUT_manifest.json
        return Path(path).is_file() and manifest.is_file()
    except (OSError, ValueError):
        return False


def new_group(project, name: str):
    """An empty layer group ``name`` at the top of the layer tree; a re-run under the same name replaces its
    group and layers."""
    root = project.layerTreeRoot()
    existing = root.findGroup(name)
    if existing is not None:
        project.removeMapLayers([node.layerId() for node in existing.findLayers()])
        root.removeChildNode(existing)
    return root.insertGroup(0, name)


def cluster_colors(raster: QgsRasterLayer) -> dict[int, QColor]:
    """value -> colour from a paletted raster (its GDAL colour table)."""
    renderer = raster.renderer()
    if isinstance(renderer, QgsPalettedRasterRenderer):
        return {int(c.value): QColor(c.color) for c in renderer.classes() if int(c.value) != CLUSTER_NODATA}
    return {}


def style_cluster_raster(raster: QgsRasterLayer, k: int | None = None,
                         labels: dict[int, str] | None = None) -> dict[int, QColor]:
    """Paletted on the GeoTIFF's colour table; ``labels``: value -> legend text (else 'cluster V')."""
    colors = cluster_colors(raster)
    values = sorted(colors) if k is None else [v for v in sorted(colors) if v < k]
    labels = labels or {}
    classes = [QgsPalettedRasterRenderer.Class(v, colors[v], labels.get(v, f"cluster {v}")) for v in values]
    renderer = QgsPalettedRasterRenderer(raster.dataProvider(), 1, classes)
    raster.setRenderer(renderer)
    raster.renderer().setOpacity(RASTER_OPACITY)
    return {v: colors[v] for v in values}


NULL_VALUE = QVariant()


def cluster_values(layer: QgsVectorLayer, field: str = "cluster") -> list[int]:
    idx = layer.fields().indexOf(field)
    return sorted(int(v) for v in layer.uniqueValues(idx)) if idx >= 0 else []


def style_tiles(layer: QgsVectorLayer, colors: dict[int, QColor], field: str = "cluster",
                labels: dict[int, str] | None = None) -> dict[int, str]:
    """Categorized renderer on ``field``, semi-transparent fills with a dark outline of the same hue (it stays
    visible over roofs of any colour). The legend names each class by its profile when the layer has building
    statistics (``cluster_labels``), else 'cluster V'; returns value -> legend text."""
    if labels is None:
        labels = cluster_labels(layer, field) if field == "cluster" else {}
    categories, legend = [], {}
    for value in sorted(set(colors) | set(cluster_values(layer, field))):
        color = QColor(colors.get(value, QColor("#999999")))
        fill = QColor(color)
        fill.setAlphaF(TILE_OPACITY)
        symbol = QgsFillSymbol.createSimple({"color": fill.name(QColor.HexArgb),
                                             "outline_color": color.darker(OUTLINE_DARKER).name(),
                                             "outline_width": "0.3"})
        legend[value] = labels.get(value, f"cluster {value}")
        categories.append(QgsRendererCategory(value, symbol, legend[value]))
    layer.setRenderer(QgsCategorizedSymbolRenderer(field, categories))
    return legend


# building coverage (share of the tile under roofs) -> the word the legend uses, first bound that is above it
COVERAGE_WORDS = ((0.05, "open"), (0.15, "sparse"), (0.30, "medium"), (0.45, "dense"), (float("inf"), "very dense"))
PROFILE_FIELDS = ("bldg_cov", "bldg_count", "bldg_mean")


def coverage_word(coverage: float) -> str:
    return next(word for bound, word in COVERAGE_WORDS if coverage < bound)


def cluster_labels(layer: QgsVectorLayer, field: str = "cluster") -> dict[int, str]:
    """value -> '3: dense, 12 bldg/tile, 85 m²' from the means of the tiles' building statistics (coverage,
    count, mean building size) per cluster; {} when the layer has none of them."""
    import math

    names = [f for f in PROFILE_FIELDS if layer.fields().indexOf(f) >= 0]
    if layer.fields().indexOf(field) < 0 or not names:
        return {}
    from qgis.core import QgsFeatureRequest

    request = QgsFeatureRequest().setFlags(QgsFeatureRequest.NoGeometry).setSubsetOfAttributes(
        [field, *names], layer.fields())
    sums: dict[int, dict[str, list[float]]] = {}
    for feature in layer.getFeatures(request):
        value = feature[field]
        if value is None or value == NULL_VALUE:
            continue
        acc = sums.setdefault(int(value), {n: [0.0, 0] for n in names})
        for n in names:
            x = feature[n]
            try:
                x = float(x)
            except (TypeError, ValueError):
                continue
            if math.isfinite(x):
                acc[n][0] += x
                acc[n][1] += 1
    out = {}
    for value, acc in sums.items():
        mean = {n: acc[n][0] / acc[n][1] for n in names if acc[n][1]}
        words = []
        if "bldg_cov" in mean:
            words.append(coverage_word(mean["bldg_cov"]))
        if "bldg_count" in mean:
            words.append(f"{mean['bldg_count']:.0f} bldg/tile")
        if "bldg_mean" in mean:
            words.append(f"{mean['bldg_mean']:.0f} m²")
        out[value] = f"{value}: {', '.join(words)}" if words else f"cluster {value}"
    return out


def add_cluster_outputs(outputs: dict, name: str, project: QgsProject | None = None) -> tuple:
    """Add the tiles layer and the cluster raster under a group ``name``; returns (group, tiles, raster). A run
    over several places (cities) writes no cluster raster (one grid per place): the tiles only, raster None."""
    project = project or QgsProject.instance()
    gpkg = Path(outputs["gpkg"])
    tif = Path(outputs["tif"]) if outputs.get("tif") and Path(outputs["tif"]).exists() else None
    raster = QgsRasterLayer(str(tif), f"{name} clusters (raster)") if tif is not None else None
    tiles = QgsVectorLayer(f"{gpkg}|layername=tiles", f"{name} tiles", "ogr")
    if (raster is not None and not raster.isValid()) or not tiles.isValid():
        raise RuntimeError(f"QGIS cannot open {gpkg if not tiles.isValid() else tif}")
    k = _k_of_run(outputs) or (max(cluster_values(tiles), default=0) + 1)
    labels = cluster_labels(tiles)
    if raster is not None:
        colors = style_cluster_raster(raster, k, labels)
    else:
        colors = palette_colors(range(k))          # the engine's colours, as the GeoTIFF's colour table has them
    style_tiles(tiles, colors, labels=labels)
    if raster is not None:
        save_styles(tiles, raster, gpkg, tif)
        mark_output(raster, "cluster raster")
    else:
        tiles.saveNamedStyle(str(gpkg.with_name(gpkg.stem + "_tiles.qml")))
        tiles.saveStyleToDatabase("tiles", "Urban Form Mapper clusters", True, "")
    mark_output(tiles, "tiles")
    group = new_group(project, name)
    for layer in (tiles, raster):
        if layer is not None:
            project.addMapLayer(layer, False)
            group.addLayer(layer)
    # the tiles already show the clusters; the raster (same colours) is one click away
    if raster is not None:
        group.findLayer(raster.id()).setItemVisibilityChecked(False)
    return group, tiles, raster


def add_clusters_table(gpkg, name: str, group=None, project: QgsProject | None = None) -> QgsVectorLayer | None:
    """Add the run's ``clusters`` layer (one polygon per cluster: tile count, mean/std/median of each statistic)
    to ``group`` (or the top of the layer tree) as ``NAME clusters``, styled like the tiles, right below them and
    unchecked (it would hide the tiles); None when the GeoPackage has none."""
    from qgis.core import QgsProviderRegistry

    project = project or QgsProject.instance()
    if "clusters" not in {s.name() for s in QgsProviderRegistry.instance().querySublayers(str(gpkg))}:
        return None
    table = QgsVectorLayer(f"{gpkg}|layername=clusters", f"{name} clusters", "ogr")
    if not table.isValid():
        raise RuntimeError(f"QGIS cannot open the clusters layer of {gpkg}")
    mark_output(table, "clusters")
    project.addMapLayer(table, False)
    (group if group is not None else project.layerTreeRoot()).addLayer(table).setItemVisibilityChecked(False)
    arrange_clusters_layer(gpkg, project)
    return table


def _gpkg_layer(layer, gpkg: str, layer_name: str) -> bool:
    from qgis.core import QgsProviderRegistry

    parts = QgsProviderRegistry.instance().decodeUri("ogr", layer.source())
    path = parts.get("path") or layer.source().split("|")[0]
    try:
        same = Path(path).resolve() == Path(gpkg).resolve()
    except OSError:
        same = False
    return same and (parts.get("layerName") or "") == layer_name


def arrange_clusters_layer(gpkg, project: QgsProject | None = None) -> bool:
    """Where the project shows both the ``tiles`` and the ``clusters`` layer of ``gpkg``: the clusters take the
    tiles' style (same colours and legend), sit right below the tiles and are unchecked. True when done."""
    project = project or QgsProject.instance()
    layers = [layer for layer in project.mapLayers().values() if isinstance(layer, QgsVectorLayer)]
    tiles = next((layer for layer in layers if _gpkg_layer(layer, str(gpkg), "tiles")), None)
    table = next((layer for layer in layers if _gpkg_layer(layer, str(gpkg), "clusters")), None)
    if tiles is None or table is None:
        return False
    if tiles.renderer() is not None and table.fields().indexOf("cluster") >= 0:
        table.setRenderer(tiles.renderer().clone())
        table.triggerRepaint()
    root = project.layerTreeRoot()
    tiles_node, table_node = root.findLayer(tiles.id()), root.findLayer(table.id())
    if tiles_node is None or table_node is None:
        return True
    parent = tiles_node.parent()
    siblings = parent.children()
    index = siblings.index(tiles_node)
    if table_node.parent() is parent and index + 1 < len(siblings) and siblings[index + 1] is table_node:
        table_node.setItemVisibilityChecked(False)
        return True
    clone = table_node.clone()
    clone.setItemVisibilityChecked(False)
    parent.insertChildNode(index + 1, clone)              # first the copy, so the layer never leaves the tree
    table_node.parent().removeChildNode(table_node)
    return True


def _k_of_run(outputs: dict) -> int | None:
    import json

    try:
        return int(json.loads(Path(outputs["manifest"]).read_text())["clustering"]["k"])
    except (KeyError, OSError, ValueError, TypeError):
        return None


def save_styles(tiles: QgsVectorLayer, raster: QgsRasterLayer, gpkg: Path, tif: Path) -> None:
    """QML files next to the outputs, and the tiles style as the GeoPackage's default style.

    QGIS loads ``NAME_clusters.qml`` automatically with ``NAME_clusters.tif`` and
    a GeoPackage's default style with its layer, so the files open styled in
    any QGIS, with or without this plugin.
    """
    tiles.saveNamedStyle(str(gpkg.with_name(gpkg.stem + "_tiles.qml")))
    raster.saveNamedStyle(str(tif.with_suffix(".qml")))
    tiles.saveStyleToDatabase("tiles", "Urban Form Mapper clusters", True, "")


# -- sweeps -----------------------------------------------------------------------------------------
K_FIELD = re.compile(r"^k(\d+)$")


@lru_cache(maxsize=1)
def engine_palette() -> tuple[str, ...]:
    """The engine's cluster colours (engine/style.py PALETTE), loaded from the file under a private name."""
    try:
        spec = importlib.util.spec_from_file_location("_urbanform_engine_style", PLUGIN_DIR / "engine" / "style.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return tuple(module.PALETTE)
    except (OSError, AttributeError, ImportError, SyntaxError):
        return ("#999999",)


def palette_colors(values) -> dict[int, QColor]:
    palette = engine_palette()
    return {int(v): QColor(palette[int(v) % len(palette)]) for v in values}


def k_values(layer: QgsVectorLayer) -> list[int]:
    """The K of each ``k<K>`` column of a sweep layer, sorted."""
    return sorted(int(m.group(1)) for m in (K_FIELD.match(f.name()) for f in layer.fields()) if m)


def style_sweep_layer(layer: QgsVectorLayer, k: int) -> bool:
    """Categorized on ``k<K>`` in the engine's palette; False (style unchanged) when the layer has no such column."""
    field = f"k{int(k)}"
    if layer.fields().indexOf(field) < 0:
        return False
    style_tiles(layer, palette_colors(range(int(k))), field)
    layer.triggerRepaint()
    return True


def sweep_layer_names(gpkg: Path) -> list[str]:
    """The ``tiles_<size>`` layers of a sweep GeoPackage, in the order the engine wrote them."""
    from qgis.core import QgsProviderRegistry

    names = []
    for sub in QgsProviderRegistry.instance().querySublayers(str(gpkg)):
        if sub.name().startswith("tiles_"):
            names.append(sub.name())
    return sorted(names, key=_size_key)


def _size_key(name: str):
    """``tiles_2_5m`` -> (2.5, name): the engine's layer names (``contract.outputs.sweep_layer_name``)."""
    label = label_of_tag(name[len(LAYER_PREFIX):]) if name.startswith(LAYER_PREFIX) else ""
    number = re.match(r"[0-9.]+", label)
    try:
        return (float(number.group(0)) if number else float("inf"), name)
    except ValueError:
        return (float("inf"), name)


def add_sweep_outputs(gpkg, name: str, k: int | None = None, project: QgsProject | None = None) -> tuple:
    """Add every ``tiles_<size>`` layer of a sweep under a group ``name``, styled on ``k<K>``.

    ``k`` None or not in the sweep: the smallest K. Returns (group, layers, K values common to the layers).
    """
    project = project or QgsProject.instance()
    gpkg = Path(gpkg)
    layers = []
    for layer_name in sweep_layer_names(gpkg):
        layer = QgsVectorLayer(f"{gpkg}|layername={layer_name}", f"{name} {layer_name}", "ogr")
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot open the layer {layer_name} of {gpkg}")
        layers.append(layer)
    if not layers:
        raise RuntimeError(f"{gpkg} has no tiles_<size> layer")
    common = set(k_values(layers[0]))
    for layer in layers[1:]:
        common &= set(k_values(layer))
    ks = sorted(common) or k_values(layers[0])
    chosen = k if k in ks else (ks[0] if ks else None)
    for layer in layers:
        if chosen is not None:
            style_sweep_layer(layer, chosen)
    group = new_group(project, name)
    for i, layer in enumerate(layers):
        mark_output(layer, "sweep tiles")
        project.addMapLayer(layer, False)
        group.addLayer(layer).setItemVisibilityChecked(i == 0)      # one tile size at a time on the map
    return group, layers, ks
