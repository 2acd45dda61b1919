"""Add a segment run's outputs to the project, styled, and save the styles next to the files.

A group named after the run holds the footprint outlines (``buildings`` layer of OUT.gpkg, no fill), the
building mask (OUT_mask.tif: building one semi-transparent colour; 0 and nodata 255 transparent) and, when
written, the probability raster (OUT_prob.tif, pseudocolour 0..1, unchecked). QML files next to the files
(and the outline style as the GeoPackage's default) make them open styled in any QGIS.
"""
from __future__ import annotations

from pathlib import Path

from qgis.core import (QgsColorRampShader, QgsFillSymbol, QgsPalettedRasterRenderer, QgsProject, QgsRasterLayer,
                       QgsRasterShader, QgsSingleBandPseudoColorRenderer, QgsSingleSymbolRenderer, QgsVectorLayer)
from qgis.PyQt.QtGui import QColor

from .clusters import mark_output, new_group

BUILDING_COLOR = "#e8175d"          # the mask's building pixels
MASK_OPACITY = 0.5                  # the image shows through the mask
OUTLINE_COLOR = "#ffd400"           # footprint outlines: visible on imagery and on the mask
PROBABILITY_RAMP = ("#0d0887", "#7e03a8", "#cc4778", "#f89540", "#f0f921")    # plasma, 0 -> 1


def style_mask(mask: QgsRasterLayer) -> None:
    """Building pixels (1) in one colour, semi-transparent; 0 and nodata (255) not drawn."""
    classes = [QgsPalettedRasterRenderer.Class(1, QColor(BUILDING_COLOR), "building")]
    renderer = QgsPalettedRasterRenderer(mask.dataProvider(), 1, classes)
    renderer.setOpacity(MASK_OPACITY)
    mask.setRenderer(renderer)
    mask.triggerRepaint()


def style_buildings(buildings: QgsVectorLayer) -> None:
    """Outlines only, so the image (and the mask) show through."""
    symbol = QgsFillSymbol.createSimple({"style": "no", "outline_color": OUTLINE_COLOR, "outline_width": "0.4",
                                         "outline_width_unit": "MM"})
    buildings.setRenderer(QgsSingleSymbolRenderer(symbol))
    buildings.triggerRepaint()


def style_probability(prob: QgsRasterLayer) -> None:
    """A pseudocolour ramp from 0 (no building) to 1 (building); nodata (-1) not drawn."""
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    n = len(PROBABILITY_RAMP) - 1
    ramp.setColorRampItemList([QgsColorRampShader.ColorRampItem(i / n, QColor(c), f"{i / n:g}")
                               for i, c in enumerate(PROBABILITY_RAMP)])
    shader = QgsRasterShader()
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(prob.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    prob.setRenderer(renderer)
    prob.triggerRepaint()


def add_segment_outputs(outputs: dict, name: str, project: QgsProject | None = None) -> tuple:
    """Add a segment run's layers under a group ``name`` (a re-run replaces it); returns (group, layers by key:
    'buildings', 'mask' and, when written, 'prob')."""
    project = project or QgsProject.instance()
    gpkg, mask_path = Path(outputs["gpkg"]), Path(outputs["mask"])
    layers = {"buildings": QgsVectorLayer(f"{gpkg}|layername=buildings", f"{name} buildings", "ogr"),
              "mask": QgsRasterLayer(str(mask_path), f"{name} building mask")}
    prob_path = Path(outputs["prob"]) if outputs.get("prob") else None
    if prob_path is not None and prob_path.is_file():
        layers["prob"] = QgsRasterLayer(str(prob_path), f"{name} building probability")
    for key, layer in layers.items():
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot open {layer.source()}")
    style_buildings(layers["buildings"])
    style_mask(layers["mask"])
    if "prob" in layers:
        style_probability(layers["prob"])
    save_styles(layers, gpkg)
    group = new_group(project, name)
    for key, layer in layers.items():
        mark_output(layer, key)
        project.addMapLayer(layer, False)
        group.addLayer(layer).setItemVisibilityChecked(key != "prob")     # the probability is one click away
    return group, layers


def save_styles(layers: dict, gpkg: Path) -> None:
    """OUT_buildings.qml, OUT_mask.qml, OUT_prob.qml next to the files; the outlines as the GeoPackage's default."""
    buildings = layers["buildings"]
    buildings.saveNamedStyle(str(gpkg.with_name(gpkg.stem + "_buildings.qml")))
    buildings.saveStyleToDatabase("buildings", "Urban Form Mapper building outlines", True, "")
    for key in ("mask", "prob"):
        if key in layers:
            layers[key].saveNamedStyle(str(Path(layers[key].source()).with_suffix(".qml")))
