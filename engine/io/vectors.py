"""Reading vector inputs (footprints, roads, areas, truth): checked before any work, in one place.

Every vector input of every tool goes through :func:`check_vector` (cheap: the
layer list and the layer's header, no features) and :func:`read_vector` (the
check, then the features). A file that cannot serve is a :class:`BadInput`
naming the input as the caller calls it (``name``: ``--buildings``,
``--roads``, ``--area``, ``--truth``, ``--label-area``...) and the fix:

- no such file, a folder that is no vector dataset;
- not a vector file (a text file, an empty file, a raster given as a vector);
- a damaged or truncated file (OGR cannot open or read it; a Shapefile part
  shorter than its header says, which OGR would read as features without
  geometry, silently);
- a layer name that is not there, several layers and no way to choose one;
- a table without geometry (a CSV, an attribute table);
- no CRS, unless the caller passes ``assume_crs`` (then the layer is taken to
  be in that CRS and a warning says so).

An empty layer is not an error here: the callers decide what an empty layer
means (no footprints is a statistic of 0, no truth is a score of 0...).

A source may name its layer QGIS-style: ``'file.gpkg|layername=NAME'``.
"""
from __future__ import annotations

import warnings as _warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput

VECTOR_FORMATS = "(GeoPackage, GeoJSON, Shapefile)"
POLYGONAL = ("Polygon", "MultiPolygon")
LINEAR = ("LineString", "MultiLineString", "LinearRing")
KINDS = {"polygon": (POLYGONAL, ("build",), "a polygon layer"),
         "line": (LINEAR, ("road", "street", "highway"), "a line layer")}
NO_CRS_FIX = "set one (e.g. in QGIS: Layer Properties > Source, or ogr2ogr -a_srs EPSG:XXXX)"


@dataclass(frozen=True)
class VectorInfo:
    """What :func:`check_vector` found: the file, the layer chosen (None: the file's only layer), its CRS
    (None only with ``assume_crs``), geometry type as OGR reports it, and feature count (-1: unknown)."""

    path: Path
    layer: "str | None"
    crs: "str | None"
    geometry_type: "str | None"
    features: int


def feature_count(path, name: str, what: "str | None" = None, *, kind: "str | None" = None,
                  layer: "str | None" = None) -> int:
    """How many features the vector input ``name`` has (after :func:`check_vector`), counted if need be."""
    import pyogrio

    found = check_vector(path, name, what, kind=kind, layer=layer)
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        return int(pyogrio.read_info(found.path, layer=found.layer, force_feature_count=True)["features"])


def split_source(path, layer=None) -> "tuple[Path, str | None]":
    """A QGIS-style 'file.gpkg|layername=x' source as (Path, layer); ``layer`` wins when given."""
    s = str(path)
    if "|" in s:
        s, *opts = s.split("|")
        for o in opts:
            if o.startswith("layername=") and layer is None:
                layer = o.split("=", 1)[1]
    return Path(s), layer


def _ogr_detail(exc: Exception) -> str:
    """OGR's reason in a few words: its last clause, without SQL or driver advice."""
    parts = [p.strip() for p in str(exc).replace("\n", " ").split(";") if p.strip()]
    parts = [p for p in parts if "It might help" not in p] or ["unknown error"]
    detail = parts[-1]
    if "(" in detail and "failed:" in detail:             # 'sqlite3_prepare_v2(SELECT ...) failed: why'
        detail = detail.rsplit("failed:", 1)[1].strip()
    return detail if len(detail) <= 160 else detail[:157] + "..."


