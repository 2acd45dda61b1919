"""Add the outputs of the analyses (change, similar, classify) to the project, styled.

A change run's tiles take the QGIS style the engine wrote next to them (``OUT_change.qml``: graduated by the
change score, changed tiles outlined); a similarity run's tiles are graduated on ``similarity``; a classification's
tiles are categorized on ``class_id`` in the engine's palette, named by their class. Each layer goes in a group
named after the run, marked as a run output.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsClassificationEqualInterval, QgsGraduatedSymbolRenderer, QgsProject, QgsStyle,
                       QgsVectorLayer)

from .clusters import cluster_values, mark_output, new_group, palette_colors, style_tiles

SIMILARITY_CLASSES = 5


def _tiles(gpkg, title: str) -> QgsVectorLayer:
    layer = QgsVectorLayer(f"{gpkg}|layername=tiles", title, "ogr")
    if not layer.isValid():
        raise RuntimeError(f"QGIS cannot open {gpkg}")
    return layer


def _add(project, name: str, layer: QgsVectorLayer, kind: str):
    mark_output(layer, kind)
    group = new_group(project, name)
    project.addMapLayer(layer, False)
    group.addLayer(layer)
    return group


def style_similarity(layer: QgsVectorLayer) -> None:
    """Graduated on ``similarity`` (equal intervals, viridis: the most similar tiles brightest)."""
    renderer = QgsGraduatedSymbolRenderer("similarity")
    renderer.setClassificationMethod(QgsClassificationEqualInterval())
    renderer.updateClasses(layer, SIMILARITY_CLASSES)
    ramp = QgsStyle.defaultStyle().colorRamp("Viridis")
    if ramp is not None:
        renderer.updateColorRamp(ramp)
    layer.setRenderer(renderer)


def class_names(layer: QgsVectorLayer) -> dict[int, str]:
    """class_id -> class name, from the tiles' ``class`` column."""
    names = {}
    if layer.fields().indexOf("class") < 0:
        return names
    for feature in layer.getFeatures():
        names.setdefault(int(feature["class_id"]), str(feature["class"]))
    return names


def add_change_outputs(outputs: dict, name: str, project: QgsProject | None = None) -> tuple:
    """The change tiles in the engine's style (``outputs['style']``); returns (group, tiles)."""
    project = project or QgsProject.instance()
    tiles = _tiles(outputs["gpkg"], f"{name} change")
    style = Path(outputs["style"])
    if style.is_file():
        tiles.loadNamedStyle(str(style))
    return _add(project, name, tiles, "change"), tiles


def add_similar_outputs(outputs: dict, name: str, project: QgsProject | None = None) -> tuple:
    project = project or QgsProject.instance()
    tiles = _tiles(outputs["gpkg"], f"{name} similarity")
    style_similarity(tiles)
    return _add(project, name, tiles, "similarity"), tiles


def add_classify_outputs(outputs: dict, name: str, project: QgsProject | None = None) -> tuple:
    project = project or QgsProject.instance()
    tiles = _tiles(outputs["gpkg"], f"{name} classes")
    style_tiles(tiles, palette_colors(cluster_values(tiles, "class_id")), field="class_id", labels=class_names(tiles))
    return _add(project, name, tiles, "classes"), tiles


ADDERS = {"change": add_change_outputs, "similar": add_similar_outputs, "classify": add_classify_outputs}