def _shapefile_short(file: Path) -> "str | None":
    """Which part of a Shapefile is shorter than its header says (OGR reads a cut .shp as features
    without geometry, silently), or None. Reads three headers: cheap."""
    import struct

    if file.suffix.lower() != ".shp":
        return None
    for part in (file, file.with_suffix(".shx"), file.with_suffix(".SHX")):
        if not part.is_file():
            continue
        with open(part, "rb") as fh:
            head = fh.read(28)
        if len(head) < 28:
            return part.name
        if 2 * struct.unpack(">i", head[24:28])[0] > part.stat().st_size:        # file length in 16-bit words
            return part.name
        if part.suffix.lower() == ".shx":
            break
    for dbf in (file.with_suffix(".dbf"), file.with_suffix(".DBF")):
        if dbf.is_file():
            with open(dbf, "rb") as fh:
                head = fh.read(12)
            if len(head) < 12:
                return dbf.name
            n, header, record = struct.unpack("<IHH", head[4:12])
            if header + n * record > dbf.stat().st_size:
                return dbf.name
            break
    return None


def _is_raster(path: Path) -> bool:
    try:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path):
                return True
    except Exception:  # noqa: BLE001 - anything that does not open is not a raster
        return False


def _expected(kind: "str | None", what: "str | None") -> str:
    if what:
        return f"{what} {VECTOR_FORMATS}"
    return f"{KINDS[kind][2] if kind else 'a vector layer'} {VECTOR_FORMATS}"


def _choose_layer(file: Path, name: str, layers, kind: "str | None") -> "str | None":
    """The one layer a file without a layer name stands for, or BadInput naming the layers to choose from."""
    names = [str(n) for n in layers[:, 0]]
    if len(names) == 1:
        return None
    shaped = [(n, str(g)) for n, g in zip(names, layers[:, 1], strict=True) if g is not None]
    if len(shaped) == 1:
        return shaped[0][0]
    if kind is not None and shaped:
        want, hints, _ = KINDS[kind]
        fits = [n for n, g in shaped if g.replace(" Z", "").replace("3D ", "").replace(" M", "") in want]
        named = [n for n in fits if any(h in n.lower() for h in hints)]
        if len(fits) == 1:
            return fits[0]
        if len(named) == 1:
            return named[0]
    if not shaped:
        return None                                        # reported as "no geometry" by the caller
    raise BadInput(f"{name} {str(file)!r} has {len(names)} layers ({', '.join(names)}); "
                   f"name one as '{file}|layername=NAME'.")


def list_layers(file, name: str, want: str):
    """``pyogrio.list_layers(file)`` (an array of (layer, geometry type) rows), or BadInput in our words, never
    OGR's: ``name`` is the input's flag (``--roads``, ``RUN``), ``want`` what to give instead ("a line layer
    (GeoPackage, ...)"). Says whether the file is missing, a folder, a raster, empty, not a vector file or
    damaged. Reads the header only: cheap, call it before any work."""
    import pyogrio

    file = Path(file)
    if not file.exists():
        raise BadInput(f"{name} {str(file)!r}: no such file; give {want}.")
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            return pyogrio.list_layers(file)
    except Exception as exc:  # noqa: BLE001 - any OGR failure means "not a vector file we can read"
        if file.is_dir():
            raise BadInput(f"{name} {str(file)!r} is a folder; give {want}.") from None
        if _is_raster(file):
            raise BadInput(f"{name} {str(file)!r} is a raster, not a vector layer; give {want}.") from None
        if file.is_file() and file.stat().st_size == 0:
            raise BadInput(f"{name} {str(file)!r} is empty (0 bytes): an interrupted copy or export? "
                           f"Give {want}.") from None
        if "not recognized" in str(exc) or "not recognised" in str(exc):
            raise BadInput(f"{name} {str(file)!r} is not a vector file GDAL can read; give {want}.") from None
        raise BadInput(f"{name} {str(file)!r} cannot be read as a vector layer: it is damaged or truncated "
                       f"({_ogr_detail(exc)}); export it again, or give {want}.") from None


def check_vector(path, name: str, what: "str | None" = None, *, kind: "str | None" = None,
                 layer: "str | None" = None, assume_crs=None, warnings: "list | None" = None) -> VectorInfo:
    """Whether ``path`` can serve as the vector input ``name``, read from its header only (cheap: call it
    before any work). ``kind``: "polygon" or "line" picks the layer of a multi-layer file; ``what`` says
    what the input should be ("building footprints"); ``assume_crs``: the CRS taken for a layer without
    one (a warning says so; default: BadInput). Returns a :class:`VectorInfo`, or raises BadInput."""
    import pyogrio

    file, layer = split_source(path, layer)
    want = _expected(kind, what)
    layers = list_layers(file, name, want)
    if len(layers) == 0:
        raise BadInput(f"{name} {str(file)!r} has no vector layer; give {want}.")
    short = _shapefile_short(file)
    if short is not None:
        raise BadInput(f"{name} {str(file)!r} is damaged or truncated ({short} is shorter than its header "
                       "says); export it again, or copy all its files (.shp, .shx, .dbf, .prj) again.")
    names = [str(n) for n in layers[:, 0]]
    if layer is not None and layer not in names:
        raise BadInput(f"{name} {str(file)!r} has no layer {layer!r}; it has {', '.join(names)}.")
    if layer is None:
        layer = _choose_layer(file, name, layers, kind)
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            info = pyogrio.read_info(file, layer=layer)
    except Exception as exc:  # noqa: BLE001
        raise BadInput(f"{name} {str(file)!r} cannot be read as a vector layer: it is damaged or truncated "
                       f"({_ogr_detail(exc)}); export it again, or give {want}.") from None
    shown = f"{file}|layername={layer}" if layer is not None and len(names) > 1 else str(file)
    if info.get("geometry_type") is None:
        raise BadInput(f"{name} {shown!r} has no geometry (a table without shapes, such as a CSV); "
                       f"give {want}.")
    crs = info.get("crs")
    if crs is None:
        if assume_crs is None:
            raise BadInput(f"{name} {shown!r} has no CRS; {NO_CRS_FIX}.")
        from pyproj import CRS

        crs = CRS.from_user_input(assume_crs).to_string()
        msg = (f"{name} {shown!r} has no CRS; taken to be {crs} (the raster's). If it is another, "
               f"{NO_CRS_FIX}.")
        if warnings is None:
            _warnings.warn(msg, UserWarning, stacklevel=2)
        else:
            warnings.append(msg)
    return VectorInfo(path=file, layer=layer, crs=crs, geometry_type=info.get("geometry_type"),
                      features=int(info.get("features", -1)))


def read_vector(path, name: str, what: "str | None" = None, *, kind: "str | None" = None,
                layer: "str | None" = None, assume_crs=None, warnings: "list | None" = None,
                rows: "slice | None" = None):
    """The features of the vector input ``name`` as a GeoDataFrame with a CRS, after :func:`check_vector`
    (same arguments); BadInput when the file fails the check or its features cannot be read (damaged).
    ``rows``: only these features (in the file's order), for a partition of a large layer."""
    import geopandas as gpd

    found = check_vector(path, name, what, kind=kind, layer=layer, assume_crs=assume_crs, warnings=warnings)
    some = {} if rows is None else {"rows": rows}
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            gdf = gpd.read_file(found.path, layer=found.layer, **some) if found.layer is not None \
                else gpd.read_file(found.path, **some)
    except Exception as exc:  # noqa: BLE001 - the header was fine, so the features are damaged
        raise BadInput(f"{name} {str(found.path)!r} cannot be read to its end: it is damaged or truncated "
                       f"({_ogr_detail(exc)}); export it again.") from None
    if not isinstance(gdf, gpd.GeoDataFrame):                 # a table after all (OGR guessed otherwise)
        raise BadInput(f"{name} {str(found.path)!r} has no geometry (a table without shapes, such as a CSV); "
                       f"give {_expected(kind, what)}.")
    if gdf.crs is None:
        gdf = gdf.set_crs(found.crs, allow_override=True)
    return gdf
